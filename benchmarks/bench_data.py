"""The data path: convert_imageset and the Data layer.

    python benchmarks/bench_data.py [--images 400]

1. convert_imageset on generated 500x375 JPEGs resized to 256x256, images/s
   with 1 and 2 worker threads and on a local Dask cluster of 2 worker
   processes (--scheduler=local:2), next to the bare OpenCV decode + resize time
   per image (what Caffe's single-threaded tool spends per image).
2. The Data layer with CaffeNet's TRAIN transform (256x256 -> random 227 crop,
   mirror, mean image), batch 256, images/s in one thread (the prefetch thread
   alone, the way the training loop consumes it)."""
import argparse
import os
import shutil
import tempfile
import time

import cv2
import numpy as np

import pycaffe_lite as caffe
from pycaffe_lite.tools import convert_imageset


def make_jpegs(folder, n, rng):
    lines = []
    base = [rng.randint(0, 256, (375, 500, 3)).astype(np.uint8) for _ in range(8)]
    for i in range(n):
        img = cv2.GaussianBlur(base[i % 8], (0, 0), 1.5) if i < 8 else None
        path = os.path.join(folder, "%05d.jpg" % i)
        if img is not None:
            cv2.imwrite(path, img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        else:
            shutil.copy(os.path.join(folder, "%05d.jpg" % (i % 8)), path)
        lines.append("%05d.jpg %d" % (i, i % 1000))
    return lines


def bench_convert(tmp, n):
    folder = os.path.join(tmp, "jpegs")
    os.makedirs(folder)
    lines = make_jpegs(folder, n, np.random.RandomState(0))
    lst = os.path.join(tmp, "list.txt")
    with open(lst, "w") as f:
        f.write("\n".join(lines) + "\n")
    t = time.perf_counter()
    for name in lines:
        cv2.resize(cv2.imread(os.path.join(folder, name.split()[0])), (256, 256))
    opencv = n / (time.perf_counter() - t)
    rates = {}
    for workers in (1, 2):
        out = os.path.join(tmp, "db%d" % workers)
        t = time.perf_counter()
        assert convert_imageset.main(["--resize_height=256", "--resize_width=256", "--workers=%d" % workers,
                                      folder + "/", lst, out]) == 0
        rates[workers] = n / (time.perf_counter() - t)
    try:
        import distributed  # noqa: F401
        out = os.path.join(tmp, "db_dask")
        t = time.perf_counter()         # includes starting the two worker processes
        assert convert_imageset.main(["--resize_height=256", "--resize_width=256", "--scheduler=local:2",
                                      folder + "/", lst, out]) == 0
        rates["local:2"] = n / (time.perf_counter() - t)
    except ImportError:
        pass
    return opencv, rates, os.path.join(tmp, "db1")


def bench_data_layer(tmp, db, batches):
    caffe.set_random_seed(0)
    mean = np.random.RandomState(1).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    from pycaffe_lite.tools.compute_image_mean import mean_to_proto
    mean_path = os.path.join(tmp, "mean.binaryproto")
    with open(mean_path, "wb") as f:
        f.write(mean_to_proto(mean).SerializeToString())
    net_path = os.path.join(tmp, "data.prototxt")
    with open(net_path, "w") as f:
        f.write('layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN } '
                'transform_param { mirror: true crop_size: 227 mean_file: "%s" } '
                'data_param { source: "%s" batch_size: 256 backend: LMDB } }' % (mean_path, db))
    net = caffe.Net(net_path, caffe.TRAIN)
    layer = net.layers[0]
    layer.load_batch()                      # warm: page cache, buffers
    t = time.perf_counter()
    for _ in range(batches):
        layer.load_batch()
    return batches * 256 / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    try:
        opencv, rates, db = bench_convert(tmp, args.images)
        print("convert_imageset, %d JPEGs 500x375 -> 256x256:" % args.images)
        print("  OpenCV decode+resize alone, 1 core: %7.1f images/s" % opencv)
        for w, r in rates.items():
            what = "--scheduler=%s" % w if isinstance(w, str) else "%d worker thread(s)" % w
            print("  convert_imageset, %-26s %7.1f images/s (%.2fx OpenCV alone)" % (what + ":", r, r / opencv))
        rate = bench_data_layer(tmp, db, args.batches)
        print("Data layer, CaffeNet TRAIN transform (crop 227, mirror, mean), batch 256, one thread:")
        print("  %7.1f images/s" % rate)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

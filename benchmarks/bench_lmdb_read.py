"""Reading an LMDB: the Data layer's records per second (and our Reader's
alone) on 20,000 records of 3x256x256, the size of ImageNet's LMDBs' records.

    python benchmarks/bench_lmdb_read.py [--records 20000] [--db PATH] [--keep]

Writes the database once (PATH, or a temporary folder), then reads one whole
pass with data/db.Reader and one with a Data layer (batch 250, no
transform, as the prefetch thread fills batches), each best of --repeats
passes with the database in the page cache."""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def write(path, n, side=256):
    import lmdb
    from pycaffe_lite.data.datum import hwc_to_datum
    env = lmdb.open(path, map_size=1 << 40, subdir=True, sync=False)
    rng = np.random.RandomState(0)
    base = rng.randint(0, 256, (side, side, 3)).astype(np.uint8)
    txn = env.begin(write=True)
    for i in range(n):
        txn.put(b"%08d" % i, hwc_to_datum(np.roll(base, i, axis=1), i % 1000).SerializeToString())
        if i % 1000 == 999:
            txn.commit()
            txn = env.begin(write=True)
    txn.commit()
    env.sync(True)
    env.close()


def bench_reader(path, repeats):
    from pycaffe_lite.data import db
    best = None
    for _ in range(repeats):
        reader = db.Reader(path)
        n = len(reader)
        t = time.perf_counter()
        total = 0
        for _ in range(n):
            total += len(reader.next()[1])
        dt = time.perf_counter() - t
        reader.close()
        best = dt if best is None else min(best, dt)
    return n / best


def bench_data_layer(path, n, repeats, batch=250):
    import pycaffe_lite as caffe
    caffe.init_log(2)
    folder = tempfile.mkdtemp()
    net_file = os.path.join(folder, "net.prototxt")
    with open(net_file, "w") as f:
        f.write('layer { name: "d" type: "Data" top: "data" top: "label" '
                'data_param { source: "%s" batch_size: %d backend: LMDB } }' % (path, batch))
    net = caffe.Net(net_file, caffe.TEST)
    layer = net.layers[0]
    best = None
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(n // batch):
            net.forward()
        dt = time.perf_counter() - t
        best = dt if best is None else min(best, dt)
    del net, layer
    shutil.rmtree(folder)
    return (n // batch) * batch / best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--db", default="")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    path = args.db or os.path.join(tempfile.mkdtemp(prefix="bench_lmdb_"), "db")
    if not os.path.exists(os.path.join(path, "data.mdb")):
        t = time.perf_counter()
        write(path, args.records)
        print("wrote %d records of 3x256x256 in %.1f s" % (args.records, time.perf_counter() - t))
    print("Reader: %.0f records/s" % bench_reader(path, args.repeats))
    print("Data layer (batch 250): %.0f records/s" % bench_data_layer(path, args.records, args.repeats))
    if not args.keep and not args.db:
        shutil.rmtree(os.path.dirname(path))


if __name__ == "__main__":
    main()

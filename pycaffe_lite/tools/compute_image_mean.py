"""Compute the mean image of a database of Datums, as Caffe's compute_image_mean:

    python -m pycaffe_lite.tools.compute_image_mean DB [OUTPUT.binaryproto] [--backend lmdb]

Pixels are summed per element in float32 in key order, then divided by the
record count, so the result equals Caffe's to the bit."""
import argparse
import os

import numpy as np
from tqdm import tqdm

from .. import glog, protoio
from ..data import db as dbmod
from ..data.datum import decode_datum, parse_datum
from ..errors import FormatError, ShapeError
from ..proto import caffe_pb2 as pb
from ._cli import run


def mean_of_db(path, backend="lmdb", scheduler="", timeout=10):
    reader = dbmod.Reader(path, backend)
    n = len(reader)
    if not n:
        raise FormatError("%s: the database is empty; there is nothing to average" % path)
    if scheduler:
        reader.close()
        return _mean_on_cluster(path, backend, n, scheduler, timeout)
    total = None
    glog.info("Starting iteration")
    for _ in tqdm(range(n), unit="rec", disable=None, desc="compute_image_mean"):
        key, value = reader.next()
        try:
            img = decode_datum(parse_datum(value, key), key=key)
        except FormatError as e:
            raise FormatError("%s: %s" % (path, e)) from None
        if total is None:
            total = np.zeros(img.shape, np.float32)
        elif img.shape != total.shape:
            raise ShapeError("%s: record %r is %s but the first record is %s; all records must have the same "
                             "size to average them" % (path, key.decode(errors="replace"), img.shape, total.shape))
        total += img
    reader.close()
    glog.info("Processed %d files.", n)
    return total / np.float32(n)


def _mean_on_cluster(path, backend, n, scheduler, timeout):
    from ..data import cluster
    client = cluster.client_for(scheduler, timeout)
    glog.info("Summing on the Dask cluster at %s", client.scheduler.address)
    try:
        with tqdm(total=n, unit="rec", disable=None, desc="compute_image_mean") as bar:
            mean = cluster.mean_on(client, os.path.abspath(path), dbmod.backend_name(backend), n, progress=bar)
    finally:
        cluster.close(client)
    glog.info("Processed %d files.", n)
    return mean


def mean_to_proto(mean):
    c, h, w = mean.shape
    proto = pb.BlobProto(num=1, channels=c, height=h, width=w)
    proto.data.extend(mean.ravel().tolist())
    return proto


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="compute_image_mean", description=__doc__.split("\n\n")[0])
        p.add_argument("db")
        p.add_argument("output", nargs="?")
        p.add_argument("--backend", default="lmdb")
        p.add_argument("--scheduler", default="",
                       help="sum on a Dask cluster: tcp://host:8786, or local:N for N worker processes here")
        p.add_argument("--scheduler_timeout", type=float, default=10, help="seconds to wait for the scheduler")
        args = p.parse_args(a)
        mean = mean_of_db(args.db, args.backend, args.scheduler, args.scheduler_timeout)
        if args.output:
            glog.info("Write to %s", args.output)
            protoio.write_binary(args.output, mean_to_proto(mean))
        glog.info("Number of channels: %d", mean.shape[0])
        for c in range(mean.shape[0]):
            glog.info("mean_value channel [%d]: %g", c, float(mean[c].mean()))
    return run(go, argv, "compute_image_mean")


if __name__ == "__main__":
    raise SystemExit(main())

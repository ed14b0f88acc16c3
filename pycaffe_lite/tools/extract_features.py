"""Extract features of blobs into databases of Datums, as Caffe's extract_features:

    python -m pycaffe_lite.tools.extract_features WEIGHTS NET.prototxt BLOB[,BLOB...] DB[,DB...] NUM_BATCHES lmdb [CPU|GPU] [DEVICE_ID]

For every image of every batch, each blob's values become one Datum
(channels = values per image, height = width = 1, float_data), keyed by the
image's index as ten digits."""
import argparse
import os

import numpy as np
from tqdm import tqdm

from .. import backend, glog
from ..data import db as dbmod
from ..errors import ConfigError
from ..net import TEST, Net
from ..proto import caffe_pb2 as pb
from ._cli import run


def extract(weights, model, blob_names, db_names, batches, backend_name, mode="CPU", device=0):
    if len(blob_names) != len(db_names):
        raise ConfigError("give one database per blob (%d blobs, %d databases)" % (len(blob_names), len(db_names)))
    if mode.upper() == "GPU":
        backend.set_device(device)
        backend.set_mode_gpu()
    net = Net(model, TEST, weights=weights)
    for name in blob_names:
        if name not in net.blobs:
            raise ConfigError("the net has no blob named '%s' (it has %s)" % (name, ", ".join(net.blobs)))
    for path in db_names:
        if os.path.exists(path):
            raise ConfigError("%s already exists; remove it or choose another name" % path)
    writers = [dbmod.Writer(path, backend_name) for path in db_names]
    counts = [0] * len(blob_names)
    glog.info("Extracting Features")
    for _ in tqdm(range(batches), unit="batch", disable=None, desc="extract_features"):
        net.forward_from_to(0, len(net.layers) - 1)
        for k, name in enumerate(blob_names):
            values = net.blobs[name].data
            n = values.shape[0]
            flat = values.reshape(n, -1).astype(np.float32)
            for row in flat:
                datum = pb.Datum(channels=flat.shape[1], height=1, width=1)
                datum.float_data.extend(row.tolist())
                writers[k].put(b"%010d" % counts[k], datum.SerializeToString())
                counts[k] += 1
                if counts[k] % 1000 == 0:
                    glog.info("Extracted features of %d query images for feature blob %s", counts[k], name)
    for k, w in enumerate(writers):
        w.close()
        glog.info("Extracted features of %d query images for feature blob %s", counts[k], blob_names[k])
    glog.info("Successfully extracted the features!")
    return counts


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="extract_features", description=__doc__.split("\n\n")[0])
        p.add_argument("weights")
        p.add_argument("model")
        p.add_argument("blobs")
        p.add_argument("dbs")
        p.add_argument("num_batches", type=int)
        p.add_argument("db_type", choices=["lmdb", "leveldb"])
        p.add_argument("mode", nargs="?", default="CPU", choices=["CPU", "GPU", "cpu", "gpu"])
        p.add_argument("device_id", nargs="?", type=int, default=0)
        args = p.parse_args(a)
        extract(args.weights, args.model, args.blobs.split(","), args.dbs.split(","), args.num_batches,
                args.db_type, args.mode, args.device_id)
    return run(go, argv, "extract_features", alsologtostderr=False)


if __name__ == "__main__":
    raise SystemExit(main())

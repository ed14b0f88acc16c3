"""Convert a mean image between Caffe's .binaryproto and numpy's .npy
(C x H x W float, like ilsvrc_2012_mean.npy):

    python -m pycaffe_lite.tools.convert_mean imagenet_mean.binaryproto imagenet_mean.npy
    python -m pycaffe_lite.tools.convert_mean mean.npy mean.binaryproto"""
import argparse

import numpy as np

from .. import protoio
from ..data.transformer import load_mean_file
from ..errors import ConfigError, ShapeError
from ._cli import run
from .compute_image_mean import mean_to_proto


def load_mean(path):
    if path.endswith(".npy"):
        return np.load(path).astype(np.float32)
    return load_mean_file(path)


def convert(src, dst):
    mean = load_mean(src)
    if dst.endswith(".npy"):
        np.save(dst, mean)
    elif dst.endswith(".binaryproto"):
        if mean.ndim != 3:
            raise ShapeError("%s: a mean image is C x H x W, got shape %s" % (src, mean.shape))
        protoio.write_binary(dst, mean_to_proto(mean))
    else:
        raise ConfigError("%s: the output must end in .npy or .binaryproto" % dst)


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="convert_mean", description=__doc__.split("\n\n")[0])
        p.add_argument("input")
        p.add_argument("output")
        args = p.parse_args(a)
        convert(args.input, args.output)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

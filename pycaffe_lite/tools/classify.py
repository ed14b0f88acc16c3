"""Classify images with a trained net, as pycaffe's classify.py:

    python -m pycaffe_lite.tools.classify INPUT OUTPUT.npy [--model_def ...] [--pretrained_model ...]
        [--mean_file mean.npy|mean.binaryproto] [--labels_file synset_words.txt] ...

INPUT is an image, a folder of images, or a .npy of H x W x K images. The
predictions are saved as OUTPUT.npy; with --labels_file the top-5 classes of
each image are printed."""
import argparse
import glob
import os

import numpy as np

from .. import io
from ..classifier import Classifier
from ..errors import ConfigError
from ._cli import add_bool, parse, run
from .convert_mean import load_mean

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _parser():
    p = argparse.ArgumentParser(prog="classify", description=__doc__.split("\n\n")[0])
    p.add_argument("input_file")
    p.add_argument("output_file")
    p.add_argument("--model_def", default=os.path.join(ROOT, "models/bvlc_reference_caffenet/deploy.prototxt"))
    p.add_argument("--pretrained_model",
                   default=os.path.join(ROOT, "models/bvlc_reference_caffenet/bvlc_reference_caffenet.caffemodel"))
    p.add_argument("--gpu", action="store_true")
    add_bool(p, "--center_only", "one centre crop instead of 10 oversampled crops")
    p.add_argument("--images_dim", default="256,256")
    p.add_argument("--mean_file", default="", help="mean image (.npy C x H x W or .binaryproto)")
    p.add_argument("--input_scale", type=float, default=None)
    p.add_argument("--raw_scale", type=float, default=255.0)
    p.add_argument("--channel_swap", default="2,1,0", help="RGB -> BGR by default")
    p.add_argument("--ext", default="jpg", help="image extension when INPUT is a folder")
    p.add_argument("--labels_file", default="", help="synset words, one class per line, for the top-5 print")
    return p


def classify(args):
    if args.gpu:
        from .. import backend
        backend.set_mode_gpu()
    image_dims = [int(s) for s in args.images_dim.split(",")]
    mean = None
    if args.mean_file:
        mean = load_mean(args.mean_file)
        if mean.ndim == 3:
            mean = mean.mean(axis=(1, 2))     # per channel, so it fits any crop
    swap = [int(s) for s in args.channel_swap.split(",")] if args.channel_swap else None
    net = Classifier(args.model_def, args.pretrained_model, image_dims=image_dims, mean=mean,
                     input_scale=args.input_scale, raw_scale=args.raw_scale, channel_swap=swap)
    path = os.path.expanduser(args.input_file)
    if path.endswith(".npy"):
        inputs, names = list(np.load(path)), None
    elif os.path.isdir(path):
        names = sorted(glob.glob(os.path.join(path, "*." + args.ext)))
        if not names:
            raise ConfigError("no *.%s images in %s" % (args.ext, path))
        inputs = [io.load_image(f) for f in names]
    else:
        names = [path]
        inputs = [io.load_image(path)]
    predictions = net.predict(inputs, not args.center_only)
    np.save(args.output_file, predictions)
    print("Saved %d predictions to %s" % (len(predictions), args.output_file))
    if args.labels_file:
        with open(args.labels_file) as f:
            labels = [line.strip() for line in f if line.strip()]
        for i, p in enumerate(predictions):
            title = names[i] if names else "input %d" % i
            print(title)
            for k in np.argsort(-p)[:5]:
                label = labels[k] if k < len(labels) else str(k)
                print("  %.4f  %s" % (p[k], label))


def main(argv=None):
    return run(lambda a: classify(parse(_parser(), a)), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Write the list files the ImageNet recipe downloads as aux data:

    python -m pycaffe_lite.tools.make_imagenet_lists --train_dir train/ [--val_dir val/
        --val_ground_truth gt.txt] --out_dir data/ilsvrc12

From train/<synset>/*.JPEG: synsets.txt (synsets sorted in ASCII order; the
label of a synset is its line number from 0) and train.txt ('synset/file label').
With a val folder: val.txt ('file label'); the ground truth file has either
'file synset' lines, or one synset per line for the val files in sorted order."""
import argparse
import os

from ..errors import ConfigError, FormatError
from ._cli import run

IMAGE_EXTS = (".jpeg", ".jpg", ".png", ".bmp")


def _images(folder):
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTS))


def make_lists(train_dir, out_dir, val_dir=None, ground_truth=None):
    if not os.path.isdir(train_dir):
        raise ConfigError("%s: no such train folder" % train_dir)
    synsets = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
    if not synsets:
        raise ConfigError("%s holds no class folders (expected train/<synset>/*.JPEG)" % train_dir)
    label = {s: i for i, s in enumerate(synsets)}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "synsets.txt"), "w") as f:
        f.write("".join(s + "\n" for s in synsets))
    n = 0
    with open(os.path.join(out_dir, "train.txt"), "w") as f:
        for s in synsets:
            for name in _images(os.path.join(train_dir, s)):
                f.write("%s/%s %d\n" % (s, name, label[s]))
                n += 1
    if val_dir:
        if not ground_truth:
            raise ConfigError("a val folder needs --val_ground_truth")
        files = _images(val_dir)
        with open(ground_truth) as f:
            rows = [line.split() for line in f if line.strip()]
        if all(len(r) == 2 for r in rows):
            truth = dict(rows)
        elif all(len(r) == 1 for r in rows) and len(rows) == len(files):
            truth = {name: r[0] for name, r in zip(files, rows)}
        else:
            raise FormatError("%s: expected 'file synset' lines, or one synset per val image (%d)"
                              % (ground_truth, len(files)))
        with open(os.path.join(out_dir, "val.txt"), "w") as f:
            for name in files:
                if name not in truth:
                    raise FormatError("%s: no ground truth for %s" % (ground_truth, name))
                if truth[name] not in label:
                    raise FormatError("%s: %s belongs to synset %s, which has no train folder"
                                      % (ground_truth, name, truth[name]))
                f.write("%s %d\n" % (name, label[truth[name]]))
    return synsets, n


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="make_imagenet_lists", description=__doc__.split("\n\n")[0])
        p.add_argument("--train_dir", required=True)
        p.add_argument("--val_dir")
        p.add_argument("--val_ground_truth")
        p.add_argument("--out_dir", required=True)
        args = p.parse_args(a)
        synsets, n = make_lists(args.train_dir, args.out_dir, args.val_dir, args.val_ground_truth)
        print("%d synsets, %d training images" % (len(synsets), n))
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""One training iteration of the detection brew's SSD (brew_demo --detection),
split into its phases: data (the AnnotatedData layer making a batch, with its
samplers, distortion, mirror and resize: the work its prefetch thread does),
forward (every other layer, MultiBoxLoss's matching and mining included),
backward, and the SGD update.

    python benchmarks/bench_ssd_train_phases.py [--iters 30]

Builds the brew's images and LMDB in a temporary folder first."""
import argparse
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from measure import timed  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args()
    import pycaffe_lite as caffe
    from pycaffe_lite.tools import brew_detection as bd, convert_annoset, create_label_map
    caffe.init_log(2)
    work = tempfile.mkdtemp(prefix="ssd_phases_")
    os.chdir(work)
    bd.write_set("data", 400, 40)
    create_label_map.main(["--include_background=true", "data/labels.txt", "data/labelmap.prototxt"])
    common = ["--anno_type=detection", "--label_type=xml", "--label_map_file=data/labelmap.prototxt", "--encoded",
              "--encode_type=jpg", "data/"]
    convert_annoset.main(common + ["data/train.txt", "train_lmdb"])
    convert_annoset.main(common + ["data/val.txt", "val_lmdb"])
    train, test, _ = bd.nets("train_lmdb", "val_lmdb", "data/labelmap.prototxt", 16, 40)
    with open("train.prototxt", "w") as f:
        f.write(str(train))
    with open("solver.prototxt", "w") as f:
        f.write('train_net: "train.prototxt"\nbase_lr: 0.004\nlr_policy: "fixed"\nmomentum: 0.9\n'
                'weight_decay: 0.0005\nmax_iter: 100000\nsnapshot_prefix: "s"\nrandom_seed: 1\n')
    solver = caffe.get_solver("solver.prototxt")
    net = solver.net
    solver.step(3)
    data_layer = net.layers[0]
    last = len(net.layers) - 1
    phases = [("data (AnnotatedData batch, batch 16)", data_layer.load_batch),
              ("forward (all other layers)", lambda: net.forward_from_to(1, last)),
              ("backward", lambda: net.backward_from_to(last, 0)),
              ("update (SGD, momentum)", solver.apply_update)]
    print("one training iteration of the brew's SSD (64x64, 3 sources, 672 priors), ms best / median of %d:"
          % args.iters)
    total = 0.0
    for name, fn in phases:
        best, median = timed(fn, args.iters)
        total += median
        print("  %-40s %7.2f / %7.2f" % (name, best, median))
    print("  %-40s %7.2f (sum of medians)" % ("iteration", total))


if __name__ == "__main__":
    main()

"""The whole "Brewing ImageNet" recipe on this machine, in a few minutes, on
real images that come with the install (scikit-learn's handwritten digits,
written out in ImageNet's folder layout):

    python -m pycaffe_lite.tools.brew_demo WORKDIR

Each step prints the command a user would type, runs it, and the demo ends
with a summary and three pictures in WORKDIR: training_curve.png, net.png
(or net.dot without Graphviz) and predictions.png. Logs of every tool are in
WORKDIR/logs. Ctrl-C stops it cleanly: nothing half-written is left."""
import argparse
import contextlib
import logging
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import numpy as np

from .. import glog
from ..errors import ConfigError
from ._cli import run

NET = '''name: "DigitNet"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 32 mirror: false mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/train_lmdb" batch_size: 50 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 32 mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/val_lmdb" batch_size: 59 backend: LMDB } }
%s
layer { name: "accuracy" type: "Accuracy" bottom: "fc3" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc3" bottom: "label" top: "loss" }
'''

# CaffeNet's shape at digit size: conv, ReLU, MAX pool, LRN, grouped conv,
# ReLU, pool, a fully connected layer with dropout, the classifier.
TRUNK = '''layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 16 kernel_size: 5 weight_filler { type: "gaussian" std: 0.05 }
                      bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 32 pad: 2 kernel_size: 5 group: 2 weight_filler { type: "gaussian" std: 0.05 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu3" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc3" type: "InnerProduct" bottom: "fc1" top: "fc3"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0 } } }
'''

DEPLOY = '''name: "DigitNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 32 dim: 32 } } }
%s
layer { name: "prob" type: "Softmax" bottom: "fc3" top: "prob" }
''' % TRUNK

SOLVER = '''net: "models/digits/train_val.prototxt"
test_iter: 5
test_interval: %(test_interval)d
base_lr: 0.02
lr_policy: "step"
gamma: 0.1
stepsize: %(stepsize)d
display: 10
max_iter: %(max_iter)d
momentum: 0.9
weight_decay: 0.0005
snapshot: %(snapshot)d
snapshot_prefix: "models/digits/digits_train"
solver_mode: CPU
random_seed: 1
'''

VAL_IMAGES = 295        # the test net's 5 batches of 59 cover the validation set once


def write_digit_images(root):
    """train/<synset>/*.png and val/*.png (with a ground-truth file) from the
    digits scikit-learn ships, upscaled to 36x36 colour. The synset names sort
    in the opposite order of the digits, as ImageNet's do not follow any."""
    import cv2
    from sklearn.datasets import load_digits
    digits = load_digits()
    synsets = ["n%08d" % (90 - d) for d in range(10)]
    order = np.random.RandomState(0).permutation(len(digits.images))
    val_ids = set(order[:VAL_IMAGES].tolist())
    truth = []
    os.makedirs(os.path.join(root, "val"), exist_ok=True)
    for i, (img, target) in enumerate(zip(digits.images, digits.target)):
        big = cv2.resize((img * 255.0 / 16).astype(np.uint8), (36, 36), interpolation=cv2.INTER_LINEAR)
        colour = np.repeat(big[:, :, None], 3, axis=2)
        if i in val_ids:
            name = "val_%05d.png" % i
            cv2.imwrite(os.path.join(root, "val", name), colour)
            truth.append("%s %s" % (name, synsets[target]))
        else:
            folder = os.path.join(root, "train", synsets[target])
            os.makedirs(folder, exist_ok=True)
            cv2.imwrite(os.path.join(folder, "%s_%05d.png" % (synsets[target], i)), colour)
    with open(os.path.join(root, "val_ground_truth.txt"), "w") as f:
        f.write("\n".join(truth) + "\n")
    return synsets


def write_synset_words(synsets, path):
    """synset_words.txt as ImageNet's recipe has it: one line per class in
    label order (sorted synsets), 'wnid words', here the digit each synset
    stands for. Returns {wnid: digit}."""
    digit_of = {s: str(d) for d, s in enumerate(synsets)}
    with open(path, "w") as f:
        f.write("".join("%s %s\n" % (s, digit_of[s]) for s in sorted(synsets)))
    return digit_of


def prediction_titles(predictions, labels, words):
    """(title, right) per image: what the predicted class means (the digit,
    from synset_words.txt) with its synset beside it, and for a wrong one
    the true digit too."""
    out = []
    for pred, true in zip(predictions, labels):
        wnid, word = words[pred][0], words[pred][1].strip()
        title = "%s (%s)" % (word, wnid)
        if pred != true:
            title += "\ntrue %s (%s)" % (words[true][1].strip(), words[true][0])
        out.append((title, pred == true))
    return out


class Demo:
    def __init__(self, workdir, iterations):
        self.workdir = os.path.abspath(workdir)
        self.iterations = iterations
        self.timings = []
        self.interactive = sys.stderr.isatty()

    # -- presentation ---------------------------------------------------------
    def say(self, text=""):
        print(text, flush=True)

    def command(self, argv):
        self.say("  $ " + " ".join(shlex.quote(a) for a in argv))

    @contextlib.contextmanager
    def step(self, title):
        self.say("\n== " + title)
        start = time.time()
        yield
        self.timings.append((title, time.time() - start))

    @contextlib.contextmanager
    def glog_to(self, name):
        """The tools' glog lines go to logs/NAME, not between the progress bars."""
        path = os.path.join(self.workdir, "logs", name)
        handler = logging.FileHandler(path)
        handler.setFormatter(glog.GlogFormatter())
        saved = glog.logger.handlers[:]
        glog.logger.handlers[:] = [handler]
        try:
            yield path
        finally:
            glog.logger.handlers[:] = saved
            handler.close()

    def tool(self, module, args, log):
        """Run a tool in this process, as `python -m pycaffe_lite.tools.MODULE ARGS`."""
        self.command([sys.executable.rsplit("/", 1)[-1], "-m", "pycaffe_lite.tools." + module] + args)
        with self.glog_to(log):
            code = module_main(module)(args)
        if code == 130:            # the tool caught Ctrl-C and cleaned up after itself
            raise KeyboardInterrupt
        if code:
            raise ConfigError("%s failed (exit %d); see %s" % (module, code, os.path.join("logs", log)))

    # -- the recipe -----------------------------------------------------------
    def run(self):
        os.chdir(self.workdir)
        os.makedirs("logs", exist_ok=True)
        with self.step("1. images in ImageNet's folder layout, the file lists, and LMDBs"):
            synsets = write_digit_images("images")
            self.say("  wrote %d training images in images/train/<synset>/ and %d in images/val/ "
                     "(scikit-learn's handwritten digits)" % (1797 - VAL_IMAGES, VAL_IMAGES))
            self.tool("make_imagenet_lists", ["--train_dir", "images/train", "--val_dir", "images/val",
                                              "--val_ground_truth", "images/val_ground_truth.txt",
                                              "--out_dir", "data/digits"], "make_imagenet_lists.log")
            write_synset_words(synsets, "data/digits/synset_words.txt")
            self.say("  data/digits/synsets.txt: the synsets in ASCII order, so label 0 is %s (the digit 9); "
                     "data/digits/synset_words.txt says what each means" % sorted(synsets)[0])
            os.makedirs("examples/digits", exist_ok=True)
            self.tool("convert_imageset", ["--shuffle", "--seed=3", "images/train/", "data/digits/train.txt",
                                           "examples/digits/train_lmdb"], "convert_train.log")
            self.tool("convert_imageset", ["images/val/", "data/digits/val.txt", "examples/digits/val_lmdb"],
                      "convert_val.log")
        with self.step("2. the mean image"):
            self.tool("compute_image_mean", ["examples/digits/train_lmdb", "data/digits/mean.binaryproto"],
                      "compute_image_mean.log")
        with self.step("3. the net: a CaffeNet-shaped train_val.prototxt with TRAIN and TEST data layers"):
            os.makedirs("models/digits", exist_ok=True)
            half = self.iterations // 2
            with open("models/digits/train_val.prototxt", "w") as f:
                f.write(NET % TRUNK)
            with open("models/digits/deploy.prototxt", "w") as f:
                f.write(DEPLOY)
            fields = dict(test_interval=max(10, half // 3), stepsize=int(self.iterations * 0.8),
                          max_iter=self.iterations, snapshot=half)
            with open("models/digits/solver.prototxt", "w") as f:
                f.write(SOLVER % fields)
            with open("models/digits/solver_first_half.prototxt", "w") as f:
                f.write(SOLVER % dict(fields, max_iter=half))
            self.say("  wrote models/digits/train_val.prototxt, deploy.prototxt, solver.prototxt "
                     "(and solver_first_half.prototxt: the same, stopping at iteration %d)" % half)
        with self.step("4. train (the first half)"):
            self.train(["--solver=models/digits/solver_first_half.prototxt"], "train.log", 0, half)
        with self.step("5. resume from the middle snapshot and finish"):
            state = "models/digits/digits_train_iter_%d.solverstate" % half
            self.train(["--solver=models/digits/solver.prototxt", "--snapshot=" + state], "resume.log", half,
                       self.iterations)
        with self.step("6. time the net, layer by layer"):
            argv = ["time", "--model=models/digits/deploy.prototxt", "--iterations=5"]
            self.command(["python", "-m", "pycaffe_lite.tools.caffe"] + argv)
            with self.glog_to("time.log") as path:
                module_main("caffe")(argv)
            self.say("  " + "\n  ".join(l.split("] ", 1)[-1].rstrip() for l in open(path) if "Average" in l and "pass" in l))
        with self.step("7. classify validation images from Python (caffe.Classifier)"):
            accuracy = self.classify(synsets)
        with self.step("pictures"):
            self.pictures()
        return accuracy

    def train(self, args, log, start, stop):
        """`caffe train` as a user runs it, its glog lines in logs/LOG, with a
        progress bar here that follows the log from iteration start to stop."""
        argv = [sys.executable, "-m", "pycaffe_lite.tools.caffe", "train"] + args
        self.command(["python", "-m", "pycaffe_lite.tools.caffe", "train"] + args)
        path = os.path.join("logs", log)
        bar = None
        if self.interactive:
            from tqdm import tqdm
            bar = tqdm(total=stop, initial=start, unit="iter", desc="training", leave=False)
        with open(path, "w") as out:
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=out)
            try:
                self._follow(proc, path, bar)
            except KeyboardInterrupt:
                # Let the run take its snapshot before we go (Caffe's SIGINT: stop).
                proc.send_signal(signal.SIGINT)
                proc.wait()
                raise
            finally:
                if bar is not None:
                    bar.close()
        if proc.returncode:
            raise ConfigError("caffe train failed (exit %d); see %s" % (proc.returncode, path))
        from .parse_log import parse
        train, test, _, _ = parse(path)
        if test and "accuracy" in test[-1]:
            self.say("  iteration %d: test accuracy %.3f, test loss %.3f" % (
                test[-1]["NumIters"], test[-1].get("accuracy", float("nan")), test[-1].get("loss", float("nan"))))

    @staticmethod
    def _follow(proc, path, bar):
        import re
        seen = 0
        while proc.poll() is None:
            time.sleep(0.2)
            if bar is None:
                continue
            with open(path) as f:
                f.seek(seen)
                chunk = f.read()
            cut = chunk.rfind("\n") + 1
            seen += cut
            for line in chunk[:cut].splitlines():
                m = re.search(r"Iteration (\d+) \(.*loss = ([-0-9.e+naif]+)", line)
                if m:
                    bar.n = int(m.group(1))
                    bar.set_postfix(loss=m.group(2), refresh=True)
                elif "Testing net" in line:
                    bar.set_description("testing")
                elif "Test net output" in line:
                    bar.set_description("training")

    def classify(self, synsets):
        from .. import Classifier, io
        from .convert_mean import load_mean
        mean = load_mean("data/digits/mean.binaryproto")[:, 2:34, 2:34]     # the TEST phase's centre crop
        weights = "models/digits/digits_train_iter_%d.caffemodel" % self.iterations
        code = ("net = caffe.Classifier('models/digits/deploy.prototxt', '%s', image_dims=(36, 36), mean=mean, "
                "raw_scale=255, input_scale=0.0078125, channel_swap=(2, 1, 0))" % weights)
        self.say("  >>> " + code)
        self.say("  >>> net.predict([caffe.io.load_image(path) for path in val_images], oversample=False)")
        net = Classifier("models/digits/deploy.prototxt", weights, image_dims=(36, 36), mean=mean, raw_scale=255,
                         input_scale=0.0078125, channel_swap=(2, 1, 0))
        val = [line.split() for line in open("data/digits/val.txt")]
        images = [io.load_image(os.path.join("images/val", name)) for name, _ in val]
        predictions = net.predict(images, oversample=False).argmax(axis=1)
        labels = np.array([int(label) for _, label in val])
        words = [line.split(None, 1) for line in open("data/digits/synset_words.txt")]
        self.sheet = (images[:24], predictions[:24], labels[:24], words, [name for name, _ in val[:24]])
        # classify.py's way: the top classes of one image, named by synset_words.txt
        argv = [os.path.join("images/val", val[0][0]), "logs/classify.npy", "--model_def=models/digits/deploy.prototxt",
                "--pretrained_model=" + weights, "--images_dim=36,36", "--mean_file=data/digits/mean.binaryproto",
                "--input_scale=0.0078125", "--center_only", "--labels_file=data/digits/synset_words.txt"]
        self.command(["python", "-m", "pycaffe_lite.tools.classify"] + argv)
        import io as _io
        printed = _io.StringIO()
        with contextlib.redirect_stdout(printed):
            module_main("classify")(argv)
        self.say("  " + "\n  ".join(printed.getvalue().splitlines()[1:5]))
        accuracy = float(np.mean(predictions == labels))
        self.say("  %d of %d validation images right (%.1f%%)" % (int(np.sum(predictions == labels)), len(val),
                                                                  100 * accuracy))
        return accuracy

    def pictures(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            self.say("  matplotlib is missing, so no pictures: pip install matplotlib")
            return
        from .parse_log import parse
        train, test = [], []
        for log in ("logs/train.log", "logs/resume.log"):
            tr, te, _, _ = parse(log)
            train += [r for r in tr if not train or r["NumIters"] > train[-1]["NumIters"]]
            test += [r for r in te if not test or r["NumIters"] > test[-1]["NumIters"]]
        fig, left = plt.subplots(figsize=(8, 4.5))
        left.plot([r["NumIters"] for r in train], [r["loss"] for r in train], color="tab:blue", label="train loss")
        tested = [r for r in test if "loss" in r]
        left.plot([r["NumIters"] for r in tested], [r["loss"] for r in tested], "o-", color="tab:orange",
                  label="test loss")
        left.set_xlabel("iteration")
        left.set_ylabel("loss")
        right = left.twinx()
        right.plot([r["NumIters"] for r in test], [r["accuracy"] for r in test], "s-", color="tab:green",
                   label="test accuracy")
        right.set_ylabel("test accuracy")
        right.set_ylim(0, 1)
        lines = left.get_lines() + right.get_lines()
        left.legend(lines, [l.get_label() for l in lines], loc="center right")
        left.set_title("DigitNet training (resumed at iteration %d)" % (self.iterations // 2))
        fig.tight_layout()
        fig.savefig("training_curve.png", dpi=100)
        plt.close(fig)
        self.say("  training_curve.png: losses and accuracy from the logs (tools/parse_log)")

        from .. import TRAIN, draw, protoio
        net = protoio.read_net_text("models/digits/train_val.prototxt")
        try:
            draw.draw_net_to_file(net, "net.png", "LR", phase=TRAIN)
            self.say("  net.png: the net as caffe.draw draws it")
        except ConfigError:
            draw.draw_net_to_file(net, "net.dot", "LR", phase=TRAIN)
            self.say("  net.dot: the net's graph (Graphviz is not installed; apt-get install graphviz, then "
                     "dot -Tpng net.dot -o net.png)")

        images, predictions, labels, words, names = self.sheet
        titles = prediction_titles(predictions, labels, words)
        fig, axes = plt.subplots(4, 6, figsize=(9, 7))
        for ax, img, (title, right) in zip(axes.ravel(), images, titles):
            ax.imshow(img)
            ax.set_title(title, fontsize=9, color="tab:green" if right else "tab:red")
            ax.axis("off")
        fig.suptitle("caffe.Classifier on validation digits: the digit predicted (its synset); "
                     "wrong ones in red, with the true digit")
        fig.tight_layout()
        fig.savefig("predictions.png", dpi=100)
        plt.close(fig)
        with open("predictions.json", "w") as f:
            json.dump([{"image": n, "title": t, "right": bool(r)} for n, (t, r) in zip(names, titles)], f, indent=1)
        self.say("  predictions.png: validation images titled with the digit predicted and its synset "
                 "(their titles also in predictions.json)")

    def summary(self, accuracy):
        self.say("\n== summary")
        self.say("  validation accuracy: %.1f%% (caffe.Classifier, %d images)" % (100 * accuracy, VAL_IMAGES))
        self.say("  LMDBs: %s/examples/digits/{train,val}_lmdb; mean: %s/data/digits/mean.binaryproto"
                 % (self.workdir, self.workdir))
        self.say("  snapshots: %s/models/digits/digits_train_iter_{%d,%d}.{caffemodel,solverstate}"
                 % (self.workdir, self.iterations // 2, self.iterations))
        self.say("  pictures: training_curve.png, predictions.png, net.png (or net.dot); logs: logs/")
        for title, seconds in self.timings:
            self.say("  %6.1f s  %s" % (seconds, title))
        self.say("  %6.1f s  in all" % sum(s for _, s in self.timings))


def module_main(name):
    import importlib
    return importlib.import_module("pycaffe_lite.tools." + name).main


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="brew_demo", description=__doc__.split("\n\n")[0])
        p.add_argument("workdir", help="a new (or empty) folder; everything the demo makes goes there")
        p.add_argument("--iterations", type=int, default=None,
                       help="training iterations (default 300, or 600 with --detection; the test runs fewer)")
        p.add_argument("--detection", action="store_true",
                       help="SSD's recipe instead: shapes with VOC XML boxes, convert_annoset, a small SSD from "
                            "caffe.model_libs trained with mAP test lines, and detections.png")
        args = p.parse_args(a)
        if args.iterations is None:
            args.iterations = 600 if args.detection else 300
        if args.iterations < 20:
            raise ConfigError("--iterations must be at least 20")
        if os.path.exists(args.workdir) and os.listdir(args.workdir):
            raise ConfigError("%s already holds files (a demo ran there?); give a new folder, or remove it first"
                              % args.workdir)
        os.makedirs(args.workdir, exist_ok=True)
        if args.detection:
            from .brew_detection import make_demo_class
            demo = make_demo_class(Demo)(args.workdir, args.iterations)
        else:
            demo = Demo(args.workdir, args.iterations)
        here = os.getcwd()
        try:
            accuracy = demo.run()
        except KeyboardInterrupt:
            print("\ninterrupted: the databases and snapshots that exist are complete (they are written under "
                  "temporary names and renamed)", file=sys.stderr)
            return 130
        finally:
            os.chdir(here)
        demo.summary(accuracy)
        return 0
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

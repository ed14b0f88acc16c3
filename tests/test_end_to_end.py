"""The Brewing-ImageNet recipe end to end on real data small enough for CI:
scikit-learn's bundled handwritten digits, written out as image files in the
ImageNet folder layout. Lists, LMDBs, mean, training with the caffe command,
a Ctrl-C stop, resume, and classification from Python."""
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.tools import compute_image_mean, convert_imageset, make_imagenet_lists
from pycaffe_lite.tools.parse_log import parse

NET = '''name: "DigitNet"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 32 mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/train_lmdb" batch_size: 50 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 32 mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/val_lmdb" batch_size: 59 backend: LMDB } }
%s
layer { name: "accuracy" type: "Accuracy" bottom: "fc3" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc3" bottom: "label" top: "loss" }
'''

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
test_interval: 100
base_lr: 0.02
lr_policy: "step"
gamma: 0.1
stepsize: 250
display: 20
max_iter: 300
momentum: 0.9
weight_decay: 0.0005
snapshot: 100
snapshot_prefix: "models/digits/digits_train"
solver_mode: CPU
random_seed: 1
'''


def write_digit_images(root):
    """train/<synset>/*.png and val/*.png from sklearn's digits, 36x36 colour."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    synsets = ["n%08d" % (90 - d) for d in range(10)]        # ASCII order is not digit order
    rng = np.random.RandomState(0)
    order = rng.permutation(len(digits.images))
    val_ids = set(order[:295].tolist())
    truth = []
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


@pytest.mark.slow
def test_recipe_on_digits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    os.makedirs("images/val")
    synsets = write_digit_images("images")
    # 1. lists and LMDBs
    assert make_imagenet_lists.main(["--train_dir", "images/train", "--val_dir", "images/val",
                                     "--val_ground_truth", "images/val_ground_truth.txt",
                                     "--out_dir", "data/digits"]) == 0
    assert open("data/digits/synsets.txt").read().split() == sorted(synsets)
    os.makedirs("examples/digits")
    assert convert_imageset.main(["--shuffle", "--seed=3", "images/train/", "data/digits/train.txt",
                                  "examples/digits/train_lmdb"]) == 0
    assert convert_imageset.main(["images/val/", "data/digits/val.txt", "examples/digits/val_lmdb"]) == 0
    # 2. mean
    assert compute_image_mean.main(["examples/digits/train_lmdb", "data/digits/mean.binaryproto"]) == 0
    # 3. the net
    os.makedirs("models/digits")
    open("models/digits/train_val.prototxt", "w").write(NET % TRUNK)
    open("models/digits/deploy.prototxt", "w").write(DEPLOY)
    open("models/digits/solver.prototxt", "w").write(SOLVER)
    # 4. train, stopped with Ctrl-C after the first test past iteration 100
    cmd = [sys.executable, "-m", "pycaffe_lite.tools.caffe", "train", "--solver=models/digits/solver.prototxt"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    first = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        first.append(line)
        if "Iteration 140 " in line:
            proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    proc.wait(timeout=60)
    log1 = "".join(first) + rest
    assert proc.returncode == 0, log1[-3000:]
    assert "Optimization stopped early." in log1
    state = re.findall(r"Snapshotting solver state to binary proto file (\S+)", log1)[-1]
    stopped_at = int(re.search(r"_iter_(\d+)\.solverstate", state).group(1))
    assert 140 <= stopped_at < 300
    # 5. resume and finish
    res = subprocess.run(cmd + ["--snapshot=" + state], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    open("train2.log", "w").write(res.stderr)
    train, test, _, vcols = parse("train2.log")
    assert train[0]["NumIters"] >= stopped_at
    assert test[-1]["NumIters"] == 300
    accuracy = test[-1]["accuracy"]
    assert accuracy > 0.9, "test accuracy %.3f after 300 iterations" % accuracy
    assert os.path.exists("models/digits/digits_train_iter_300.caffemodel")
    # 6. time the net
    res = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.caffe", "time",
                          "--model=models/digits/deploy.prototxt", "--iterations=2"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "Average Forward pass" in res.stderr and "conv1\tforward" in res.stderr
    # 7. classify from Python
    from pycaffe_lite.tools.convert_mean import load_mean
    mean = load_mean("data/digits/mean.binaryproto")[:, 2:34, 2:34]     # the centre crop, as in TEST
    net = caffe.Classifier("models/digits/deploy.prototxt", "models/digits/digits_train_iter_300.caffemodel",
                           image_dims=(36, 36), mean=mean, raw_scale=255, input_scale=0.0078125,
                           channel_swap=(2, 1, 0))
    val = [line.split() for line in open("data/digits/val.txt")][:40]
    images = [caffe.io.load_image(os.path.join("images/val", name)) for name, _ in val]
    predictions = net.predict(images, oversample=False)
    correct = np.mean(predictions.argmax(axis=1) == np.array([int(l) for _, l in val]))
    assert correct > 0.85, "Classifier got %.2f of 40 validation digits right" % correct

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

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.tools.parse_log import parse
from conftest import REPO

sys.path.insert(0, os.path.join(REPO, "examples", "digits"))
import brew_digits  # noqa: E402  (the example the recipe test runs)


@pytest.mark.slow
def test_recipe_on_digits(tmp_path, monkeypatch):
    # 1-3. images, lists, LMDBs, mean, nets: the example does them
    synsets = brew_digits.prepare(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert open("data/digits/synsets.txt").read().split() == sorted(synsets)
    assert os.path.isdir("examples/digits/train_lmdb") and os.path.isdir("examples/digits/val_lmdb")
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

"""Caffe's example notebooks as scripts (tests/notebooks/), run against
pycaffe_lite with small local stand-ins for what they download: a
random-weight CaffeNet, generated images, mean files and label lists."""
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import protoio
from pycaffe_lite.tools.compute_image_mean import mean_to_proto
from conftest import REPO

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "notebooks")
DEPLOY = os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")


def run(script, *args, cwd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, REPO, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, os.path.join(HERE, script)] + [str(a) for a in args], cwd=str(cwd),
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-4000:]
    return res.stdout


def picture(h, w, seed):
    """A colour picture: smooth gradients with a few solid shapes."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([(x * 255 // w), (y * 255 // h), ((x + y) * 127 // (h + w))], axis=2).astype(np.uint8)
    for _ in range(3):
        y0, x0 = rng.randint(0, h - 20), rng.randint(0, w - 20)
        img[y0:y0 + rng.randint(10, 40), x0:x0 + rng.randint(10, 40)] = rng.randint(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    d = tmp_path_factory.mktemp("stand_ins")
    caffe.set_random_seed(1)
    net = caffe.Net(DEPLOY, caffe.TEST)
    weights = d / "bvlc_reference_caffenet.caffemodel"
    net.save(str(weights))
    mean = np.random.RandomState(0).uniform(90, 130, (3, 256, 256)).astype(np.float32)
    np.save(str(d / "ilsvrc_2012_mean.npy"), mean)
    protoio.write_binary(str(d / "imagenet_mean.binaryproto"), mean_to_proto(mean))
    cv2.imwrite(str(d / "cat.jpg"), picture(360, 480, 0))
    cv2.imwrite(str(d / "cat_gray.jpg"), cv2.cvtColor(picture(100, 100, 1), cv2.COLOR_BGR2GRAY))
    (d / "synset_words.txt").write_text("".join("n%08d class %d\n" % (i, i) for i in range(1000)))
    full = protoio.read_net_text(DEPLOY)
    full.layer[0].input_param.shape[0].dim[:] = [1, 3, 451, 451]
    for layer in full.layer:
        for names in (layer.bottom, layer.top):
            names[:] = [n + "-conv" if n in ("fc6", "fc7", "fc8") else n for n in names]
        if layer.name in ("fc6", "fc7", "fc8"):
            outputs = layer.inner_product_param.num_output
            layer.ClearField("inner_product_param")
            layer.type, layer.name = "Convolution", layer.name + "-conv"
            layer.convolution_param.num_output = outputs
            layer.convolution_param.kernel_size.append(6 if layer.name == "fc6-conv" else 1)
    protoio.write_text(str(d / "bvlc_caffenet_full_conv.prototxt"), full)
    return d


@pytest.mark.slow
def test_00_classification(stand_ins, tmp_path):
    d = stand_ins
    out = run("classification.py", DEPLOY, d / "bvlc_reference_caffenet.caffemodel", d / "ilsvrc_2012_mean.npy",
              d / "cat.jpg", d / "synset_words.txt", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("mean-subtracted values: [('B', ")
    predicted = int(lines[1].split()[-1])
    assert lines[2] == "output label: n%08d class %d" % (predicted, predicted)
    assert "data\t(50, 3, 227, 227)" in lines and "prob\t(50, 1000)" in lines and "pool5\t(50, 256, 6, 6)" in lines
    assert "conv1\t(96, 3, 11, 11) (96,)" in lines and "fc8\t(1000, 4096) (1000,)" in lines
    assert "filter grid (120, 120, 3)" in lines
    assert abs(float(lines[-1].split()[-1]) - 1) < 1e-4
    assert (tmp_path / "prob.png").stat().st_size > 1000


@pytest.mark.slow
def test_net_surgery(stand_ins, tmp_path):
    d = stand_ins
    (tmp_path / "net_surgery").mkdir()
    (tmp_path / "net_surgery" / "conv.prototxt").write_text(
        '# Simple single-layer network to showcase editing model parameters.\nname: "convolution"\n'
        'layer { name: "data" type: "Input" top: "data" input_param { shape: { dim: 1 dim: 1 dim: 100 dim: 100 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 '
        'kernel_size: 5 stride: 1 weight_filler { type: "gaussian" std: 0.01 } bias_filler { type: "constant" '
        'value: 0 } } }\n')
    out = run("net_surgery.py", DEPLOY, d / "bvlc_reference_caffenet.caffemodel", d / "bvlc_caffenet_full_conv.prototxt",
              d / "ilsvrc_2012_mean.npy", d / "cat_gray.jpg", d / "cat.jpg", cwd=tmp_path)
    lines = out.splitlines()
    pre = float(lines[2].split()[-1])
    assert abs(float(lines[3].split()[-1]) - (pre + 1)) < 0.011     # the bias surgery shows in the output
    assert float(lines[4].split()[-1]) < 6       # Gaussian blur of the image (plus the bias of 1)
    assert "fc6 weights are (4096, 9216) dimensional and biases are (4096,) dimensional" in lines
    assert "fc6-conv weights are (4096, 256, 6, 6) dimensional and biases are (4096,) dimensional" in lines
    assert lines[-1] == "map (8, 8)"
    back = caffe.Net(str(d / "bvlc_caffenet_full_conv.prototxt"),
                     str(tmp_path / "net_surgery" / "bvlc_caffenet_full_conv.caffemodel"), caffe.TEST)
    fc6 = caffe.Net(DEPLOY, str(d / "bvlc_reference_caffenet.caffemodel"), caffe.TEST).params["fc6"][0].data
    np.testing.assert_array_equal(back.params["fc6-conv"][0].data.reshape(4096, -1), fc6)


@pytest.mark.slow
def test_brewing_logreg(tmp_path):
    out = run("logreg.py", cwd=tmp_path)
    lines = out.splitlines()
    sk = float(lines[0].split()[-1])
    ours = float(lines[-1].split()[-1])
    assert ours > 0.7 and ours > sk - 0.08, out
    assert (tmp_path / "examples/hdf5_classification/data/train_iter_2000.caffemodel").exists()


@pytest.mark.slow
def test_pascal_multilabel_with_python_data_layer(tmp_path):
    out = run("multilabel.py", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0].startswith("Ground truth:  [")
    before = float(lines[1].split()[-1])
    after = float(lines[-1].split(":")[-1])
    assert after > 0.9 and after > before + 0.2, out


@pytest.mark.slow
def test_02_fine_tuning(stand_ins, tmp_path):
    d = stand_ins
    for split, count in (("train", 8), ("test", 4)):
        lines = []
        for i in range(count):
            name = tmp_path / ("%s_%d.jpg" % (split, i))
            cv2.imwrite(str(name), picture(200 + 10 * i, 260, 10 + i))
            lines.append("%s %d\n" % (name, i % 5))
        (tmp_path / ("%s.txt" % split)).write_text("".join(lines))
    out = run("fine_tuning.py", d / "bvlc_reference_caffenet.caffemodel", d / "imagenet_mean.binaryproto",
              tmp_path / "train.txt", tmp_path / "test.txt", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0] == "batch (4, 3, 227, 227) [0, 1, 2, 3]"
    assert "conv1 copied 1" in lines
    assert "frozen conv1 unchanged 1" in lines and "fc8_flickr learned 1" in lines and "reloaded fc8_flickr 1" in lines


@pytest.mark.slow
def test_detection_on_windows(stand_ins, tmp_path):
    d = stand_ins
    out = run("detection.py", DEPLOY, d / "bvlc_reference_caffenet.caffemodel", d / "ilsvrc_2012_mean.npy",
              d / "cat.jpg", cwd=tmp_path)
    lines = out.splitlines()
    assert lines[0] == "detections 3"
    assert lines[1].startswith("prediction (1000,)") and abs(float(lines[1].split()[-1]) - 1) < 1e-4
    assert lines[2] == "window [0, 0, 200, 240] True"
    assert lines[3] == "plain crop (40, 40, 3)"
    assert lines[4] == "context crop (227, 227, 3)"


def test_train_py_pattern_one_process(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('''layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
      shape { dim: 4 dim: 3 dim: 8 dim: 8 } shape { dim: 4 } data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
      layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
      layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }''')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.01 lr_policy: "fixed" display: 2 max_iter: 4 snapshot_after_train: false '
                      'solver_mode: CPU' % net)
    out = run("train_py.py", solver, cwd=tmp_path)
    assert out.splitlines()[-1] == "iter 4 uid bytes 128"

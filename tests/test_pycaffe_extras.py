"""pycaffe parity beyond Net: NetSpec, Python layers, draw_net, extract_features,
the upgrade tools, HDF5 layers and snapshots."""
import os
import subprocess
import sys

import lmdb
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import (draw_net, extract_features, upgrade_net_proto_binary, upgrade_net_proto_text,
                                upgrade_solver_proto_text)
from conftest import golden_path

# ---------------------------------------------------------------- NetSpec


def test_netspec_lenet_text():
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=64, backend=P.Data.LMDB, source="mnist_train_lmdb",
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=500, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    # Written by hand from pycaffe's naming rules: a layer takes the name its
    # first top was given; an in-place layer's top is its bottom.
    expected = '''layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  transform_param {
    scale: 0.00392156886
  }
  data_param {
    source: "mnist_train_lmdb"
    batch_size: 64
    backend: LMDB
  }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param {
    num_output: 20
    kernel_size: 5
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param {
    pool: MAX
    kernel_size: 2
    stride: 2
  }
}
layer {
  name: "fc1"
  type: "InnerProduct"
  bottom: "pool1"
  top: "fc1"
  inner_product_param {
    num_output: 500
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "relu1"
  type: "ReLU"
  bottom: "fc1"
  top: "fc1"
}
layer {
  name: "score"
  type: "InnerProduct"
  bottom: "fc1"
  top: "score"
  inner_product_param {
    num_output: 10
    weight_filler {
      type: "xavier"
    }
  }
}
layer {
  name: "loss"
  type: "SoftmaxWithLoss"
  bottom: "score"
  bottom: "label"
  top: "loss"
}
'''
    assert str(n.to_proto()) == expected


def test_netspec_auto_names_multiple_tops_and_params():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 6, 4, 4]))
    a, b = L.Slice(n.data, slice_param=dict(axis=1, slice_point=[2]), ntop=2)
    n.out = L.Eltwise(L.ReLU(a), L.Convolution(b, num_output=2, kernel_size=1,
                                                 param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)]),
                      operation=P.Eltwise.SUM)
    n.silence = L.Silence(n.out, ntop=0)
    expected = '''layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param {
    shape {
      dim: 2
      dim: 6
      dim: 4
      dim: 4
    }
  }
}
layer {
  name: "Slice1"
  type: "Slice"
  bottom: "data"
  top: "Slice1"
  top: "Slice2"
  slice_param {
    slice_point: 2
    axis: 1
  }
}
layer {
  name: "ReLU1"
  type: "ReLU"
  bottom: "Slice1"
  top: "ReLU1"
}
layer {
  name: "Convolution1"
  type: "Convolution"
  bottom: "Slice2"
  top: "Convolution1"
  param {
    lr_mult: 1
  }
  param {
    lr_mult: 2
    decay_mult: 0
  }
  convolution_param {
    num_output: 2
    kernel_size: 1
  }
}
layer {
  name: "out"
  type: "Eltwise"
  bottom: "ReLU1"
  bottom: "Convolution1"
  top: "out"
  eltwise_param {
    operation: SUM
  }
}
layer {
  name: "silence"
  type: "Silence"
  bottom: "out"
}
'''
    assert str(n.to_proto()) == expected
    net = caffe.Net(n.to_proto(), caffe.TEST)
    assert net.blobs["out"].shape == (2, 2, 4, 4)


# ---------------------------------------------------------------- Python layers

EUCLID = '''
import numpy as np
import pycaffe_lite as caffe

class EuclideanLossLayer(caffe.Layer):
    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise Exception("Need two inputs to compute distance.")
        self.scale = float(self.param_str or 1)

    def reshape(self, bottom, top):
        self.diff = np.zeros_like(bottom[0].data, dtype=np.float32)
        top[0].reshape(1)

    def forward(self, bottom, top):
        self.diff[...] = bottom[0].data - bottom[1].data
        top[0].data[...] = self.scale * np.sum(self.diff ** 2) / bottom[0].num / 2.

    def backward(self, top, propagate_down, bottom):
        for i in range(2):
            if not propagate_down[i]:
                continue
            sign = 1 if i == 0 else -1
            bottom[i].diff[...] = self.scale * sign * self.diff / bottom[i].num


class Broken(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        raise ValueError("this layer always fails")

    def backward(self, top, propagate_down, bottom):
        pass
'''


@pytest.fixture
def pylayer_module(tmp_path, monkeypatch):
    (tmp_path / "pyloss.py").write_text(EUCLID)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _regression_net(loss_type, extra=""):
    return '''force_backward: true
layer { name: "x" type: "Input" top: "x" top: "t" input_param { shape { dim: 4 dim: 5 } shape { dim: 4 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "loss" type: "%s" bottom: "ip" bottom: "t" top: "loss" %s }
''' % (loss_type, extra)


def test_python_loss_layer_matches_the_builtin(pylayer_module, tmp_path):
    rng = np.random.RandomState(0)
    x, t = rng.randn(4, 5).astype(np.float32), rng.randn(4, 3).astype(np.float32)
    results = []
    for loss_type, extra in [("EuclideanLoss", ""),
                             ("Python", 'loss_weight: 1 python_param { module: "pyloss" layer: "EuclideanLossLayer" }')]:
        caffe.set_random_seed(1)
        net = caffe.Net(_net_param(_regression_net(loss_type, extra)), caffe.TEST)
        net.forward(x=x, t=t)
        net.backward()
        results.append((float(net.blobs["loss"].data.ravel()[0]), net.blobs["x"].diff.copy(), net.params["ip"][0].diff.copy()))
    (l0, dx0, dw0), (l1, dx1, dw1) = results
    assert l1 == pytest.approx(l0, rel=1e-6)
    np.testing.assert_allclose(dx1, dx0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dw1, dw0, rtol=1e-5, atol=1e-7)


def _net_param(text):
    from google.protobuf import text_format
    return text_format.Parse(text, pb.NetParameter())


def test_python_layer_trains_under_the_solver(pylayer_module, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('''layer { name: "x" type: "DummyData" top: "x" top: "t"
      dummy_data_param { shape { dim: 8 dim: 5 } shape { dim: 8 dim: 3 }
        data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 2 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
      layer { name: "loss" type: "Python" bottom: "ip" bottom: "t" top: "loss" loss_weight: 1
        python_param { module: "pyloss" layer: "EuclideanLossLayer" param_str: "1" } }''')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.05 lr_policy: "fixed" momentum: 0.9 max_iter: 60 display: 0 '
                      'snapshot_after_train: false solver_mode: CPU' % net)
    s = caffe.get_solver(str(solver))
    s.step(1)
    first = float(s.net.blobs["loss"].data.ravel()[0])
    s.step(59)
    assert float(s.net.blobs["loss"].data.ravel()[0]) < 0.01 * first


def test_python_module_missing(tmp_path):
    text = _regression_net("Python", 'python_param { module: "no_such_module_here" layer: "X" }')
    with pytest.raises(caffe.ConfigError, match="no_such_module_here"):
        caffe.Net(_net_param(text), caffe.TEST)


def test_python_layer_raising_names_the_layer(pylayer_module):
    text = '''layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }
      layer { name: "bad_one" type: "Python" bottom: "x" top: "y" python_param { module: "pyloss" layer: "Broken" } }'''
    net = caffe.Net(_net_param(text), caffe.TEST)
    # The layer's own exception type reaches the caller (as in pycaffe), with
    # a note that names the layer and where it was raised.
    with pytest.raises(ValueError, match="always fails") as e:
        net.forward()
    notes = " ".join(getattr(e.value, "__notes__", []))
    assert "'bad_one'" in notes and "pyloss.Broken.forward" in notes


# ---------------------------------------------------------------- a LeNet notebook in the pycaffe style

NOTEBOOK = r'''
import sys
import numpy as np
import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P

def lenet(lmdb, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1./255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 =   L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss =  L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()

with open('lenet_auto_train.prototxt', 'w') as f:
    f.write(str(lenet('digits_train_lmdb', 64)))
with open('lenet_auto_test.prototxt', 'w') as f:
    f.write(str(lenet('digits_test_lmdb', 100)))
with open('lenet_auto_solver.prototxt', 'w') as f:
    f.write('train_net: "lenet_auto_train.prototxt"\ntest_net: "lenet_auto_test.prototxt"\ntest_iter: 3\n'
            'test_interval: 500\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: "inv"\n'
            'gamma: 0.0001\npower: 0.75\ndisplay: 100\nmax_iter: 10000\nsnapshot: 5000\n'
            'snapshot_prefix: "lenet"\nsolver_mode: CPU\nrandom_seed: 1\n')

caffe.set_mode_cpu()
solver = caffe.SGDSolver('lenet_auto_solver.prototxt')
print([(k, v.data.shape) for k, v in solver.net.blobs.items()][:3])
solver.net.forward()
solver.test_nets[0].forward()
niter = 120
train_loss = np.zeros(niter)
test_acc = []
for it in range(niter):
    solver.step(1)
    train_loss[it] = solver.net.blobs['loss'].data
    if it % 40 == 0 or it == niter - 1:
        correct = 0
        for test_it in range(3):
            solver.test_nets[0].forward()
            correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1) == solver.test_nets[0].blobs['label'].data)
        test_acc.append(correct / 300.)
print("loss", train_loss[:5].mean(), train_loss[-5:].mean())
print("acc", test_acc[-1])
'''


@pytest.mark.slow
def test_lenet_notebook_script(tmp_path):
    from sklearn.datasets import load_digits
    from pycaffe_lite.data.datum import hwc_to_datum
    import cv2
    digits = load_digits()
    order = np.random.RandomState(0).permutation(len(digits.images))
    for name, ids in (("digits_train_lmdb", order[:1400]), ("digits_test_lmdb", order[1400:1700])):
        env = lmdb.open(str(tmp_path / name), map_size=1 << 26)
        with env.begin(write=True) as txn:
            for k, i in enumerate(ids):
                img = cv2.resize((digits.images[i] * 255 / 16).astype(np.uint8), (28, 28))[:, :, None]
                txn.put(b"%08d" % k, hwc_to_datum(img, digits.target[i]).SerializeToString())
        env.close()
    (tmp_path / "notebook.py").write_text(NOTEBOOK)
    res = subprocess.run([sys.executable, "notebook.py"], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines[0] == "[('data', (64, 1, 28, 28)), ('label', (64,)), ('conv1', (64, 20, 24, 24))]"
    first, last = map(float, lines[1].split()[1:])
    assert last < 0.5 * first
    assert float(lines[2].split()[1]) > 0.85


# ---------------------------------------------------------------- tools


@pytest.mark.parametrize("tool,case,src,expected", [
    (upgrade_net_proto_text, "v1_net", "net_v1.prototxt", "net_upgraded.prototxt"),
    (upgrade_net_proto_text, "v0_net", "net_v0.prototxt", "net_upgraded.prototxt"),
    (upgrade_net_proto_binary, "v1_net", "weights_v1.caffemodel", "weights_upgraded.caffemodel"),
    (upgrade_solver_proto_text, "old_solver", "solver_old.prototxt", "solver_upgraded.prototxt"),
])
def test_upgrade_tools_write_what_caffes_wrote(tool, case, src, expected, tmp_path):
    folder = golden_path("format", case)
    out = tmp_path / expected
    assert tool.main([os.path.join(folder, src), str(out)]) == 0
    with open(os.path.join(folder, expected), "rb") as f:
        assert out.read_bytes() == f.read()


def test_draw_net_dot_and_missing_graphviz(tmp_path, monkeypatch, capsys):
    from conftest import REPO
    model = os.path.join(REPO, "models/bvlc_reference_caffenet/train_val.prototxt")
    out = tmp_path / "net.raw"
    assert draw_net.main([model, str(out), "--phase", "TEST"]) == 0
    dot = out.read_text()
    assert dot.startswith('digraph "CaffeNet"') and '"conv1" [shape="octagon"' in dot and "accuracy" in dot
    assert "accuracy" not in caffe.draw.to_dot(caffe.protoio.read_net_text(model), phase=caffe.TRAIN)
    import builtins
    real_import = builtins.__import__

    def no_pydot(name, *a, **k):
        if name == "pydot":
            raise ImportError("no pydot")
        return real_import(name, *a, **k)
    monkeypatch.setattr(builtins, "__import__", no_pydot)
    assert draw_net.main([model, str(tmp_path / "net.png")]) == 2
    err = capsys.readouterr().err
    assert "pydot" in err and "graphviz" in err.lower() and "Traceback" not in err


def test_extract_features(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text('''layer { name: "x" type: "DummyData" top: "x" dummy_data_param { shape { dim: 3 dim: 2 dim: 2 }
        data_filler { type: "gaussian" } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" } } }''')
    caffe.set_random_seed(0)
    caffe.Net(str(model), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    out = tmp_path / "feats"
    assert extract_features.main([str(tmp_path / "w.caffemodel"), str(model), "ip,x", "%s,%s" % (out, out) + "_x",
                                  "2", "lmdb"]) == 0
    env = lmdb.open(str(out), readonly=True, lock=False)
    with env.begin() as txn:
        records = list(txn.cursor())
    assert [k for k, _ in records] == [b"%010d" % i for i in range(6)]
    d = pb.Datum.FromString(records[0][1])
    assert (d.channels, d.height, d.width, len(d.float_data)) == (5, 1, 1, 5)


# ---------------------------------------------------------------- HDF5


def test_hdf5_data_and_output(tmp_path):
    h5py = pytest.importorskip("h5py")
    rng = np.random.RandomState(0)
    files = []
    for k in range(2):
        path = tmp_path / ("part%d.h5" % k)
        with h5py.File(path, "w") as f:
            f["data"] = rng.randn(3, 2, 2).astype(np.float64)
            f["label"] = np.arange(3 * k, 3 * k + 3, dtype=np.float32)
        files.append(str(path))
    (tmp_path / "list.txt").write_text("\n".join(files) + "\n")
    model = tmp_path / "net.prototxt"
    model.write_text('''layer { name: "d" type: "HDF5Data" top: "data" top: "label"
        hdf5_data_param { source: "%s" batch_size: 4 } }
      layer { name: "out" type: "HDF5Output" bottom: "data" bottom: "label"
        hdf5_output_param { file_name: "%s" } }''' % (tmp_path / "list.txt", tmp_path / "out.h5"))
    net = caffe.Net(str(model), caffe.TEST)
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2, 3])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [4, 5, 0, 1])
    with h5py.File(tmp_path / "out.h5", "r") as f:
        np.testing.assert_array_equal(f["label"][...], [0, 1, 2, 3, 4, 5, 0, 1])
        assert f["data"].shape == (8, 2, 2)


def test_hdf5_file_missing_a_dataset(tmp_path):
    h5py = pytest.importorskip("h5py")
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((2, 3), np.float32)
    (tmp_path / "list.txt").write_text(str(tmp_path / "a.h5") + "\n")
    text = 'layer { name: "d" type: "HDF5Data" top: "data" top: "label" hdf5_data_param { source: "%s" batch_size: 2 } }' \
        % (tmp_path / "list.txt")
    with pytest.raises(caffe.FormatError, match="no dataset 'label'"):
        caffe.Net(_net_param(text), caffe.TEST)


def test_hdf5_snapshots_resume(tmp_path):
    pytest.importorskip("h5py")
    model = tmp_path / "net.prototxt"
    model.write_text('''layer { name: "x" type: "DummyData" top: "x" top: "t"
      dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 }
        data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0.5 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
      layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "t" top: "loss" }''')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.1 lr_policy: "fixed" momentum: 0.9 max_iter: 10 snapshot: 5 display: 0 '
                      'snapshot_prefix: "%s/h" snapshot_format: HDF5 solver_mode: CPU random_seed: 3'
                      % (model, tmp_path))
    a = caffe.get_solver(str(solver))
    a.solve()
    assert (tmp_path / "h_iter_5.solverstate.h5").exists() and (tmp_path / "h_iter_10.caffemodel.h5").exists()
    b = caffe.get_solver(str(solver))
    b.solve(str(tmp_path / "h_iter_5.solverstate.h5"))
    np.testing.assert_array_equal(a.net.params["ip"][0].data, b.net.params["ip"][0].data)


def test_netspec_caffenet_like_pycaffes_example():
    # The CaffeNet of pycaffe's examples/pycaffe/caffenet.py: helpers return
    # tops, to_proto(loss, acc) names everything automatically.
    def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
        conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group)
        return conv, L.ReLU(conv, in_place=True)

    def fc_relu(bottom, nout):
        fc = L.InnerProduct(bottom, num_output=nout)
        return fc, L.ReLU(fc, in_place=True)

    def max_pool(bottom, ks, stride=1):
        return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)

    data, label = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=256, ntop=2,
                         transform_param=dict(crop_size=227, mean_value=[104, 117, 123], mirror=True))
    conv1, relu1 = conv_relu(data, 11, 96, stride=4)
    pool1 = max_pool(relu1, 3, stride=2)
    norm1 = L.LRN(pool1, local_size=5, alpha=1e-4, beta=0.75)
    conv2, relu2 = conv_relu(norm1, 5, 256, pad=2, group=2)
    pool2 = max_pool(relu2, 3, stride=2)
    norm2 = L.LRN(pool2, local_size=5, alpha=1e-4, beta=0.75)
    conv3, relu3 = conv_relu(norm2, 3, 384, pad=1)
    conv4, relu4 = conv_relu(relu3, 3, 384, pad=1, group=2)
    conv5, relu5 = conv_relu(relu4, 3, 256, pad=1, group=2)
    pool5 = max_pool(relu5, 3, stride=2)
    fc6, relu6 = fc_relu(pool5, 4096)
    drop6 = L.Dropout(relu6, in_place=True)
    fc7, relu7 = fc_relu(drop6, 4096)
    drop7 = L.Dropout(relu7, in_place=True)
    fc8 = L.InnerProduct(drop7, num_output=1000)
    loss = L.SoftmaxWithLoss(fc8, label)
    acc = L.Accuracy(fc8, label)
    net = caffe.to_proto(loss, acc)
    got = [(l.name, l.type, list(l.bottom), list(l.top)) for l in net.layer]
    expected = [
        ("Data1", "Data", [], ["Data1", "Data2"]),
        ("Convolution1", "Convolution", ["Data1"], ["Convolution1"]),
        ("ReLU1", "ReLU", ["Convolution1"], ["Convolution1"]),
        ("Pooling1", "Pooling", ["Convolution1"], ["Pooling1"]),
        ("LRN1", "LRN", ["Pooling1"], ["LRN1"]),
        ("Convolution2", "Convolution", ["LRN1"], ["Convolution2"]),
        ("ReLU2", "ReLU", ["Convolution2"], ["Convolution2"]),
        ("Pooling2", "Pooling", ["Convolution2"], ["Pooling2"]),
        ("LRN2", "LRN", ["Pooling2"], ["LRN2"]),
        ("Convolution3", "Convolution", ["LRN2"], ["Convolution3"]),
        ("ReLU3", "ReLU", ["Convolution3"], ["Convolution3"]),
        ("Convolution4", "Convolution", ["Convolution3"], ["Convolution4"]),
        ("ReLU4", "ReLU", ["Convolution4"], ["Convolution4"]),
        ("Convolution5", "Convolution", ["Convolution4"], ["Convolution5"]),
        ("ReLU5", "ReLU", ["Convolution5"], ["Convolution5"]),
        ("Pooling3", "Pooling", ["Convolution5"], ["Pooling3"]),
        ("InnerProduct1", "InnerProduct", ["Pooling3"], ["InnerProduct1"]),
        ("ReLU6", "ReLU", ["InnerProduct1"], ["InnerProduct1"]),
        ("Dropout1", "Dropout", ["InnerProduct1"], ["InnerProduct1"]),
        ("InnerProduct2", "InnerProduct", ["InnerProduct1"], ["InnerProduct2"]),
        ("ReLU7", "ReLU", ["InnerProduct2"], ["InnerProduct2"]),
        ("Dropout2", "Dropout", ["InnerProduct2"], ["InnerProduct2"]),
        ("InnerProduct3", "InnerProduct", ["InnerProduct2"], ["InnerProduct3"]),
        ("SoftmaxWithLoss1", "SoftmaxWithLoss", ["InnerProduct3", "Data2"], ["SoftmaxWithLoss1"]),
        ("Accuracy1", "Accuracy", ["InnerProduct3", "Data2"], ["Accuracy1"]),
    ]
    assert got == expected
    layer = {l.name: l for l in net.layer}
    assert str(layer["Data1"].transform_param) == "mirror: true\ncrop_size: 227\nmean_value: 104\nmean_value: 117\nmean_value: 123\n"
    assert str(layer["Convolution2"].convolution_param) == "num_output: 256\npad: 2\nkernel_size: 5\ngroup: 2\nstride: 1\n"

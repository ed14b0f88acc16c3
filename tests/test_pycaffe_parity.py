"""pycaffe's public surface, name by name, as real scripts use it: module
functions, Net, Solver, NetSpec, Python layers, caffe.io (against
scikit-image itself), Classifier, Detector and coord_map; and the bad input
each of them must refuse clearly."""
import os
import sys
import time

import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P
from pycaffe_lite.coord_map import coord_map_from_to, crop
from pycaffe_lite.proto import caffe_pb2

NET = '''name: "parity" force_backward: true
layer { type: "DummyData" name: "data" top: "data" top: "label"
  dummy_data_param { num: 5 channels: 2 height: 3 width: 4 num: 5 channels: 1 height: 1 width: 1
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" } } }
layer { type: "Convolution" name: "conv" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_size: 2 pad: 1 weight_filler { type: "gaussian" std: 1 }
    bias_filler { type: "constant" value: 2 } } param { decay_mult: 1 } param { decay_mult: 0 } }
layer { type: "InnerProduct" name: "ip" bottom: "conv" top: "ip_blob"
  inner_product_param { num_output: 7 weight_filler { type: "gaussian" std: 2.5 } bias_filler { type: "constant" value: -3 } } }
layer { type: "SoftmaxWithLoss" name: "loss" bottom: "ip_blob" bottom: "label" top: "loss" }
'''


@pytest.fixture
def net_file(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    return str(path)


@pytest.fixture
def net(net_file):
    caffe.set_random_seed(3)
    n = caffe.Net(net_file, caffe.TRAIN)
    n.blobs["label"].data[...] = (np.arange(5) % 7).reshape(5, 1, 1, 1)
    return n


# ---------------------------------------------------------------- module

def test_module_names():
    for name in ("Net", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
                 "AdamSolver", "NCCL", "Timer", "init_log", "log", "set_mode_cpu", "set_mode_gpu", "set_device",
                 "Layer", "get_solver", "layer_type_list", "set_random_seed", "solver_count", "set_solver_count",
                 "solver_rank", "set_solver_rank", "set_multiprocess", "has_nccl", "TRAIN", "TEST", "Classifier",
                 "Detector", "io", "layers", "params", "NetSpec", "to_proto", "__version__"):
        assert hasattr(caffe, name), name
    assert caffe.pycaffe.Net is caffe.Net and caffe.pycaffe.SGDSolver is caffe.SGDSolver
    assert caffe.detector.Detector is caffe.Detector
    assert callable(caffe.coord_map.coord_map_from_to) and callable(caffe.coord_map.crop)


def test_timer():
    t = caffe.Timer()
    assert t.ms == 0
    t.start()
    time.sleep(0.02)
    t.stop()
    assert 15 < t.ms < 1000
    t.start()
    assert t.ms >= 0                 # reading a running timer stops it, as Caffe's does


def test_log_and_init_log(capsys, tmp_path, monkeypatch):
    from pycaffe_lite import glog
    monkeypatch.setattr(glog.FLAGS, "log_dir", str(tmp_path))
    monkeypatch.setattr(glog.FLAGS, "program", None)
    caffe.log("before init")                       # as glog: to standard error before InitGoogleLogging
    err = capsys.readouterr().err
    assert "before init" in err and err.startswith("I")
    caffe.init_log(0, True)                        # pycaffe's (level, stderr): standard error only
    caffe.log("to stderr")
    assert "to stderr" in capsys.readouterr().err and not os.listdir(tmp_path)
    caffe.init_log(0, False)                       # log files; standard error from ERROR on
    caffe.log("to the file")
    glog.error("an error")
    err = capsys.readouterr().err
    assert "to the file" not in err and "an error" in err
    name = os.path.basename(sys.argv[0]) or "python"
    info = (tmp_path / (name + ".INFO")).read_text()
    assert "to the file" in info and "an error" in info
    assert "to the file" not in (tmp_path / (name + ".ERROR")).read_text()
    caffe.init_log(2)                              # ERROR and above only
    caffe.log("quiet now")
    assert "quiet now" not in (tmp_path / (name + ".INFO")).read_text()


def test_solver_count_and_rank():
    assert caffe.solver_count() == 1 and caffe.solver_rank() == 0
    caffe.set_solver_count(3)
    caffe.set_solver_rank(2)
    caffe.set_multiprocess(True)
    try:
        assert caffe.solver_count() == 3 and caffe.solver_rank() == 2
    finally:
        caffe.set_solver_count(1)
        caffe.set_solver_rank(0)
        caffe.set_multiprocess(False)
    assert isinstance(caffe.has_nccl(), bool)
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes) and len(uid) == 128 and uid != caffe.NCCL.new_uid()


# ---------------------------------------------------------------- Net

def test_net_callbacks_get_layer_indices_in_order(net):
    seen = []
    net.before_forward(lambda i: seen.append(("bf", i)))
    net.after_forward(lambda i: seen.append(("af", i)))
    net.before_backward(lambda i: seen.append(("bb", i)))
    net.after_backward(lambda i: seen.append(("ab", i)))
    net.forward()
    net.backward()
    n = len(net.layers)
    assert seen[:2 * n] == [(k, i) for i in range(n) for k in ("bf", "af")]
    assert seen[2 * n:] == [(k, i) for i in reversed(range(n)) for k in ("bb", "ab")]


def test_underscore_names(net):
    assert net._layer_names == ["data", "conv", "ip", "loss"]
    assert net._blob_names == ["data", "label", "conv", "ip_blob", "loss"]
    assert net._blob_loss_weights == [0, 0, 0, 0, 1]
    assert net._inputs == [] and net._outputs == [4]
    assert net._bottom_ids(3) == [3, 1] and net._top_ids(0) == [0, 1]
    assert [b.shape for b in net._blobs] == [b.shape for b in net.blobs.values()]
    layer = net.layers[1]
    assert layer.type == "Convolution" and [b.shape for b in layer.blobs] == [(6, 2, 2, 2), (6,)]
    net._forward(0, 3)
    net._backward(3, 0)
    assert net.layer_dict["ip"] is net.layers[2]


def test_clear_param_diffs_zeroes_the_arrays_a_user_holds(net):
    net.forward()
    net.backward()
    d = net.params["conv"][0].diff
    assert np.abs(d).max() > 0
    net.clear_param_diffs()
    assert (d == 0).all()


def test_forward_backward_all(tmp_path):
    path = tmp_path / "lin.prototxt"
    path.write_text('force_backward: true\nlayer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 '
                    'dim: 3 } } }\nlayer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" inner_product_param '
                    '{ num_output: 2 weight_filler { type: "gaussian" } } }\n')
    lin = caffe.Net(str(path), caffe.TEST)
    x = np.random.RandomState(0).randn(10, 3).astype(np.float32)
    dy = np.random.RandomState(1).randn(10, 2).astype(np.float32)
    outs, diffs = lin.forward_backward_all(x=x, y=dy)
    w = lin.params["ip"][0].data
    assert outs["y"].shape == (10, 2) and diffs["x"].shape == (10, 3)
    np.testing.assert_allclose(outs["y"], x @ w.T + lin.params["ip"][1].data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(diffs["x"], dy @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(lin.forward_all(x=x)["y"], outs["y"], rtol=1e-6)


def test_save_hdf5_and_load_hdf5(net, net_file, tmp_path):
    path = str(tmp_path / "w.h5")
    net.save_hdf5(path)
    import h5py
    with h5py.File(path, "r") as f:
        assert sorted(f["data"]) == sorted(net._layer_names)
        assert sorted(f["data/conv"]) == ["0", "1"] and "diff" not in f
    other = caffe.Net(net_file, caffe.TRAIN)
    other.load_hdf5(path)
    for name in net.params:
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)
    with h5py.File(path, "a") as f:
        del f["data/ip/1"]
    with pytest.raises(caffe.FormatError, match=r"layer 'ip' has no dataset 'data/ip/1'"):
        other.load_hdf5(path)


def test_both_constructors_and_level_stages(net, net_file, tmp_path):
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    a = caffe.Net(net_file, weights, caffe.TRAIN)
    b = caffe.Net(net_file, caffe.TRAIN, weights=weights)
    c = caffe.Net(net_file, caffe.TRAIN, level=0, stages=[], weights=weights)
    for n in (a, b, c):
        np.testing.assert_array_equal(n.params["ip"][0].data, net.params["ip"][0].data)


def test_weights_for_another_net_name_the_first_mismatching_layer(net, tmp_path):
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    other = tmp_path / "other.prototxt"
    other.write_text(NET.replace("num_output: 7", "num_output: 9"))
    with pytest.raises(caffe.ShapeError) as e:
        caffe.Net(str(other), weights, caffe.TRAIN)
    assert "layer 'ip'" in str(e.value) and "9x" in str(e.value) and "7x" in str(e.value)


# ---------------------------------------------------------------- Solver

def solver_file(net_file, tmp_path, extra=""):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "%s" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005 lr_policy: "fixed" display: 0 '
                    'max_iter: 6 snapshot_after_train: false snapshot_prefix: "%s" %s'
                    % (net_file, tmp_path / "model", extra))
    return str(path)


def test_solver_api(net_file, tmp_path):
    s = caffe.SGDSolver(solver_file(net_file, tmp_path, 'test_iter: 1 test_interval: 100'))
    assert s.iter == 0 and s.param.base_lr == np.float32(0.01) and len(s.test_nets) == 1
    events = []
    s.add_callback(lambda: events.append(("start", s.iter)),
                   lambda: events.append(("ready", s.iter, float(np.abs(s.net.params["ip"][0].diff).sum()) > 0)))
    s.step(2)
    assert events == [("start", 0), ("ready", 0, True), ("start", 1), ("ready", 1, True)]
    state = s.snapshot()
    assert os.path.basename(state) == "model_iter_2.solverstate" and os.path.exists(state)
    s.solve()
    assert s.iter == 6
    s.restore(state)
    assert s.iter == 2
    other = caffe.Net(net_file, caffe.TRAIN)
    s.share_weights(other)
    assert other.params["ip"][0] is s.net.params["ip"][0]
    # apply_update on hand-set diffs: w - lr * g (momentum history from the run above cleared first)
    s2 = caffe.SGDSolver(solver_file(net_file, tmp_path))
    data = s2.net.layers[1].blobs[0].data
    data[...] = 0
    s2.net.layers[1].blobs[0].diff[...] = 1
    s2.apply_update()
    assert np.abs(data + 0.01).max() < 1e-7


def test_add_callback_takes_an_object(net_file, tmp_path):
    s = caffe.SGDSolver(solver_file(net_file, tmp_path))

    class Counter:
        starts = ready = 0

        def on_start(self):
            self.starts += 1

        def on_gradients_ready(self):
            self.ready += 1
    c = Counter()
    s.add_callback(c)
    s.step(3)
    assert (c.starts, c.ready) == (3, 3)
    with pytest.raises(TypeError, match="on_start"):
        s.add_callback(object())


# ---------------------------------------------------------------- NetSpec

def test_netspec_type_error_matches_pycaffe():
    data = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(data, ntop=0)
    L.Silence(*data, ntop=0)


def test_netspec_behaviours(tmp_path):
    n = caffe.NetSpec()
    n.data, n.label = L.DummyData(shape=[dict(dim=[2, 3, 8, 8]), dict(dim=[2])], ntop=2)
    n.conv = L.Convolution(n.data, kernel_size=[3, 3], pad=1, num_output=4,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=dict(type="xavier"))
    n.relu = L.ReLU(n.conv, in_place=True)
    n.pool = L.Pooling(n.relu, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.ip = L.InnerProduct(n.pool, num_output=3)
    n.silence = L.Silence(n.label, ntop=0)
    proto = n.to_proto()
    conv = proto.layer[1]
    assert list(conv.convolution_param.kernel_size) == [3, 3]
    assert [(p.lr_mult, p.decay_mult) for p in conv.param] == [(1, 1), (2, 0)]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert proto.layer[2].bottom == proto.layer[2].top == ["conv"]
    assert proto.layer[3].pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert [l.name for l in proto.layer] == ["data", "conv", "relu", "pool", "ip", "silence"]
    # to_proto of several tops gathers everything both need, once
    a = L.Input(shape=dict(dim=[1, 2]))
    b1, b2 = L.Slice(a, ntop=2, slice_param=dict(axis=1))
    both = caffe.to_proto(L.ReLU(b1), L.TanH(b2))
    assert [l.type for l in both.layer] == ["Input", "Slice", "ReLU", "TanH"]
    path = tmp_path / "n.prototxt"
    path.write_text(str(proto))
    assert len(caffe.Net(str(path), caffe.TEST).forward()) == 1


# ---------------------------------------------------------------- Python layers

PYLAYERS = '''
import pycaffe_lite as caffe


class Boom(caffe.Layer):
    def setup(self, bottom, top):
        if self.param_str == "setup":
            raise RuntimeError("setup went wrong")

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        if self.param_str == "forward":
            raise KeyError("forward went wrong")
        top[0].data[...] = bottom[0].data * (2 if self.phase == caffe.TRAIN else 3)

    def backward(self, top, propagate_down, bottom):
        raise ZeroDivisionError("backward went wrong")
'''


@pytest.fixture
def pylayers(tmp_path, monkeypatch):
    (tmp_path / "parity_pylayers.py").write_text(PYLAYERS)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield


def py_net(tmp_path, param_str, share=False):
    path = tmp_path / "py.prototxt"
    path.write_text('force_backward: true\nlayer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 } } }\n'
                    'layer { name: "boom" type: "Python" bottom: "x" top: "y" python_param { module: "parity_pylayers" '
                    'layer: "Boom" param_str: "%s" share_in_parallel: %s } }\n' % (param_str, "true" if share else "false"))
    return str(path)


def test_python_layer_exceptions_keep_their_type(pylayers, tmp_path):
    with pytest.raises(RuntimeError, match="setup went wrong") as e:
        caffe.Net(py_net(tmp_path, "setup"), caffe.TEST)
    assert any("'boom'" in n and "Boom.setup" in n for n in e.value.__notes__)
    net = caffe.Net(py_net(tmp_path, "forward"), caffe.TEST)
    with pytest.raises(KeyError):
        net.forward()
    net = caffe.Net(py_net(tmp_path, "", share=True), caffe.TRAIN)
    net.blobs["x"].data[...] = [1, 2]
    assert net.forward()["y"].tolist() == [2, 4]                 # self.phase is TRAIN
    assert net.layers[1].impl.share_in_parallel is True
    with pytest.raises(ZeroDivisionError, match="backward went wrong"):
        net.backward()
    test_net = caffe.Net(py_net(tmp_path, ""), caffe.TEST)
    test_net.blobs["x"].data[...] = [1, 2]
    assert test_net.forward()["y"].tolist() == [3, 6]


# ---------------------------------------------------------------- caffe.io

skimage_transform = pytest.importorskip("skimage.transform", reason="the test extra brings scikit-image")


def pycaffe_resize(im, new_dims, interp_order=1):
    """pycaffe's resize_image, calling scikit-image and scipy as it does."""
    from scipy.ndimage import zoom
    if im.shape[-1] in (1, 3):
        lo, hi = im.min(), im.max()
        if hi > lo:
            std = (im - lo) / (hi - lo)
            return (skimage_transform.resize(std, new_dims, order=interp_order, mode="constant") * (hi - lo)
                    + lo).astype(np.float32)
        return np.full(tuple(new_dims) + (im.shape[-1],), lo, np.float32)
    return zoom(im, tuple(np.array(new_dims, float) / np.array(im.shape[:2])) + (1,),
                order=interp_order).astype(np.float32)


@pytest.mark.parametrize("shape", [(28, 28, 1), (28, 28, 3), (31, 17, 3), (40, 50, 1), (9, 7, 4), (12, 13, 2)])
@pytest.mark.parametrize("new_dims", [(30, 30), (14, 9), (7, 60), (227, 227)])
@pytest.mark.parametrize("order", [0, 1, 2, 3])
def test_resize_image_is_pycaffes(shape, new_dims, order):
    im = np.random.RandomState(sum(shape) + order).uniform(0, 255, shape).astype(np.float32)
    np.testing.assert_allclose(caffe.io.resize_image(im, new_dims, order), pycaffe_resize(im, new_dims, order),
                               rtol=1e-5, atol=1e-5 * 255)


def test_resize_darkens_edges_like_pycaffe():
    """The case from the issue: a 28x28 image upscaled to 30x30, mean 100
    subtracted: the corner pixel fades towards the zero border."""
    im = np.full((28, 28, 3), 200, np.float32)
    im[10:18, 10:18] = 50
    ours = caffe.io.resize_image(im, (30, 30)) - 100
    np.testing.assert_allclose(ours, pycaffe_resize(im, (30, 30)) - 100, atol=1e-4)
    assert ours[0, 0, 0] < 100 - 5


def test_load_image_is_pycaffes(tmp_path):
    import skimage
    import skimage.io
    rng = np.random.RandomState(0)
    files = {"c.png": rng.randint(0, 256, (13, 17, 3)), "g.png": rng.randint(0, 256, (13, 17)),
             "a.png": rng.randint(0, 256, (13, 17, 4)), "c.jpg": rng.randint(0, 256, (13, 17, 3))}
    for name, arr in files.items():
        cv2.imwrite(str(tmp_path / name), arr.astype(np.uint8))
        for color in (True, False):
            want = skimage.img_as_float(skimage.io.imread(str(tmp_path / name), as_gray=not color)).astype(np.float32)
            if want.ndim == 2:
                want = want[:, :, None]
                if color:
                    want = np.tile(want, (1, 1, 3))
            elif want.shape[2] == 4:
                want = want[:, :, :3]
            got = caffe.io.load_image(str(tmp_path / name), color=color)
            assert got.dtype == np.float32 and got.shape == want.shape, (name, color)
            np.testing.assert_allclose(got, want, atol=1.5 / 255 if name.endswith(".jpg") else 1e-7)


def test_transformer_order_and_deprocess():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    im = np.random.RandomState(0).rand(4, 5, 3).astype(np.float32)
    x = t.preprocess("data", im)
    want = (im.transpose(2, 0, 1)[[2, 1, 0]] * 255 - np.array([10, 20, 30.0])[:, None, None]) * 0.5
    np.testing.assert_allclose(x, want, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", x), im, rtol=1e-5, atol=1e-6)
    with pytest.raises(Exception, match="is not one of the net inputs"):
        t.preprocess("nope", im)
    with pytest.raises(ValueError):
        t.set_mean("data", np.zeros(4))
    with pytest.raises(ValueError):
        t.set_mean("data", np.zeros((2, 4, 5)))             # 2 channels for a 3-channel input
    t.set_mean("data", np.full((4, 5), 7.0))                 # (H, W): one plane for every channel, as in pycaffe
    assert t.mean["data"].shape == (1, 4, 5)
    gray = caffe.io.Transformer({"data": (1, 1, 4, 5)})
    gray.set_transpose("data", (2, 0, 1))
    gray.set_mean("data", np.ones((4, 5)))
    assert gray.preprocess("data", np.ones((4, 5, 1), np.float32)).max() == 0


def test_datum_and_blobproto_helpers():
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(arr, 7)
    assert (d.channels, d.height, d.width, d.label) == (2, 3, 4, 7)
    back = caffe.io.datum_to_array(d)
    assert back.dtype == np.uint8 and (back == arr).all()
    f = caffe.io.datum_to_array(caffe.io.array_to_datum(arr.astype(np.float32) / 2))
    assert f.dtype == np.float64 and np.allclose(f, arr / 2)
    assert caffe.io.array_to_datum(np.zeros((10, 10, 3))).label == 0
    with pytest.raises(ValueError):
        caffe.io.array_to_datum(np.zeros((3, 3)))
    arrays = [np.ones((2, 3)), np.arange(4.0).reshape(1, 1, 2, 2)]
    out = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str(arrays))
    assert [a.shape for a in out] == [(2, 3), (1, 1, 2, 2)] and all(a.dtype == np.float64 for a in out)
    legacy = caffe_pb2.BlobProto(num=1, channels=1, height=2, width=2, data=[1, 2, 3, 4])
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 1, 2, 2)
    with pytest.raises(ValueError):
        caffe.io.blobproto_to_array(caffe_pb2.BlobProto(data=[1, 2, 3]))


def test_oversample():
    ims = np.random.RandomState(0).rand(2, 10, 12, 3).astype(np.float32)
    crops = caffe.io.oversample(ims, (6, 6))
    assert crops.shape == (20, 6, 6, 3)
    np.testing.assert_array_equal(crops[0], ims[0, :6, :6])
    np.testing.assert_array_equal(crops[4], ims[0, 2:8, 3:9])
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])


# ---------------------------------------------------------------- Classifier, Detector

DEPLOY = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 dim: 12 dim: 12 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3
        weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param { num_output: 5
        weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


@pytest.fixture
def tiny(tmp_path):
    model = tmp_path / "deploy.prototxt"
    model.write_text(DEPLOY)
    caffe.set_random_seed(4)
    weights = tmp_path / "w.caffemodel"
    caffe.Net(str(model), caffe.TEST).save(str(weights))
    img = np.random.RandomState(1).randint(0, 256, (40, 50, 3)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "img.png"), img)
    return str(model), str(weights), str(tmp_path / "img.png")


def test_classifier_as_pycaffe(tiny):
    model, weights, image = tiny
    clf = caffe.Classifier(model, weights, image_dims=(16, 16), mean=np.array([100.0, 110, 120]), raw_scale=255,
                           channel_swap=(2, 1, 0))
    im = caffe.io.load_image(image)
    preds = clf.predict([im, im[::-1]], oversample=True)
    assert preds.shape == (2, 5) and np.allclose(preds.sum(axis=1), 1, atol=1e-5)
    # the same thing by hand, with pycaffe's own steps
    resized = caffe.io.resize_image(im, (16, 16))
    crops = caffe.io.oversample([resized], (12, 12))
    x = np.stack([clf.transformer.preprocess("data", c) for c in crops])
    by_hand = clf.forward_all(data=x)["prob"].mean(axis=0)
    np.testing.assert_allclose(preds[0], by_hand, rtol=1e-5)
    center = clf.predict([im], oversample=False)
    assert center.shape == (1, 5)


def test_detector_windows_and_windows_past_the_image(tiny):
    model, weights, image = tiny
    det = caffe.Detector(model, weights, mean=np.array([100.0, 110, 120]), raw_scale=255, channel_swap=(2, 1, 0))
    out = det.detect_windows([(image, [np.array([0, 0, 20, 20]), np.array([5, 10, 40, 50])])])
    assert [o["filename"] for o in out] == [image, image] and out[1]["prediction"].shape == (5,)
    # a window reaching past the 40x50 image is cut at its border, as numpy
    # slicing (and so pycaffe's crop) does
    past = det.detect_windows([(image, [np.array([30, 10, 45, 60])])])[0]["prediction"]
    im = caffe.io.load_image(image)
    by_hand = det.forward_all(data=det.transformer.preprocess("data", im[30:40, 10:50])[None])["prob"][0]
    np.testing.assert_allclose(past, by_hand, rtol=1e-5)
    with pytest.raises(ValueError, match=r"window \[45, 10, 50, 20\].*holds no pixel.*40x50"):
        det.detect_windows([(image, [np.array([45, 10, 50, 20])])])
    padded = caffe.Detector(model, weights, context_pad=2)
    crop_ = padded.crop(caffe.io.load_image(image), np.array([0, 0, 20, 20]))
    assert crop_.shape == (12, 12, 3)
    with pytest.raises(RuntimeError, match="MATLAB"):
        det.detect_selective_search([image])


# ---------------------------------------------------------------- coord_map

def fcn_spec(ks=3, stride=1, pad=0, pool=2, dstride=2, dpad=0):
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[2, 1, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=10, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool, pad=0)
    n.deconv = L.Deconvolution(n.pool, num_output=10, kernel_size=2 * dstride, stride=dstride, pad=dpad)
    return n


def test_coord_map_through_conv_pool_deconv():
    n = fcn_spec()
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a.item(), b.item()) == (1, 1.0, 0.0)
    n = fcn_spec(pool=4, dstride=4)
    ax, a, b = coord_map_from_to(n.deconv, n.data)
    assert (ax, a.item(), b.item()) == (1, 1.0, -1.0)
    n = fcn_spec(pad=3)
    assert coord_map_from_to(n.deconv, n.data)[2].item() == -3
    n = fcn_spec(dpad=2)
    assert coord_map_from_to(n.deconv, n.data)[2].item() == 2
    n = fcn_spec()
    n.relu = L.ReLU(n.deconv)
    n.eltwise = L.Eltwise(n.relu, n.relu)
    assert coord_map_from_to(n.eltwise, n.data)[2].item() == coord_map_from_to(n.deconv, n.data)[2].item() == 0


def test_crop_helper_builds_the_aligning_crop(tmp_path):
    n = fcn_spec(pad=10)
    n.score = crop(n.deconv, n.data)
    proto = n.to_proto()
    layer = proto.layer[-1]
    assert layer.type == "Crop" and layer.crop_param.axis == 2 and list(layer.crop_param.offset) == [10]
    path = tmp_path / "fcn.prototxt"
    path.write_text(str(proto))
    net = caffe.Net(str(path), caffe.TEST)
    assert net.blobs["score"].shape == (2, 10, 100, 100)


def test_coord_map_errors():
    n = fcn_spec()
    n.ip = L.InnerProduct(n.deconv, num_output=10)
    with pytest.raises(RuntimeError, match="are they connected by spatial layers"):
        coord_map_from_to(n.ip, n.data)
    n = fcn_spec(dpad=2)                 # the upsampled map is smaller than the data
    with pytest.raises(AssertionError, match="cannot crop negative offset"):
        crop(n.deconv, n.data)
    n = fcn_spec()
    n.up = L.Deconvolution(n.deconv, num_output=10, kernel_size=4, stride=2)
    with pytest.raises(AssertionError, match="scale mismatch"):
        crop(n.up, n.data)


def test_argument_types_pycaffe_takes(tiny, tmp_path):
    """Paths as str, bytes or pathlib, phases as ints, shapes and orders as
    lists, tuples or numpy integers, scales as numpy floats, images as lists."""
    import pathlib
    model, weights, image = tiny
    a = caffe.Net(pathlib.Path(model), pathlib.Path(weights), np.int64(caffe.TEST))
    b = caffe.Net(model.encode(), 1, weights=pathlib.Path(weights))
    x = np.random.RandomState(0).rand(*a.blobs["data"].shape)
    np.testing.assert_array_equal(a.forward(data=x.tolist())["prob"], b.forward(data=x)["prob"])
    a.blobs["data"].reshape(np.int64(1), np.int32(3), 12, 12)
    assert a.blobs["data"].shape == (1, 3, 12, 12)
    a.blobs["data"].reshape([2, 3, 12, 12])
    assert a.blobs["data"].data.shape == (2, 3, 12, 12)
    a.save(pathlib.Path(tmp_path / "w.caffemodel"))
    b.copy_from(str(tmp_path / "w.caffemodel").encode())
    t = caffe.io.Transformer({"data": [1, 3, 12, 12]})
    t.set_transpose("data", [2, 0, 1])
    t.set_channel_swap("data", [2, 1, 0])
    t.set_raw_scale("data", np.float32(255))
    t.set_mean("data", [10.0, 20.0, 30.0])
    im = np.random.RandomState(1).rand(12, 12, 3)
    np.testing.assert_array_equal(t.preprocess("data", im.tolist()), t.preprocess("data", im))
    proto = caffe.io.array_to_blobproto([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(proto), [[1, 2], [3, 4]])
    assert caffe.io.oversample(np.zeros((2, 8, 8, 3)), [4, 4]).shape == (20, 4, 4, 3)
    assert caffe.io.resize_image(np.zeros((8, 8, 3)), np.array([4, 6])).shape == (4, 6, 3)

"""The oneDNN CPU engine against the numpy one (the reference the golden cases
pin down): the same blobs, diffs and parameter diffs on the geometries where
the two could part (Caffe's pooling sizes and AVE divisor, LRN's alpha, groups,
dilation, 3-D), blocked layouts never visible, weights and folded weights
recomputed whenever a blob changes, fusion invisible, the engine's choice and
its absence."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import backend
from pycaffe_lite.kernels import dnnl

pytestmark = pytest.mark.skipif(not dnnl.available(), reason="the oneDNN engine is unavailable here: %s"
                                % dnnl.unavailable_reason())


def _net(tmp_path, text, phase=caffe.TEST, name="net.prototxt", weights=None):
    path = tmp_path / name
    path.write_text(text)
    return caffe.Net(str(path), phase, weights=weights)


def _run(tmp_path, text, engine, inputs, phase=caffe.TEST, backward=True, prepare=None):
    """Every blob's data and diff, every parameter (running statistics move
    in forward) and every parameter diff after one forward and backward under
    `engine`, with the same weights (seed 3, then prepare(net))."""
    backend.set_cpu_engine(engine)
    caffe.set_random_seed(3)
    net = _net(tmp_path, text, phase)
    if prepare is not None:
        prepare(net)
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    net.forward()
    out = {"data/" + k: b.data.copy() for k, b in net.blobs.items()}
    out.update(("param/%s/%d" % (k, i), p.data.copy()) for k, v in net.params.items() for i, p in enumerate(v))
    if backward:
        rng = np.random.RandomState(7)
        for name in net.outputs:
            net.blobs[name].diff[...] = rng.randn(*net.blobs[name].shape)
        net._mark_param_diffs_clear()
        net.backward_from_to(len(net.layers) - 1, 0)
        out.update(("diff/" + k, b.diff.copy()) for k, b in net.blobs.items())
        out.update(("param_diff/%s/%d" % (k, i), p.diff.copy()) for k, v in net.params.items()
                   for i, p in enumerate(v))
    return out, net


def _compare(tmp_path, text, inputs, phase=caffe.TEST, backward=True, rtol=2e-5):
    ref, _ = _run(tmp_path, text, "numpy", inputs, phase, backward)
    got, net = _run(tmp_path, text, "dnnl", inputs, phase, backward)
    assert ref.keys() == got.keys()
    for key in ref:
        scale = max(1.0, float(np.abs(ref[key]).max())) if ref[key].size else 1.0
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=rtol * scale, err_msg=key)
    return net


def _input(name, shape):
    return 'layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n' % (
        name, name, " ".join("dim: %d" % d for d in shape))


CONV = '''layer { name: "data" type: "Input" top: "data"
  input_param { shape { dim: 2 dim: %(c)d dim: %(h)d dim: %(w)d } } }
force_backward: true
layer { name: "conv" type: "%(type)s" bottom: "data" top: "conv"
  convolution_param { num_output: %(m)d kernel_size: %(k)d stride: %(s)d pad: %(p)d dilation: %(d)d group: %(g)d
    bias_term: %(bias)s weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
'''


@pytest.mark.parametrize("type_", ["Convolution", "Deconvolution"])
@pytest.mark.parametrize("geometry", [
    dict(c=3, h=17, w=15, m=8, k=3, s=2, p=1, d=1, g=1, bias="true"),
    dict(c=4, h=9, w=10, m=6, k=3, s=1, p=2, d=2, g=2, bias="true"),
    dict(c=16, h=8, w=8, m=16, k=3, s=1, p=1, d=1, g=16, bias="false"),     # depthwise
    dict(c=32, h=7, w=7, m=48, k=1, s=1, p=0, d=1, g=1, bias="true"),       # pointwise
    dict(c=5, h=12, w=11, m=7, k=5, s=3, p=2, d=1, g=1, bias="true"),       # stride remainder
])
def test_convolution_equals_the_numpy_engine(tmp_path, type_, geometry):
    rng = np.random.RandomState(0)
    net = _compare(tmp_path, CONV % dict(geometry, type=type_),
                   {"data": rng.randn(2, geometry["c"], geometry["h"], geometry["w"])})
    assert net.layer_dict["conv"].engine == "dnnl"


def test_3d_convolution_equals_the_numpy_engine(tmp_path):
    text = _input("data", (2, 3, 5, 6, 7)) + '''force_backward: true
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 weight_filler { type: "gaussian" std: 0.3 } } }
'''
    net = _compare(tmp_path, text, {"data": np.random.RandomState(0).randn(2, 3, 5, 6, 7)})
    assert net.layer_dict["conv"].engine == "dnnl"


POOL = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 16 dim: %(h)d dim: %(w)d } } }
force_backward: true
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
  pooling_param { pool: %(pool)s %(geometry)s } }
'''


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("h, w, geometry", [
    (13, 13, "kernel_size: 3 stride: 2"),                   # ceil: the last window hangs over
    (12, 12, "kernel_size: 3 stride: 2"),
    (12, 11, "kernel_size: 3 stride: 2 pad: 1"),            # AVE: Caffe divides by the padded window
    (7, 7, "kernel_size: 2 stride: 2 pad: 1"),
    (10, 10, "kernel_size: 4 stride: 3 pad: 2"),
    (9, 9, "kernel_size: 3 stride: 2 round_mode: FLOOR"),
    (6, 5, "global_pooling: true"),
])
def test_pooling_equals_the_numpy_engine(tmp_path, pool, h, w, geometry):
    x = np.random.RandomState(0).randn(2, 16, h, w)
    x[0, 0, :4, :4] = 0.0          # ties: the first maximum takes the gradient, as in Caffe
    _compare(tmp_path, POOL % dict(h=h, w=w, pool=pool, geometry=geometry), {"data": x})


def test_ave_pooling_divisor_caffe_has_and_onednn_lacks_stays_on_numpy(tmp_path):
    # pad 1 and a ceil window past the padding: neither of oneDNN's AVE rules
    text = POOL % dict(h=12, w=12, pool="AVE", geometry="kernel_size: 3 stride: 2 pad: 1")
    net = _compare(tmp_path, text, {"data": np.random.RandomState(0).randn(2, 16, 12, 12)})
    assert net.layer_dict["pool"].engine == "numpy"


LRN = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: %(c)d dim: 7 dim: 6 } } }
force_backward: %(fb)s
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn"
  lrn_param { local_size: %(n)d alpha: 0.05 beta: 0.75 k: 2.5 norm_region: %(region)s } }
'''


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
@pytest.mark.parametrize("c, n", [(32, 5), (16, 3), (5, 3)])
@pytest.mark.parametrize("fb", ["true", "false"])
def test_lrn_equals_the_numpy_engine(tmp_path, region, c, n, fb):
    x = 3 * np.random.RandomState(0).randn(2, c, 7, 6)
    _compare(tmp_path, LRN % dict(c=c, n=n, region=region, fb=fb), {"data": x}, backward=fb == "true")


NEURON = _input("data", (2, 16, 5, 4)) + '''force_backward: true
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "n" type: "%(type)s" bottom: "conv" top: "%(top)s" %(param)s }
'''


@pytest.mark.parametrize("type_, param", [
    ("ReLU", ""), ("ReLU", "relu_param { negative_slope: 0.1 }"), ("Sigmoid", ""), ("TanH", ""),
    ("ELU", "elu_param { alpha: 0.7 }"), ("AbsVal", ""), ("BNLL", ""), ("Swish", "swish_param { beta: 1.5 }"),
])
@pytest.mark.parametrize("in_place", [True, False])
def test_neurons_equal_the_numpy_engine(tmp_path, type_, param, in_place):
    text = NEURON % dict(type=type_, param=param, top="conv" if in_place else "n")
    _compare(tmp_path, text, {"data": np.random.RandomState(0).randn(2, 16, 5, 4)})


BN = _input("data", (4, 16, 5, 5)) + '''force_backward: true
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { %(param)s } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
'''


@pytest.mark.parametrize("param", ["use_global_stats: false", "use_global_stats: true"])
def test_batchnorm_equals_the_numpy_engine(tmp_path, param):
    x = 2 + 3 * np.random.RandomState(0).randn(4, 16, 5, 5)

    def stats(net):
        net.params["bn"][0].data[...] = np.linspace(-1, 1, 16)
        net.params["bn"][1].data[...] = np.linspace(0.5, 2, 16)
        net.params["bn"][2].data[...] = 2
    ref, _ = _run(tmp_path, BN % dict(param=param), "numpy", {"data": x}, caffe.TRAIN, prepare=stats)
    got, net = _run(tmp_path, BN % dict(param=param), "dnnl", {"data": x}, caffe.TRAIN, prepare=stats)
    for key in ref:
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-4, err_msg=key)
    assert net.layer_dict["bn"].engine == "dnnl"


IP = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: %(n)d dim: 6 dim: 4 dim: 3 } } }
force_backward: true
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 10 axis: %(axis)d transpose: %(t)s
    weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }
'''


@pytest.mark.parametrize("n", [1, 5])
@pytest.mark.parametrize("axis", [1, 2])
@pytest.mark.parametrize("t", ["false", "true"])
def test_inner_product_equals_the_numpy_engine(tmp_path, n, axis, t):
    _compare(tmp_path, IP % dict(n=n, axis=axis, t=t), {"data": np.random.RandomState(0).randn(n, 6, 4, 3)})


MERGE = _input("data", (2, 3, 8, 8)) + '''force_backward: true
layer { name: "a" type: "Convolution" bottom: "data" top: "a"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "b" type: "Convolution" bottom: "data" top: "b"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 32 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" bottom: "c" top: "cat" }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" eltwise_param { %(eltwise)s } }
'''


@pytest.mark.parametrize("eltwise", ["operation: SUM", "operation: SUM coeff: 0.5 coeff: -2",
                                     "operation: PROD", "operation: MAX"])
def test_concat_and_eltwise_equal_the_numpy_engine(tmp_path, eltwise):
    _compare(tmp_path, MERGE % dict(eltwise=eltwise), {"data": np.random.RandomState(0).randn(2, 3, 8, 8)})


def test_engine_caffe_is_a_gpu_hint_not_numpy(tmp_path):
    """Published prototxts say `engine: CAFFE` to keep cuDNN off a layer
    (MobileNet's depthwise convolutions); on the CPU, Caffe has one engine."""
    text = (CONV % dict(c=3, h=9, w=9, m=4, k=3, s=1, p=1, d=1, g=1, bias="true", type="Convolution")).replace(
        "convolution_param {", "convolution_param { engine: CAFFE")
    _, net = _run(tmp_path, text, "dnnl", {"data": np.ones((2, 3, 9, 9))})
    assert net.layer_dict["conv"].engine == "dnnl"


@pytest.mark.parametrize("how", ["call", "env"])
@pytest.mark.parametrize("by", ["conv", "Convolution"])
def test_layers_forced_onto_numpy_by_name_or_type(tmp_path, monkeypatch, how, by):
    text = CONV % dict(c=3, h=9, w=9, m=4, k=3, s=1, p=1, d=1, g=1, bias="true", type="Convolution")
    if how == "call":
        backend.set_numpy_layers([by])
    else:
        monkeypatch.setenv("PYCAFFE_LITE_NUMPY_LAYERS", "pool," + by)
        backend._numpy_layers["set"] = None
    try:
        _, net = _run(tmp_path, text, "dnnl", {"data": np.ones((2, 3, 9, 9))})
        assert net.layer_dict["conv"].engine == "numpy"
    finally:
        backend.set_numpy_layers([])
    _, net = _run(tmp_path, text, "dnnl", {"data": np.ones((2, 3, 9, 9))})
    assert net.layer_dict["conv"].engine == "dnnl"


# -- blocked layouts and kept weights are invisible --------------------------
CHAIN = _input("data", (1, 3, 16, 16)) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
'''


def _reference_blobs(tmp_path, text, x, prepare=None):
    backend.set_cpu_engine("numpy")
    caffe.set_random_seed(3)
    net = _net(tmp_path, text, name="ref.prototxt")
    if prepare:
        prepare(net)
    net.forward(data=x)
    backend.set_cpu_engine("dnnl")
    return {k: b.data.copy() for k, b in net.blobs.items()}


def _chain(tmp_path):
    """An input and CHAIN on oneDNN, weights from seed 3."""
    backend.set_cpu_engine("dnnl")
    caffe.set_random_seed(3)
    return np.random.RandomState(0).rand(1, 3, 16, 16).astype(np.float32), _net(tmp_path, CHAIN)


def test_views_held_across_forwards_stay_live(tmp_path):
    x, net = _chain(tmp_path)
    held = net.blobs["conv1"].data           # a view taken before any forward
    net.forward(data=x)
    expected = _reference_blobs(tmp_path, CHAIN, x)
    np.testing.assert_allclose(held, expected["conv1"], rtol=1e-5, atol=1e-5)
    for name, blob in net.blobs.items():
        np.testing.assert_allclose(blob.data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_blobs_left_blocked_are_reordered_when_read(tmp_path):
    x, net = _chain(tmp_path)
    net.forward(data=x)
    blocked = [k for k, b in net.blobs.items() if b.engine_data().layout() is not None]
    assert blocked, "no blob was left in a blocked layout: the test checks nothing"
    expected = _reference_blobs(tmp_path, CHAIN, x)
    for name in blocked:
        np.testing.assert_allclose(net.blobs[name].data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)
        assert net.blobs[name].engine_data().layout() is None


def test_weights_written_between_forwards_are_used(tmp_path):
    x, net = _chain(tmp_path)
    net.forward(data=x)
    net.forward(data=x)                      # the reordered weights are kept now
    # through a fresh view ...
    net.params["conv2"][0].data[...] *= -1
    first = net.forward(data=x)["ip"].copy()
    # ... and through a view held since before the forwards
    held = net.params["conv1"][0].data
    net.forward(data=x)
    held[...] *= 0.5
    second = net.forward(data=x)["ip"].copy()

    def flip(ref):
        ref.params["conv2"][0].data[...] *= -1
    np.testing.assert_allclose(first, _reference_blobs(tmp_path, CHAIN, x, flip)["ip"], rtol=1e-5, atol=1e-5)

    def both(ref):
        flip(ref)
        ref.params["conv1"][0].data[...] *= 0.5
    np.testing.assert_allclose(second, _reference_blobs(tmp_path, CHAIN, x, both)["ip"], rtol=1e-5, atol=1e-5)


# -- fusion ------------------------------------------------------------------
RESIDUAL = _input("data", (1, 16, 10, 10)) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 bias_term: false
    weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" relu_param { negative_slope: 0.2 } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "conv2" top: "sum" }
layer { name: "relu3" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
'''


def _statistics(net):
    rng = np.random.RandomState(4)
    net.params["bn1"][0].data[...] = rng.randn(16)
    net.params["bn1"][1].data[...] = rng.rand(16) + 0.5
    net.params["bn1"][2].data[...] = 0.5
    net.params["scale1"][0].data[...] = rng.randn(16)
    net.params["scale1"][1].data[...] = rng.randn(16)


def test_fused_chains_leave_what_caffe_leaves(tmp_path):
    x = np.random.RandomState(0).randn(1, 16, 10, 10).astype(np.float32)
    expected = _reference_blobs(tmp_path, RESIDUAL, x, _statistics)
    backend.set_cpu_engine("dnnl")
    caffe.set_random_seed(3)
    net = _net(tmp_path, RESIDUAL)
    _statistics(net)
    calls = []
    from pycaffe_lite import fusion
    original = fusion.ConvChain.forward
    try:
        fusion.ConvChain.forward = lambda self: calls.append(self.head) or original(self)
        net.forward(data=x)
    finally:
        fusion.ConvChain.forward = original
    heads = [net._layer_names.index("conv1"), net._layer_names.index("conv2")]
    assert calls == heads, "the two convolution chains did not run fused"
    assert net._fused
    for name, blob in net.blobs.items():
        np.testing.assert_allclose(blob.data, expected[name], rtol=1e-5, atol=1e-5, err_msg=name)

    # statistics changed after a forward are folded in again
    net.params["bn1"][0].data[...] += 1
    out = net.forward(data=x)["ip"].copy()

    def shifted(ref):
        _statistics(ref)
        ref.params["bn1"][0].data[...] += 1
    np.testing.assert_allclose(out, _reference_blobs(tmp_path, RESIDUAL, x, shifted)["ip"], rtol=1e-5, atol=1e-5)


def test_backward_after_a_fused_forward_equals_the_unfused_one(tmp_path):
    x = np.random.RandomState(0).randn(1, 16, 10, 10).astype(np.float32)
    dy = np.random.RandomState(1).randn(1, 4).astype(np.float32)
    results = []
    for engine in ("numpy", "dnnl"):
        backend.set_cpu_engine(engine)
        caffe.set_random_seed(3)
        net = _net(tmp_path, RESIDUAL, name=engine + ".prototxt")
        _statistics(net)
        net.forward(data=x)
        net.backward(ip=dy)
        results.append({k: [p.diff.copy() for p in v] for k, v in net.params.items()})
    for name in results[0]:
        for a, b in zip(results[0][name], results[1][name]):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5, err_msg=name)


def test_callbacks_and_partial_forwards_see_every_layer(tmp_path):
    x = np.random.RandomState(0).randn(1, 16, 10, 10).astype(np.float32)
    backend.set_cpu_engine("dnnl")
    caffe.set_random_seed(3)
    net = _net(tmp_path, RESIDUAL)
    _statistics(net)
    # a forward that stops inside a chain leaves that layer's own output
    net.blobs["data"].data[...] = x
    net.forward(end="bn1")
    backend.set_cpu_engine("numpy")
    caffe.set_random_seed(3)
    ref = _net(tmp_path, RESIDUAL, name="ref.prototxt")
    _statistics(ref)
    ref.blobs["data"].data[...] = x
    ref.forward(end="bn1")
    np.testing.assert_allclose(net.blobs["conv1"].data, ref.blobs["conv1"].data, rtol=1e-5, atol=1e-5)
    backend.set_cpu_engine("dnnl")
    seen = []
    net.after_forward(seen.append)
    net.forward(data=x)
    assert seen == list(range(len(net.layers)))


# -- determinism, the engine's choice, its absence ---------------------------
def test_same_inputs_same_bits(tmp_path):
    x = np.random.RandomState(0).randn(4, 3, 16, 16).astype(np.float32)
    runs = []
    for _ in range(2):
        backend.set_cpu_engine("dnnl")
        caffe.set_random_seed(3)
        net = _net(tmp_path, "force_backward: true\n" + CHAIN.replace("dim: 1 dim: 3", "dim: 4 dim: 3"))
        net.forward(data=x)
        net.blobs["ip"].diff[...] = 1
        net.backward_from_to(len(net.layers) - 1, 0)
        runs.append([b.data.copy() for b in net.blobs.values()] + [p.diff.copy() for v in net.params.values()
                                                                     for p in v])
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)


def test_set_cpu_engine_takes_only_the_two_engines():
    with pytest.raises(ValueError, match="dnnl.*numpy"):
        caffe.set_cpu_engine("mkl")
    caffe.set_cpu_engine("numpy")
    assert caffe.cpu_engine() == "numpy"
    caffe.set_cpu_engine("dnnl")
    assert caffe.cpu_engine() == "dnnl"


SCRIPT = '''
import numpy as np, pycaffe_lite as caffe
net = caffe.Net(%r, caffe.TEST)
net.forward(data=np.ones((1, 3, 16, 16), np.float32))
print("engine", caffe.cpu_engine(), sorted({l.engine for l in net.layers}))
'''


@pytest.mark.parametrize("env, engine, line", [
    ({"PYCAFFE_LITE_DNNL_LIBRARY": "/nonexistent/libdnnl.so.3"}, "numpy", "oneDNN is unavailable"),
    ({"PYCAFFE_LITE_CPU_ENGINE": "numpy"}, "numpy", "PYCAFFE_LITE_CPU_ENGINE=numpy"),
    ({}, "dnnl", "CPU engine: oneDNN"),
])
def test_engine_choice_and_a_missing_library(tmp_path, env, engine, line):
    model = tmp_path / "chain.prototxt"
    model.write_text(CHAIN)
    full = dict(os.environ, **env)
    full.pop("GLOG_minloglevel", None)
    if "PYCAFFE_LITE_CPU_ENGINE" not in env:
        full.pop("PYCAFFE_LITE_CPU_ENGINE", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT % str(model)], capture_output=True, text=True, env=full,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0, out.stderr
    assert "engine %s" % engine in out.stdout
    assert ("'dnnl'" in out.stdout) == (engine == "dnnl")
    assert line in out.stderr
    assert "Traceback" not in out.stderr


def test_set_num_threads_caps_every_pool_and_remakes_primitives(tmp_path):
    from threadpoolctl import threadpool_info
    from pycaffe_lite.kernels import cpu
    before = caffe.num_threads()
    x, net = _chain(tmp_path)
    first = net.forward(data=x)["ip"].copy()
    op = net.layer_dict["conv2"]._dnnl_ops[next(iter(net.layer_dict["conv2"]._dnnl_ops))]
    try:
        caffe.set_num_threads(1)
        pools = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
        assert pools.get("openmp") == 1 and pools.get("blas") == 1 and cpu.workers() == 1
        assert caffe.num_threads() == 1
        again = net.forward(data=x)["ip"].copy()
        remade = net.layer_dict["conv2"]._dnnl_ops
        assert all(o is not op for o in remade.values()), "primitives made for 2 threads were kept"
        np.testing.assert_allclose(again, first, rtol=1e-5, atol=1e-6)
        with pytest.raises(ValueError):
            caffe.set_num_threads(0)
    finally:
        caffe.set_num_threads(before)


TRAIN_BN = _input("data", (4, 16, 6, 6)) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 16 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true
  filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" loss_weight: 1
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
'''


def _train_step(tmp_path, engine, backward_start=None, spy=None):
    backend.set_cpu_engine(engine)
    caffe.set_random_seed(3)
    net = _net(tmp_path, TRAIN_BN, caffe.TRAIN, name=engine + ".prototxt")
    x = np.random.RandomState(0).randn(4, 16, 6, 6).astype(np.float32)
    if spy is not None:
        net.after_backward(spy.append)
    for _ in range(2):                 # twice: the running statistics move
        net.forward(data=x)
        net.blobs["ip"].diff[...] = np.random.RandomState(1).randn(4, 4)
        net._mark_param_diffs_clear()
        if backward_start is None:
            net.backward_from_to(len(net.layers) - 1, 0)
        else:
            net.backward(start=backward_start)
    out = {"data/" + k: b.data.copy() for k, b in net.blobs.items()}
    out.update(("diff/" + k, b.diff.copy()) for k, b in net.blobs.items())
    out.update(("param/%s/%d" % (k, i), p.data.copy()) for k, v in net.params.items() for i, p in enumerate(v))
    out.update(("param_diff/%s/%d" % (k, i), p.diff.copy()) for k, v in net.params.items() for i, p in enumerate(v))
    return out, net


@pytest.mark.parametrize("start", [None, "scale1"])
def test_batchnorm_scale_relu_train_as_one_primitive_like_three_layers(tmp_path, start):
    from pycaffe_lite import fusion
    ran = []
    original = fusion.NormChain.backward
    fusion.NormChain.backward = lambda self: ran.append(self.head) or original(self)
    try:
        got, net = _train_step(tmp_path, "dnnl", start)
    finally:
        fusion.NormChain.backward = original
    ref, _ = _train_step(tmp_path, "numpy", start)
    # whole, the chain's backward ran fused; cut by the range, layer by layer
    assert ran == ([] if start else [net._layer_names.index("bn1")] * 2)
    for key in ref:
        if start and key.startswith("diff/ip"):
            continue
        np.testing.assert_allclose(got[key], ref[key], rtol=1e-4, atol=1e-4 * max(1, np.abs(ref[key]).max()),
                                   err_msg=key)


def test_backward_callbacks_see_every_layer_of_a_fused_chain(tmp_path):
    seen = []
    _, net = _train_step(tmp_path, "dnnl", spy=seen)
    assert seen[-len(net.layers):] == list(range(len(net.layers) - 1, -1, -1))


# -- chains through tops of their own (MobileNet v2's BatchNorm) ---------------
V2_CHAIN = _input("data", (2, 4, 9, 9)) + '''
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1/bn" batch_norm_param { use_global_stats: true } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1/bn" top: "conv1/bn" scale_param { bias_term: true
  filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1/bn" top: "conv1/bn" }
layer { name: "conv2" type: "ConvolutionDepthwise" bottom: "conv1/bn" top: "conv2"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 bias_term: false weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "conv2/bn" type: "BatchNorm" bottom: "conv2" top: "conv2/bn" batch_norm_param { use_global_stats: true } }
layer { name: "conv2/scale" type: "Scale" bottom: "conv2/bn" top: "conv2/scale" scale_param { bias_term: true } }
'''


def _bn_stats(net):
    rng = np.random.RandomState(1)
    for name in ("conv1/bn", "conv2/bn"):
        blobs = net.params[name]
        blobs[0].data[...] = rng.randn(6) * 0.2
        blobs[1].data[...] = rng.rand(6) + 0.5
        blobs[2].data[...] = 1.0


def test_a_chain_through_tops_of_its_own_is_fused_and_its_blobs_made_on_reading(tmp_path):
    x = np.random.RandomState(0).randn(2, 4, 9, 9)
    ref, _ = _run(tmp_path, V2_CHAIN, "numpy", {"data": x}, backward=False, prepare=_bn_stats)
    backend.set_cpu_engine("dnnl")
    caffe.set_random_seed(3)
    net = _net(tmp_path, V2_CHAIN, caffe.TEST)
    _bn_stats(net)
    net.forward(data=x)
    fused = [c for c in net._fused if getattr(c, "skipped", ())]
    assert [(c.head, [b for b, _ in c.skipped]) for c in fused] == [(1, ["conv1"]), (5, ["conv2", "conv2/bn"])]
    # the blobs the chains skipped hold nothing yet: they are made when read
    assert net.blobs["conv2/bn"]._stale is not None
    for name in net.blobs:
        np.testing.assert_allclose(net.blobs[name].data, ref["data/" + name], rtol=0, atol=2e-5, err_msg=name)
    assert net.blobs["conv2/bn"]._stale is None


def test_a_blob_written_between_two_forwards_is_seen_by_the_next(tmp_path):
    backend.set_cpu_engine("dnnl")
    caffe.set_random_seed(3)
    net = _net(tmp_path, V2_CHAIN, caffe.TEST)
    _bn_stats(net)
    rng = np.random.RandomState(5)
    a, b = rng.randn(2, 4, 9, 9), rng.randn(2, 4, 9, 9)
    first = net.forward(data=a)["conv2/scale"].copy()
    net.blobs["data"].data[...] = b
    second = net.forward()["conv2/scale"].copy()
    again = net.forward(data=a)["conv2/scale"]
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(again, first)

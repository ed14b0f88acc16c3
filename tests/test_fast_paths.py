"""The CPU fast paths give the same numbers as the general code: pointwise
convolution without im2col, MAX pooling taken rows first, and
BatchNorm/Scale/Eltwise writing straight into their tops (bit for bit, but
for sums taken in another order, which agree to rounding)."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.kernels import cpu
from pycaffe_lite.layers import conv
from pycaffe_lite.layers.pooling import pooled_size

# These are the numpy engine's own paths.
pytestmark = pytest.mark.usefixtures("numpy_engine")

POINTWISE = """
input: "data" input_shape { dim: %d dim: 4 dim: %d dim: %d }
force_backward: true
layer { name: "pw" type: "Convolution" bottom: "data" top: "pw"
  convolution_param { num_output: 6 kernel_size: 1 group: %d
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
"""


def _run_pointwise(tmp_path, n, hw, group, direct_min_area, monkeypatch):
    monkeypatch.setattr(conv.ConvolutionLayer, "DIRECT_MIN_AREA", direct_min_area)
    path = tmp_path / ("pw%d.prototxt" % direct_min_area)
    path.write_text(POINTWISE % (n, hw, hw, group))
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(1)
    x = rng.randn(n, 4, hw, hw).astype(np.float32)
    dy = rng.randn(n, 6, hw, hw).astype(np.float32)
    net.forward(data=x)
    net.clear_param_diffs()
    net.backward(pw=dy)
    return (net.blobs["pw"].data.copy(), net.blobs["data"].diff.copy(),
            net.params["pw"][0].diff.copy(), net.params["pw"][1].diff.copy())


@pytest.mark.parametrize("n,hw,group", [(1, 5, 1), (3, 17, 1), (3, 17, 2), (2, 4, 2)])
def test_pointwise_convolution_direct_equals_im2col(tmp_path, monkeypatch, n, hw, group):
    direct = _run_pointwise(tmp_path, n, hw, group, 1, monkeypatch)           # every layer direct
    general = _run_pointwise(tmp_path, n, hw, group, 10 ** 9, monkeypatch)    # only batch 1 direct
    if n == 1:
        return                                                               # both direct: nothing to compare
    # the top and the bottom diff are the same products, bit for bit; the
    # parameter diffs are summed image by image (as Caffe does) instead of in
    # one GEMM over the batch, so they agree to rounding
    np.testing.assert_array_equal(direct[0], general[0])
    np.testing.assert_array_equal(direct[1], general[1])
    for a, b in zip(direct[2:], general[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.abs(direct[1]).max() > 0 and np.abs(direct[2]).max() > 0


def _max_pool_by_taps(x, kernel, pad, stride, out_hw):
    """Every tap in row-major order over the -inf-padded input."""
    (kh, kw), (ph, pw), (sh, sw), (oh, ow) = kernel, pad, stride, out_hw
    n, c, h, w = x.shape
    big = np.full((n, c, h + 2 * ph + kh + sh * oh, w + 2 * pw + kw + sw * ow), -np.inf, np.float32)
    big[:, :, ph:ph + h, pw:pw + w] = x
    y = np.full((n, c, oh, ow), -np.inf, np.float32)
    for i in range(kh):
        for j in range(kw):
            np.maximum(y, big[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw], out=y)
    return y


def test_max_pool_rows_first_equals_every_tap():
    rng = np.random.RandomState(7)
    checked = 0
    for _ in range(200):
        h, w = rng.randint(1, 12, size=2)
        kh, kw = rng.randint(1, 5, size=2)
        sh, sw = rng.randint(1, 4, size=2)
        ph, pw = rng.randint(0, kh), rng.randint(0, kw)
        if h + 2 * ph < kh or w + 2 * pw < kw:
            continue
        out = (pooled_size(h, kh, ph, sh), pooled_size(w, kw, pw, sw))
        x = rng.randint(-3, 3, size=(2, 3, h, w)).astype(np.float32)        # ties everywhere
        geometry = ((kh, kw), (ph, pw), (sh, sw), out)
        np.testing.assert_array_equal(cpu.max_pool_forward(x, *geometry), _max_pool_by_taps(x, *geometry))
        checked += 1
    assert checked > 100


BN_SCALE = """
input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 5 }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" batch_norm_param { use_global_stats: true } }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "data" bottom: "data" top: "sum" }
"""


def test_global_batchnorm_divides_by_the_deviation_and_scale_runs_in_place(tmp_path):
    path = tmp_path / "bn.prototxt"
    path.write_text(BN_SCALE)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(3)
    mean, var, factor = rng.randn(3).astype(np.float32), rng.rand(3).astype(np.float32) + 0.5, np.float32(2.5)
    net.params["bn"][0].data[...] = mean
    net.params["bn"][1].data[...] = var
    net.params["bn"][2].data[...] = factor
    gamma, beta = rng.rand(3).astype(np.float32) + 0.5, rng.randn(3).astype(np.float32)
    net.params["scale"][0].data[...] = gamma
    net.params["scale"][1].data[...] = beta
    x = rng.randn(2, 3, 4, 5).astype(np.float32)
    net.forward(data=x)
    f = np.float32(1) / factor
    shape = (1, 3, 1, 1)
    std = np.sqrt(var * f + np.float32(1e-5)).reshape(shape)
    normalized = (x - (mean * f).reshape(shape)) / std                   # Caffe: subtract, then divide
    expected = normalized * gamma.reshape(shape) + beta.reshape(shape)
    np.testing.assert_array_equal(net.blobs["data"].data, expected)
    np.testing.assert_array_equal(net.blobs["sum"].data, expected + expected)
    # nothing runs backward here, so the in-place Scale kept no copy of its input
    assert net.layer_dict["scale"]._x is None


DEPTHWISE = """
input: "data" input_shape { dim: 2 dim: 6 dim: 11 dim: 9 }
force_backward: true
layer { name: "dw" type: "Convolution" bottom: "data" top: "dw"
  convolution_param { num_output: 6 group: 6 kernel_h: 3 kernel_w: 2 stride: %d pad: %d dilation: %d
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
"""


@pytest.mark.parametrize("stride,pad,dilation", [(1, 1, 1), (2, 1, 1), (2, 0, 2)])
def test_depthwise_convolution_equals_grouped_gemm(tmp_path, monkeypatch, stride, pad, dilation):
    path = tmp_path / "dw.prototxt"
    path.write_text(DEPTHWISE % (stride, pad, dilation))
    rng = np.random.RandomState(2)
    results = []
    for depthwise in (True, False):
        monkeypatch.setattr(conv.ConvolutionLayer, "_depthwise", lambda self, on=depthwise: on)
        caffe.set_random_seed(9)
        net = caffe.Net(str(path), caffe.TEST)
        x = rng.randn(2, 6, 11, 9).astype(np.float32) if not results else results[0][0]
        net.forward(data=x)
        dy = rng.randn(*net.blobs["dw"].shape).astype(np.float32) if not results else results[0][1]
        net.clear_param_diffs()
        net.backward(dw=dy)
        net.backward(dw=dy)                   # parameter diffs accumulate, as Caffe's do
        results.append((x, dy, net.blobs["dw"].data.copy(), net.blobs["data"].diff.copy(),
                        net.params["dw"][0].diff.copy(), net.params["dw"][1].diff.copy()))
    for a, b in zip(results[0][2:], results[1][2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert np.abs(a).max() > 0

"""Every CUDA kernel, on every CI run, without a GPU: it compiles with nvcc for
sm_90, and compiled for the CPU (tests/cuda_emulation.py) it matches its numpy
twin in kernels/cpu.py on shapes that hit the edges. The golden layer cases
also run through the emulated kernel table."""
import os
import shutil
import subprocess

import numpy as np
import pytest

from pycaffe_lite import backend
from pycaffe_lite.kernels import cpu, gpu
from cuda_emulation import emulated_ops, kernel_signatures
from conftest import golden_cases

NVCC = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)


@pytest.mark.parametrize("source", gpu.SOURCES)
def test_kernel_compiles_with_nvcc(source, tmp_path):
    if NVCC is None:
        pytest.skip("nvcc is not installed on this machine; the emulation tests below still run every kernel")
    cu = tmp_path / source
    cu.write_text(gpu.read_source("common.cuh") + gpu.read_source(source))
    res = subprocess.run([NVCC, "--ptx", "-arch=sm_90", "-o", str(tmp_path / "out.ptx"), str(cu)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    ptx = (tmp_path / "out.ptx").read_text()
    for name, _ in kernel_signatures(gpu.read_source(source)):
        assert ".entry %s(" % name in ptx or ".entry %s\n" % name in ptx or name in ptx


@pytest.fixture(scope="module")
def ops():
    return emulated_ops()


def rand(*shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(np.float32)


CONV = [  # x shape, kernel, pad, stride, dilation
    ((2, 3, 7, 9), (3, 3), (1, 1), (1, 1), (1, 1)),
    ((1, 2, 10, 11), (5, 3), (2, 0), (2, 3), (1, 1)),
    ((2, 4, 9, 9), (3, 3), (1, 1), (1, 1), (2, 2)),
    ((3, 1, 8, 5), (2, 4), (0, 3), (3, 1), (2, 1)),
]


def conv_out(shape, k, p, s, d):
    return tuple((shape[2 + i] + 2 * p[i] - (d[i] * (k[i] - 1) + 1)) // s[i] + 1 for i in range(2))


@pytest.mark.parametrize("shape,k,p,s,d", CONV)
def test_im2col_and_col2im(ops, shape, k, p, s, d):
    x = rand(*shape)
    out = conv_out(shape, k, p, s, d)
    cols = ops.im2col(x, k, p, s, d, out)
    np.testing.assert_array_equal(cols, cpu.im2col(x, k, p, s, d, out))
    c = rand(*cols.shape, seed=1)
    np.testing.assert_allclose(ops.col2im(c, shape, k, p, s, d, out), cpu.col2im(c, shape, k, p, s, d, out),
                               rtol=1e-6, atol=1e-6)


POOL = [  # x shape, kernel, pad, stride
    ((2, 3, 8, 10), (3, 3), (0, 0), (2, 2)),     # ceil rounding, partial last window
    ((2, 3, 7, 9), (3, 3), (1, 1), (2, 2)),      # pad
    ((2, 3, 5, 7), (2, 2), (1, 1), (2, 2)),      # a last window that would start in the padding
    ((1, 2, 6, 7), (3, 2), (1, 0), (1, 2)),      # rectangular
    ((2, 4, 7, 6), (7, 6), (0, 0), (1, 1)),      # global
]


def pool_out(shape, k, p, s):
    from pycaffe_lite.layers.pooling import pooled_size
    return tuple(pooled_size(shape[2 + i], k[i], p[i], s[i]) for i in range(2))


@pytest.mark.parametrize("shape,k,p,s", POOL)
def test_max_pooling(ops, shape, k, p, s):
    out = pool_out(shape, k, p, s)
    x = np.maximum(rand(*shape), 0)           # after a ReLU: whole windows tie at 0
    x[0, 0, :2, :2] = 1.5                      # and an explicit tie inside one window
    y = ops.max_pool_forward(x, k, p, s, out)
    np.testing.assert_array_equal(y, cpu.max_pool_forward(x, k, p, s, out))
    np.testing.assert_array_equal(ops.max_pool_argmax(x, y, k, p, s, out), cpu.max_pool_argmax(x, y, k, p, s, out))
    dy = rand(*y.shape, seed=2)
    np.testing.assert_allclose(ops.max_pool_backward(dy, x, y, k, p, s, out),
                               cpu.max_pool_backward(dy, x, y, k, p, s, out), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,k,p,s", POOL)
def test_ave_pooling(ops, shape, k, p, s):
    out = pool_out(shape, k, p, s)
    x = rand(*shape)
    np.testing.assert_allclose(ops.ave_pool_forward(x, k, p, s, out), cpu.ave_pool_forward(x, k, p, s, out),
                               rtol=1e-6, atol=1e-7)
    dy = rand(*((shape[0], shape[1]) + out), seed=3)
    np.testing.assert_allclose(ops.ave_pool_backward(dy, shape, k, p, s, out),
                               cpu.ave_pool_backward(dy, shape, k, p, s, out), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,size", [((2, 7, 5, 6), 5), ((2, 2, 6, 5), 3), ((1, 3, 4, 4), 5), ((2, 1, 3, 3), 3)])
def test_lrn_across_channels(ops, shape, size):
    x = rand(*shape)
    y, scale = ops.lrn_across_forward(x, size, 0.7, 0.75, 1.5)
    y0, scale0 = cpu.lrn_across_forward(x, size, 0.7, 0.75, 1.5)
    np.testing.assert_allclose(scale, scale0, rtol=1e-6)
    np.testing.assert_allclose(y, y0, rtol=2e-6, atol=1e-7)
    dy = rand(*shape, seed=4)
    np.testing.assert_allclose(ops.lrn_across_backward(dy, x, y0, scale0, size, 0.7, 0.75),
                               cpu.lrn_across_backward(dy, x, y0, scale0, size, 0.7, 0.75), rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("ignore", [None, 2])
def test_softmax_loss(ops, ignore):
    rng = np.random.RandomState(5)
    logits = rng.randn(3, 5, 4).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    label = rng.randint(0, 5, size=(3, 4)).astype(np.float32)
    label[0, :2] = 2
    loss, valid = ops.softmax_loss_forward(prob, label, ignore)
    loss0, valid0 = cpu.softmax_loss_forward(prob, label, ignore)
    assert float(valid) == valid0
    np.testing.assert_allclose(float(loss), loss0, rtol=1e-6)
    np.testing.assert_array_equal(ops.softmax_loss_backward(prob, label, ignore),
                                  cpu.softmax_loss_backward(prob, label, ignore))
    bad = label.copy()
    bad[1, 1] = 7
    assert np.isnan(float(ops.softmax_loss_forward(prob, bad, ignore)[0])), "a label out of range must show"


@pytest.fixture
def emulated_backend(ops, numpy_engine):
    """Layers use the emulated GPU kernel table instead of the numpy one."""
    saved = backend._state["ops"]
    backend._state["ops"] = ops
    yield ops
    backend._state["ops"] = saved


@pytest.mark.parametrize("name", golden_cases("layers"))
def test_golden_layer_case_through_the_cuda_kernels(name, emulated_backend):
    from test_golden_layers import test_layer_case
    before = dict(emulated_backend._kernel.calls)
    test_layer_case(name)
    used = {k for k, v in emulated_backend._kernel.calls.items() if v > before.get(k, 0)}
    kernels = {"conv_": "im2col", "deconv_": "col2im", "pool_max": "max_pool_forward", "pool_ave": "ave_pool_forward",
               "pool_global_max": "max_pool_forward", "lrn_across": "lrn_scale", "softmaxloss": "softmax_loss_forward",
               "caffenet_small": "lrn_diff", "conv_nd": "im2col_nd", "deconv_nd": "col2im_nd", "im2col_": "col2im",
               "tile": "tile_backward", "batch_reindex": "batch_reindex_backward", "embed": "embed_backward",
               "argmax": "argmax_topk", "lstm": "lstm_unit_backward", "spp_max": "max_pool_backward",
               "spp_ave": "ave_pool_backward"}
    matching = [prefix for prefix in kernels if name.startswith(prefix)]
    if matching:
        kernel = kernels[max(matching, key=len)]
        assert kernel in used, "%s did not run the %s kernel" % (name, kernel)


ND = [  # x shape, kernel, pad, stride, dilation
    ((2, 3, 5, 6, 5), (3, 3, 3), (1, 1, 1), (2, 2, 2), (1, 1, 1)),
    ((1, 2, 6, 5, 7), (3, 2, 3), (1, 0, 1), (1, 2, 2), (1, 1, 2)),
    ((2, 2, 9), (4,), (2,), (3,), (2,)),                       # 1-D
    ((1, 1, 3, 4, 3, 4), (2, 2, 1, 3), (0, 1, 0, 1), (1, 2, 1, 1), (1, 1, 1, 1)),   # 4 spatial axes
]


@pytest.mark.parametrize("shape,k,p,s,d", ND)
def test_im2col_nd_and_col2im_nd(ops, shape, k, p, s, d):
    x = rand(*shape)
    out = tuple((shape[2 + i] + 2 * p[i] - (d[i] * (k[i] - 1) + 1)) // s[i] + 1 for i in range(len(k)))
    cols = ops.im2col_nd(x, k, p, s, d, out)
    np.testing.assert_array_equal(cols, cpu.im2col_nd(x, k, p, s, d, out))
    if len(k) == 2:
        np.testing.assert_array_equal(cols, cpu.im2col(x, k, p, s, d, out))
    c = rand(*cols.shape, seed=1)
    np.testing.assert_allclose(ops.col2im_nd(c, shape, k, p, s, d, out), cpu.col2im_nd(c, shape, k, p, s, d, out),
                               rtol=1e-6, atol=1e-6)


def test_nd_twin_agrees_with_the_2d_one():
    x = rand(2, 3, 7, 9)
    args = ((3, 2), (1, 1), (2, 1), (1, 2), (4, 7))
    np.testing.assert_array_equal(cpu.im2col_nd(x, *args), cpu.im2col(x, *args))
    c = rand(3 * 6, 2 * 28, seed=2)
    np.testing.assert_allclose(cpu.col2im_nd(c, x.shape, *args), cpu.col2im(c, x.shape, *args), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("outer,inner,tiles", [(2, 12, 3), (6, 4, 2), (1, 5, 1)])
def test_tile(ops, outer, inner, tiles):
    x = rand(outer, inner)
    np.testing.assert_array_equal(ops.tile_forward(x, outer, inner, tiles), cpu.tile_forward(x, outer, inner, tiles))
    dy = rand(outer, tiles * inner, seed=3)
    np.testing.assert_allclose(ops.tile_backward(dy, outer, inner, tiles), cpu.tile_backward(dy, outer, inner, tiles),
                               rtol=1e-6)


def test_batch_reindex(ops):
    x = rand(4, 6)
    index = np.array([3, 0, 3, 1, 3], np.float32)            # repeats, and item 2 never picked
    np.testing.assert_array_equal(ops.batch_reindex_forward(x, index), cpu.batch_reindex_forward(x, index))
    dy = rand(5, 6, seed=4)
    got = ops.batch_reindex_backward(dy, index, 4)
    np.testing.assert_allclose(got, cpu.batch_reindex_backward(dy, index, 4), rtol=1e-6)
    assert (got[2] == 0).all()


@pytest.mark.parametrize("bias", [True, False])
def test_embed(ops, bias):
    w = rand(6, 4)
    b = rand(4, seed=5) if bias else None
    index = np.array([5, 0, 2, 5, 5, 1], np.float32)
    np.testing.assert_array_equal(ops.embed_forward(index, w, b), cpu.embed_forward(index, w, b))
    dy = rand(6, 4, seed=6)
    got, want = np.full((6, 4), 0.5, np.float32), np.full((6, 4), 0.5, np.float32)   # accumulates
    ops.embed_backward(dy, index, got)
    cpu.embed_backward(dy, index, want)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    bad = np.array([1, 6], np.float32)
    assert np.isnan(ops.embed_forward(bad, w, b)[1]).all(), "an index >= input_dim must show on the device"


@pytest.mark.parametrize("shape,k", [((2, 7, 3), 3), ((3, 24, 1), 1), ((2, 5, 4), 5)])
def test_argmax_topk(ops, shape, k):
    x = np.round(rand(*shape), 1)           # rounding makes ties, which go to the larger index
    x[0, :3, 0] = 9.0
    index, value = ops.argmax_topk(x, k)
    want_index, want_value = cpu.argmax_topk(x, k)
    np.testing.assert_array_equal(index, want_index)
    np.testing.assert_array_equal(value, want_value)
    assert index[0, 0, 0] == 2 and (k < 2 or index[0, 1, 0] == 1)


def test_lstm_unit(ops):
    n, h = 3, 5
    c_prev, x = rand(n, h), rand(n, 4 * h, seed=7)
    cont = np.array([1, 0, 1], np.float32)
    c, hh = ops.lstm_unit_forward(c_prev, x, cont)
    c0, h0 = cpu.lstm_unit_forward(c_prev, x, cont)
    np.testing.assert_allclose(c, c0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hh, h0, rtol=1e-5, atol=1e-6)
    dc, dh = rand(n, h, seed=8), rand(n, h, seed=9)
    got = ops.lstm_unit_backward(c_prev, x, cont, c0, dc, dh)
    want = cpu.lstm_unit_backward(c_prev, x, cont, c0, dc, dh)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert (want[0][1] == 0).all() and (want[1][1, h:2 * h] == 0).all(), "cont 0 cuts the previous cell off"


# -- the forks' kernels ---------------------------------------------------------------

@pytest.mark.parametrize("softmax", [True, False])
def test_mbox_conf_loss(ops, softmax):
    rng = np.random.RandomState(3)
    conf = (rng.randn(2, 9, 5) * 4).astype(np.float32)
    conf[0, 0] = [90, -90, 0, 1, 2]                 # saturating softmax: the FLT_MIN floor
    labels = rng.randint(0, 5, (2, 9)).astype(np.int32)
    labels[0, 0] = 1
    got = ops.mbox_conf_loss(conf, labels, softmax)
    want = cpu.mbox_conf_loss(conf, labels, softmax)
    assert got.shape == want.shape == (2, 9) and np.isfinite(want).all()
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6)


@pytest.mark.parametrize("code_type", [1, 2, 3])
@pytest.mark.parametrize("in_target", [False, True])
@pytest.mark.parametrize("loc_classes", [1, 3])
def test_decode_bboxes(ops, code_type, in_target, loc_classes):
    rng = np.random.RandomState(code_type * 10 + loc_classes)
    priors = 7
    corner = np.sort(rng.rand(priors, 2, 2).astype(np.float32), axis=1)     # x0 < x1, y0 < y1
    boxes = np.stack([corner[:, 0, 0], corner[:, 0, 1], corner[:, 1, 0], corner[:, 1, 1]], axis=1)
    var = np.tile(np.float32([0.1, 0.1, 0.2, 0.2]), (priors, 1))
    prior = np.stack([boxes, var]).astype(np.float32)
    loc = rng.randn(2, priors, loc_classes, 4).astype(np.float32)
    got = ops.decode_bboxes(loc, prior, code_type, in_target)
    want = cpu.decode_bboxes(loc, prior, code_type, in_target)
    assert got.shape == want.shape == (2, priors, loc_classes, 4)
    # expf against numpy's float32 exp: an ulp at most
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("shape,order", [((2, 3, 4, 5), (0, 2, 3, 1)), ((2, 6, 5), (2, 0, 1)),
                                         ((3, 2, 2, 3, 2), (0, 3, 1, 4, 2))])
def test_permute(ops, shape, order):
    x = rand(*shape)
    np.testing.assert_array_equal(ops.permute(x, order), cpu.permute(x, order))


def _rois(rng, n, h, w, images):
    x1, x2 = np.sort(rng.uniform(-3, w + 3, (2, n)), axis=0)
    y1, y2 = np.sort(rng.uniform(-3, h + 3, (2, n)), axis=0)
    r = np.stack([rng.randint(0, images, n), x1, y1, x2, y2], axis=1).astype(np.float32)
    r[0, 1:] = [2.5, 4.5, 2.5, 4.5]          # halves, rounded away from zero
    return r


@pytest.mark.parametrize("scale,pooled", [(0.25, (3, 4)), (1.0, (2, 2)), (0.5, (7, 5))])
def test_roi_pooling(ops, scale, pooled):
    rng = np.random.RandomState(1)
    x = rand(2, 3, 9, 11)
    rois = _rois(rng, 6, 9 / scale, 11 / scale, 2)
    y, arg = ops.roi_pool_forward(x, rois, scale, pooled)
    y_ref, arg_ref = cpu.roi_pool_forward(x, rois, scale, pooled)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(arg, arg_ref)
    dy = rand(*y.shape, seed=2)
    np.testing.assert_allclose(ops.roi_pool_backward(dy, arg, rois, x.shape),
                               cpu.roi_pool_backward(dy, arg_ref, rois, x.shape), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scale,group", [(0.25, 3), (0.5, 2)])
def test_psroi_pooling(ops, scale, group):
    rng = np.random.RandomState(3)
    dim = 2
    x = rand(2, dim * group * group, 8, 10)
    rois = _rois(rng, 5, 8 / scale, 10 / scale, 2)
    y = ops.psroi_pool_forward(x, rois, scale, dim, group)
    np.testing.assert_allclose(y, cpu.psroi_pool_forward(x, rois, scale, dim, group), rtol=1e-6, atol=1e-6)
    dy = rand(*y.shape, seed=4)
    np.testing.assert_allclose(ops.psroi_pool_backward(dy, rois, scale, dim, group, x.shape),
                               cpu.psroi_pool_backward(dy, rois, scale, dim, group, x.shape), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,crop,out", [((2, 3, 5, 7), (0, 5, 7), (9, 13)), ((1, 2, 6, 6), (1, 4, 4), (7, 3)),
                                            ((1, 2, 4, 5), (0, 4, 5), (4, 5)), ((1, 1, 5, 4), (0, 5, 4), (1, 1))])
def test_interp(ops, shape, crop, out):
    x = rand(*shape)
    np.testing.assert_array_equal(ops.interp_forward(x, crop, out), cpu.interp_forward(x, crop, out))
    dy = rand(shape[0], shape[1], *out, seed=5)
    np.testing.assert_allclose(ops.interp_backward(dy, shape, crop), cpu.interp_backward(dy, shape, crop),
                               rtol=1e-5, atol=1e-6)


def test_upsample(ops):
    rng = np.random.RandomState(6)
    x = rand(2, 3, 4, 5)
    rows = np.arange(4)[:, None] * 2 + rng.randint(0, 2, (2, 3, 4, 5))
    cols = np.arange(5)[None, :] * 2 + rng.randint(0, 2, (2, 3, 4, 5))
    mask = (rows * 10 + cols).astype(np.float32)           # into an 8 x 10 output
    y, bad = ops.upsample_forward(x, mask, (8, 10))
    y_ref, bad_ref = cpu.upsample_forward(x, mask, (8, 10))
    assert bad == bad_ref == 0
    np.testing.assert_array_equal(y, y_ref)
    assert (y != 0).sum() == x.size
    dy = rand(2, 3, 8, 10, seed=7)
    np.testing.assert_array_equal(ops.upsample_backward(dy, mask), cpu.upsample_backward(dy, mask))
    mask[0, 0, 0, 0] = 80                                  # one past the plane
    assert ops.upsample_forward(x, mask, (8, 10))[1] == cpu.upsample_forward(x, mask, (8, 10))[1] == 1

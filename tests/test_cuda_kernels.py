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
def emulated_backend(ops):
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
    kernels = {"conv": "im2col", "deconv": "col2im", "pool_max": "max_pool_forward", "pool_ave": "ave_pool_forward",
               "pool_global_max": "max_pool_forward", "lrn_across": "lrn_scale", "softmaxloss": "softmax_loss_forward",
               "caffenet_small": "lrn_diff"}
    for prefix, kernel in kernels.items():
        if name.startswith(prefix):
            assert kernel in used, "%s did not run the %s kernel" % (name, kernel)

"""Parameter gradients accumulate in place (iter_size > 1, shared weights,
`caffe time`): the products go into the diff a block of rows at a time, and
the sums equal what numpy computes with a whole temporary (to the last bit or
two: the BLAS may take another kernel for a block of a few rows)."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.kernels import cpu

# Run under both CPU engines: numpy (the reference) and oneDNN.
pytestmark = pytest.mark.usefixtures("both_engines")


def _layout(rng, shape, dtype, transposed):
    if not transposed:
        return rng.rand(*shape).astype(dtype)
    flipped = shape[:-2] + (shape[-1], shape[-2])
    return np.swapaxes(rng.rand(*flipped).astype(dtype), -1, -2)


@pytest.mark.parametrize("block_bytes", [64, cpu.ADD_MATMUL_BLOCK_BYTES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lead", [(), (3,)])
@pytest.mark.parametrize("ta,tb", [(False, False), (True, False), (False, True), (True, True)])
def test_add_matmul_equals_numpy_sum(monkeypatch, block_bytes, dtype, lead, ta, tb):
    monkeypatch.setattr(cpu, "ADD_MATMUL_BLOCK_BYTES", block_bytes)     # 64 bytes: a few rows per block
    rng = np.random.RandomState(4)
    a = _layout(rng, lead + (6, 9), dtype, ta)
    b = _layout(rng, lead + (9, 5), dtype, tb)
    out = rng.rand(*(lead + (6, 5))).astype(dtype)
    expected = out + np.matmul(a, b)
    held = out
    cpu.add_matmul(a, b, out)
    assert out is held
    np.testing.assert_allclose(out, expected, rtol=4 * np.finfo(dtype).eps, atol=0)


NET = """
input: "data" input_shape { dim: 4 dim: 3 dim: 8 dim: 8 }
force_backward: true
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 group: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "conv_g" type: "Convolution" bottom: "conv" top: "conv_g"
  convolution_param { num_output: 4 kernel_size: 3 group: 2 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "conv_g" top: "ip"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
"""


def test_two_backward_passes_sum_their_gradients(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    caffe.set_random_seed(2)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(0)
    passes = [(rng.randn(4, 3, 8, 8).astype(np.float32), rng.randn(4, 5).astype(np.float32)) for _ in range(2)]
    single = []
    for x, dy in passes:                     # each pass alone, from cleared diffs
        net.clear_param_diffs()
        net.forward(data=x)
        net.backward(ip=dy)
        single.append({k: [p.diff.copy() for p in v] for k, v in net.params.items()})
    net.clear_param_diffs()
    for x, dy in passes:                     # both passes into the same diffs
        net.forward(data=x)
        net.backward(ip=dy)
    for name, params in net.params.items():
        for i, p in enumerate(params):
            np.testing.assert_allclose(p.diff, single[0][name][i] + single[1][name][i], rtol=1e-6, atol=1e-7,
                                       err_msg="%s[%d]" % (name, i))
            assert np.abs(p.diff).max() > 0

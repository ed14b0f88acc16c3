"""An LSTM and a 3-D convolution block on the CPU, pycaffe_lite next to
PyTorch in the same process (same weights, same inputs, checked to agree
before timing).

    python benchmarks/bench_layers_cpu.py [--iters 5]

LSTM: hidden 256, T = 20, batch 16, input 256, forward+backward against
torch.nn.LSTM. C3D-like block: Conv3d 3->32 (3x3x3, pad 1), ReLU, Conv3d
32->64 (3x3x3, pad 1) on 2 clips of 3x8x56x56, forward and forward+backward
against torch.nn.Conv3d. Prints ms and the ratio pycaffe_lite / PyTorch.
Needs the bench extra (torch)."""
import os
import sys

_SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _SLOW_BLAS_VARS):
    env = {k: v for k, v in os.environ.items() if k not in _SLOW_BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pycaffe_lite as caffe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from measure import timed  # noqa: E402

LSTM_NET = '''layer { name: "x" type: "Input" top: "x" top: "cont"
  input_param { shape { dim: %(T)d dim: %(N)d dim: %(I)d } shape { dim: %(T)d dim: %(N)d } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h"
  recurrent_param { num_output: %(H)d weight_filler { type: "uniform" min: -0.05 max: 0.05 }
                    bias_filler { type: "uniform" min: -0.05 max: 0.05 } } }
'''

C3D_NET = '''force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 56 dim: 56 } } }
layer { name: "conv1" type: "Convolution" bottom: "x" top: "c1"
  convolution_param { num_output: 32 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "conv2" type: "Convolution" bottom: "c1" top: "c2"
  convolution_param { num_output: 64 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
'''


def best_of(fn, iters):
    return timed(fn, iters, warmup=1)[0]


def net_from(text):
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(text)
    try:
        return caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)


def bench_lstm(torch, iters, T=20, N=16, I=256, H=256):
    net = net_from(LSTM_NET % dict(T=T, N=N, I=I, H=H))
    rng = np.random.RandomState(0)
    x = rng.randn(T, N, I).astype(np.float32)
    cont = np.ones((T, N), np.float32)
    cont[0] = 0
    net.blobs["x"].data[...] = x
    net.blobs["cont"].data[...] = cont
    w_xc, b_c, w_hc = (b.data for b in net.params["lstm"])
    ref = torch.nn.LSTM(I, H)
    # Caffe's gate order is i, f, o, g; PyTorch's is i, f, g, o.
    order = np.r_[0:H, H:2 * H, 3 * H:4 * H, 2 * H:3 * H]
    with torch.no_grad():
        ref.weight_ih_l0.copy_(torch.from_numpy(w_xc[order]))
        ref.weight_hh_l0.copy_(torch.from_numpy(w_hc[order]))
        ref.bias_ih_l0.copy_(torch.from_numpy(b_c[order]))
        ref.bias_hh_l0.zero_()
    xt = torch.from_numpy(x).requires_grad_(True)
    dy = rng.randn(T, N, H).astype(np.float32)
    net.forward()
    out, _ = ref(xt)
    err = float(np.abs(net.blobs["h"].data - out.detach().numpy()).max())
    assert err < 1e-4, "LSTM outputs differ by %g" % err

    def ours():
        net.forward()
        net.blobs["h"].diff[...] = dy
        net.backward()

    def theirs():
        xt.grad = None
        ref.zero_grad()
        y, _ = ref(xt)
        y.backward(torch.from_numpy(dy))
    return best_of(ours, iters), best_of(theirs, iters)


def bench_c3d(torch, iters):
    net = net_from(C3D_NET)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 3, 8, 56, 56).astype(np.float32)
    net.blobs["x"].data[...] = x
    ref = torch.nn.Sequential(torch.nn.Conv3d(3, 32, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(32, 64, 3, padding=1))
    with torch.no_grad():
        for i, name in ((0, "conv1"), (2, "conv2")):
            ref[i].weight.copy_(torch.from_numpy(net.params[name][0].data))
            ref[i].bias.copy_(torch.from_numpy(net.params[name][1].data))
    xt = torch.from_numpy(x).requires_grad_(True)
    net.forward()
    err = float(np.abs(net.blobs["c2"].data - ref(xt).detach().numpy()).max())
    assert err < 1e-3, "Conv3d outputs differ by %g" % err
    dy = rng.randn(*net.blobs["c2"].shape).astype(np.float32)

    def ours_fb():
        net.forward()
        net.blobs["c2"].diff[...] = dy
        net.backward()

    def theirs_f():
        with torch.no_grad():
            ref(xt)

    def theirs_fb():
        xt.grad = None
        ref.zero_grad()
        ref(xt).backward(torch.from_numpy(dy))
    return (best_of(net.forward, iters), best_of(theirs_f, iters)), (best_of(ours_fb, iters),
                                                                      best_of(theirs_fb, iters))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--iters", type=int, default=5)
    args = p.parse_args()
    import torch
    torch.manual_seed(0)
    print("torch %s, %d threads; numpy %s" % (torch.__version__, torch.get_num_threads(), np.__version__))
    ours, theirs = bench_lstm(torch, args.iters)
    print("LSTM H=256 T=20 N=16 forward+backward: pycaffe_lite %.1f ms, PyTorch %.1f ms, ratio %.2fx"
          % (ours, theirs, ours / theirs))
    (f_ours, f_theirs), (fb_ours, fb_theirs) = bench_c3d(torch, args.iters)
    print("C3D block forward: pycaffe_lite %.1f ms, PyTorch %.1f ms, ratio %.2fx" % (f_ours, f_theirs,
                                                                                     f_ours / f_theirs))
    print("C3D block forward+backward: pycaffe_lite %.1f ms, PyTorch %.1f ms, ratio %.2fx"
          % (fb_ours, fb_theirs, fb_ours / fb_theirs))


if __name__ == "__main__":
    main()

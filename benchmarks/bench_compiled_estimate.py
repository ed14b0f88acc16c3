"""What would compiled kernels save? The issue's rule: add a compiled kernel
only for a measured gain of at least 20% of a training iteration.

    python benchmarks/bench_compiled_estimate.py [--batches 16,64] [--iters 4]

Builds compiled_estimate/kernels.c (g++ -O3 -march=native -fopenmp; plain C
loops for MAX-pool backward, im2col and col2im), swaps them into the CPU
kernel table of a process of its own, and times CaffeNet forward+backward
with and without them, alternating runs."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def build():
    lib = os.path.join(tempfile.mkdtemp(), "libkernels.so")
    subprocess.check_call(["g++", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC",
                           os.path.join(HERE, "compiled_estimate", "kernels.c"), "-o", lib])
    return lib


def install(lib_path):
    import ctypes
    import numpy as np
    from pycaffe_lite.kernels import cpu
    lib = ctypes.CDLL(lib_path)
    P, I = ctypes.c_void_p, ctypes.c_int
    lib.max_pool_backward.argtypes = [P, P, P, P, ctypes.c_long] + [I] * 10
    lib.im2col.argtypes = [P, P] + [I] * 14
    lib.col2im.argtypes = [P, P] + [I] * 14

    def ptr(a):
        return a.ctypes.data_as(P)

    def max_pool_backward(dy, x, y, kernel, pad, stride, out_hw, out=None):
        x, dy = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(dy, np.float32)
        dx = out if out is not None else np.empty(x.shape, np.float32)
        n, c, h, w = x.shape
        lib.max_pool_backward(ptr(x), ptr(y), ptr(dy), ptr(dx), n * c, h, w, kernel[0], kernel[1],
                              stride[0], stride[1], pad[0], pad[1], out_hw[0], out_hw[1])
        return dx

    def im2col(x, kernel, pad, stride, dilation, out_hw, out=None):
        x = np.ascontiguousarray(x, np.float32)
        n, c, h, w = x.shape
        size = c * kernel[0] * kernel[1] * n * out_hw[0] * out_hw[1]
        cols = np.empty(size, np.float32) if out is None or out.size < size else out[:size]
        lib.im2col(ptr(x), ptr(cols), n, c, h, w, kernel[0], kernel[1], pad[0], pad[1], stride[0], stride[1],
                   dilation[0], dilation[1], out_hw[0], out_hw[1])
        return cols.reshape(c * kernel[0] * kernel[1], -1)

    def col2im(cols, x_shape, kernel, pad, stride, dilation, out_hw):
        cols = np.ascontiguousarray(cols, np.float32)
        n, c, h, w = x_shape
        x = np.empty(x_shape, np.float32)
        lib.col2im(ptr(cols), ptr(x), n, c, h, w, kernel[0], kernel[1], pad[0], pad[1], stride[0], stride[1],
                   dilation[0], dilation[1], out_hw[0], out_hw[1])
        return x
    cpu.max_pool_backward, cpu.im2col, cpu.col2im = max_pool_backward, im2col, col2im


def one(batch, iters, lib):
    import pycaffe_lite as caffe
    import time
    import numpy as np
    if lib:
        install(lib)
    sys.path.insert(0, HERE)
    import bench_caffenet_cpu as b
    rng = np.random.RandomState(0)
    net = caffe.Net(b.train_net_param(batch), caffe.TRAIN)
    net.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
    net.blobs["label"].data[...] = rng.randint(0, 1000, size=batch)
    best = float("inf")
    for i in range(iters + 1):
        t = time.perf_counter()
        net._mark_param_diffs_clear()
        net.forward_backward()
        if i:
            best = min(best, time.perf_counter() - t)
    print(json.dumps({"ms": 1e3 * best}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="16,64")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        one(int(args.one[0]), args.iters, args.one[1] if args.one[1] != "-" else None)
        return
    lib = build()
    env = dict(os.environ, OMP_WAIT_POLICY="passive")
    print("CaffeNet forward+backward, best of %d, ms per iteration:" % args.iters)
    for batch in [int(v) for v in args.batches.split(",")]:
        times = {"numpy": [], "compiled": []}
        for _ in range(args.rounds):
            for name, path in (("numpy", "-"), ("compiled", lib)):
                out = subprocess.check_output([sys.executable, __file__, "--iters", str(args.iters),
                                               "--one", str(batch), path], env=env)
                times[name].append(json.loads(out.decode().strip().splitlines()[-1])["ms"])
        a, b = min(times["numpy"]), min(times["compiled"])
        print("  batch %3d: numpy %.1f, with compiled pooling backward/im2col/col2im %.1f: %.1f%% less"
              % (batch, a, b, 100 * (a - b) / a))


if __name__ == "__main__":
    main()

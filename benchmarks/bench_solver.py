"""Solver overhead: the share of a CaffeNet training iteration (batch 16, CPU)
spent outside forward+backward (clearing diffs, learning rate, weight decay,
momentum update, applying the step).

    python benchmarks/bench_solver.py [--batch 16] [--iters 3]

Also prints `caffe time`-style forward and backward averages for the net."""
import os
import sys

_SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _SLOW_BLAS_VARS):
    env = {k: v for k, v in os.environ.items() if k not in _SLOW_BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import pycaffe_lite as caffe  # noqa: E402  (before numpy, as the command-line tools load it)
import argparse  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from pycaffe_lite import glog  # noqa: E402
from pycaffe_lite.proto import caffe_pb2 as pb  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_caffenet_cpu import train_net_param  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    glog.logger.setLevel(logging.WARNING)
    param = pb.SolverParameter(base_lr=0.01, lr_policy="step", gamma=0.1, stepsize=100000, momentum=0.9,
                               weight_decay=0.0005, max_iter=1000, display=0, solver_mode=pb.SolverParameter.CPU,
                               random_seed=1)
    param.train_net_param.CopyFrom(train_net_param(args.batch))
    solver = caffe.Solver(param)
    net = solver.net
    rng = np.random.RandomState(0)
    net.blobs["data"].data[...] = rng.randn(*net.blobs["data"].shape) * 50
    net.blobs["label"].data[...] = rng.randint(0, 1000, size=args.batch)
    solver.step(1)
    # Time Solver.step as it runs: forward+backward inside it, the rest is the
    # solver's (diff clearing, learning rate, regularization, update, step).
    spent = {"fb": 0.0}
    forward_backward = net.forward_backward

    def timed_forward_backward(*a, **k):
        t = time.perf_counter()
        try:
            return forward_backward(*a, **k)
        finally:
            spent["fb"] += time.perf_counter() - t
    net.forward_backward = timed_forward_backward
    t0 = time.perf_counter()
    solver.step(args.iters)
    fb = spent["fb"]
    other = time.perf_counter() - t0 - fb
    total = fb + other
    n = float(args.iters)
    params = sum(b.count for b in net.learnable_params)
    print("CaffeNet TRAIN, batch %d, %d parameters, mean of %d iterations:" % (args.batch, params, args.iters))
    print("  forward+backward   %8.1f ms" % (1e3 * fb / n))
    print("  solver (the rest)  %8.1f ms  = %.1f%% of the iteration" % (1e3 * other / n, 100 * other / total))
    torch_reference(args)


def torch_reference(args):
    """The same split for PyTorch: forward+backward, then torch.optim.SGD's
    step (momentum, weight decay) over the same 61M parameters."""
    try:
        import torch
    except ImportError:
        print("(PyTorch not installed: no reference split)")
        return
    from bench_caffenet_cpu import torch_caffenet
    model = torch_caffenet(torch).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    x = torch.randn(args.batch, 3, 227, 227) * 50
    labels = torch.randint(0, 1000, (args.batch,))
    loss_fn = torch.nn.CrossEntropyLoss()
    fb = step = 0.0
    for it in range(args.iters + 1):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=False)
        loss_fn(model(x), labels).backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        if it:                      # the first iteration allocates the momentum buffers
            fb += t1 - t0
            step += t2 - t1
    n = float(args.iters)
    print("PyTorch %s, same batch:" % torch.__version__)
    print("  forward+backward   %8.1f ms" % (1e3 * fb / n))
    print("  optimizer step     %8.1f ms  = %.1f%% of the iteration" % (1e3 * step / n, 100 * step / (fb + step)))


if __name__ == "__main__":
    main()

"""CaffeNet on the GPU, pycaffe_lite (our kernels + cuBLAS) next to PyTorch
(cuDNN) on the same device, batch 256: forward, forward+backward, peak memory.

    python benchmarks/bench_caffenet_gpu.py [--batch 256] [--iters 10] [--tf32]

Without --tf32 both run strict fp32 (CuPy's cuBLAS without TF32, PyTorch with
TF32 disabled for matmul and cuDNN); with --tf32 both may use TF32. CuPy reads
CUPY_TF32 at import, so the script re-executes itself to set it."""
import os
import sys

if "--tf32" in sys.argv and os.environ.get("CUPY_TF32") != "1":
    os.environ["CUPY_TF32"] = "1"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import pycaffe_lite as caffe  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_caffenet_cpu import DEPLOY, torch_caffenet, train_net_param  # noqa: E402


def timed(fn, iters, sync):
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        fn()
    sync()
    return (time.perf_counter() - t) / iters


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--tf32", action="store_true")
    ap.add_argument("--json", default="", help="also write the figures here")
    args = ap.parse_args()
    import cupy
    import torch
    caffe.set_mode_gpu()
    sync = cupy.cuda.Device().synchronize
    pool = cupy.get_default_memory_pool()
    rng = np.random.RandomState(0)
    caffe.set_random_seed(0)
    deploy = caffe.Net(DEPLOY, caffe.TEST)
    deploy.blobs["data"].reshape(args.batch, 3, 227, 227)
    deploy.reshape()
    deploy.blobs["data"].data[...] = rng.randn(args.batch, 3, 227, 227) * 50
    f_ours = timed(lambda: deploy.forward_from_to(0, len(deploy.layers) - 1), args.iters, sync)
    deploy = None                  # give its memory back before the training net
    pool.free_all_blocks()
    train = caffe.Net(train_net_param(args.batch), caffe.TRAIN)
    train.blobs["data"].data[...] = rng.randn(args.batch, 3, 227, 227) * 50
    train.blobs["label"].data[...] = rng.randint(0, 1000, size=args.batch)

    def step():
        train.clear_param_diffs()
        train.forward_backward()
    fb_ours = timed(step, args.iters, sync)
    peak_ours = pool.total_bytes()

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    torch.backends.cudnn.benchmark = True
    dev = torch.device("cuda")
    model = torch_caffenet(torch).to(dev)
    x = torch.randn(args.batch, 3, 227, 227, device=dev) * 50
    y = torch.randint(0, 1000, (args.batch,), device=dev)
    tsync = torch.cuda.synchronize
    model.eval()

    def tf():
        with torch.no_grad():
            model(x)
    f_torch = timed(tf, args.iters, tsync)
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    torch.cuda.reset_peak_memory_stats()

    def tfb():
        model.zero_grad(set_to_none=False)
        loss_fn(model(x), y).backward()
    fb_torch = timed(tfb, args.iters, tsync)
    peak_torch = torch.cuda.max_memory_allocated()
    name = torch.cuda.get_device_name()
    mode = "TF32 allowed" if args.tf32 else "strict fp32"
    print("CaffeNet on %s, batch %d, %s, mean of %d iterations:" % (name, args.batch, mode, args.iters))
    print("  %-20s %10s %10s %8s" % ("", "ours ms", "torch ms", "ratio"))
    print("  %-20s %10.1f %10.1f %7.2fx" % ("forward", f_ours * 1e3, f_torch * 1e3, f_ours / f_torch))
    print("  %-20s %10.1f %10.1f %7.2fx" % ("forward+backward", fb_ours * 1e3, fb_torch * 1e3, fb_ours / fb_torch))
    print("  %-20s %10.2f %10.2f GiB" % ("peak GPU memory", peak_ours / 2 ** 30, peak_torch / 2 ** 30))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": name, "batch": args.batch, "mode": mode, "forward_ms": [f_ours * 1e3, f_torch * 1e3],
                       "forward_backward_ms": [fb_ours * 1e3, fb_torch * 1e3],
                       "peak_bytes": [peak_ours, peak_torch]}, f, indent=1)


if __name__ == "__main__":
    main()

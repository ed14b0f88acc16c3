"""CaffeNet training speed and memory on the CPU, next to PyTorch:

    python benchmarks/bench_training_cpu.py [--batches 1,16,64] [--iters 3]

For each batch size: forward (deploy) and forward+backward (train_val's layers)
ms/image and the ratio pycaffe_lite / PyTorch, each measured in a process of
its own so that its peak memory (RSS) is its own; then, at batch 16, the
backward time of every layer next to PyTorch's (backward hooks on its
modules). Needs the bench extra (torch)."""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def one(impl, mode, batch, iters):
    """Run one measurement here; print JSON {ms_per_image, rss_mb}."""
    if impl == "ours":
        import pycaffe_lite  # noqa: F401  (first, as the command-line tools load it)
    import numpy as np
    import bench_caffenet_cpu as b
    rng = np.random.RandomState(0)
    if impl == "ours":
        import pycaffe_lite as caffe
        caffe.set_random_seed(0)
        if mode == "forward":
            net = caffe.Net(b.DEPLOY, caffe.TEST)
            net.blobs["data"].reshape(batch, 3, 227, 227)
            net.reshape()
            net.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
            fn = net.forward
        else:
            net = caffe.Net(b.train_net_param(batch), caffe.TRAIN)
            net.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
            net.blobs["label"].data[...] = rng.randint(0, 1000, size=batch)

            def fn():
                net._mark_param_diffs_clear()
                net.forward_backward()
    else:
        import torch
        model = b.torch_caffenet(torch)
        x = torch.from_numpy(rng.randn(batch, 3, 227, 227).astype(np.float32) * 50)
        if mode == "forward":
            model.eval()

            def fn():
                with torch.no_grad():
                    model(x)
        else:
            model.train()
            labels = torch.from_numpy(rng.randint(0, 1000, size=batch))
            loss_fn = torch.nn.CrossEntropyLoss()

            def fn():
                model.zero_grad(set_to_none=False)
                loss_fn(model(x), labels).backward()
    best, _ = b.best_of(fn, iters)
    print(json.dumps({"ms_per_image": 1e3 * best / batch,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


def per_layer(batch, iters):
    """Backward ms of each layer, ours and PyTorch's, at one batch size."""
    import pycaffe_lite as caffe  # first, before numpy: it sets OpenBLAS's thread timeout
    import numpy as np
    import torch
    import bench_caffenet_cpu as b
    rng = np.random.RandomState(0)
    net = caffe.Net(b.train_net_param(batch), caffe.TRAIN)
    net.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
    net.blobs["label"].data[...] = rng.randint(0, 1000, size=batch)
    ours = {}
    for it in range(iters + 1):
        net._mark_param_diffs_clear()
        net.forward_from_to(0, len(net.layers) - 1)
        for i in range(len(net.layers) - 1, -1, -1):
            t = time.perf_counter()
            if net._layer_need_backward[i]:
                net.layers[i].backward(net._top(i), net._bottom_need_backward[i], net._bottom(i))
            if it:
                ours[net._layer_names[i]] = ours.get(net._layer_names[i], 0) + (time.perf_counter() - t) / iters
    model = b.torch_caffenet(torch)
    for module in model:           # backward hooks do not allow in-place outputs
        if hasattr(module, "inplace"):
            module.inplace = False
    names = ["conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3", "relu3", "conv4",
             "relu4", "conv5", "relu5", "pool5", "flatten", "fc6", "relu6", "drop6", "fc7", "relu7", "drop7", "fc8"]
    theirs, started = {}, {}
    for name, module in zip(names, model):
        module.register_full_backward_pre_hook(lambda m, g, n=name: started.__setitem__(n, time.perf_counter()))
        module.register_full_backward_hook(lambda m, gi, go, n=name: theirs.__setitem__(
            n, theirs.get(n, 0) + time.perf_counter() - started[n]))
    x = torch.from_numpy(rng.randn(batch, 3, 227, 227).astype(np.float32) * 50).requires_grad_(True)
    labels = torch.from_numpy(rng.randint(0, 1000, size=batch))
    for it in range(iters + 1):
        if it == 1:
            theirs.clear()
        model.zero_grad(set_to_none=False)
        torch.nn.functional.cross_entropy(model(x), labels).backward()
    print("backward per layer at batch %d, ms (ours / PyTorch):" % batch)
    for name in names:
        if name in ours:
            print("  %-6s %8.1f %8.1f" % (name, 1e3 * ours[name], 1e3 * theirs.get(name, 0) / iters))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--one", nargs=3, metavar=("IMPL", "MODE", "BATCH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args.one[0], args.one[1], int(args.one[2]), args.iters)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    print("CaffeNet, best of %d, ms/image [peak RSS MB]:" % args.iters)
    print("  %5s %-18s %16s %16s %7s" % ("batch", "", "pycaffe_lite", "PyTorch", "ratio"))
    for batch in [int(b) for b in args.batches.split(",")]:
        for mode in ("forward", "forward+backward"):
            r = {}
            for impl in ("ours", "torch"):
                out = subprocess.run([sys.executable, __file__, "--iters", str(args.iters), "--one", impl, mode,
                                      str(batch)], capture_output=True, text=True, env=env)
                lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
                r[impl] = json.loads(lines[-1]) if lines else None
            if r["ours"] and r["torch"]:
                print("  %5d %-18s %8.2f [%5.0f] %8.2f [%5.0f] %6.2fx"
                      % (batch, mode, r["ours"]["ms_per_image"], r["ours"]["rss_mb"], r["torch"]["ms_per_image"],
                         r["torch"]["rss_mb"], r["ours"]["ms_per_image"] / r["torch"]["ms_per_image"]))
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(k, None)
    per_layer(16, args.iters)


if __name__ == "__main__":
    main()

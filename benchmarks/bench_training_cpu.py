"""CaffeNet on the CPU next to PyTorch (forward and forward+backward) and
OpenCV's dnn module (forward, fusion on as by default):

    python benchmarks/bench_training_cpu.py [--batches 1,16,64] [--iters 5] [--per-layer]

Each measurement runs in a process of its own that imports numpy first, as
most scripts do, so that its peak memory (VmHWM) is its own. The forward is
the deploy net in TEST phase, the same weights for all three (checked to give
the same probabilities); forward+backward is train_val's layers (its Data
layers replaced by an Input of the same shape) against PyTorch's training
step. Prints ms per batch (best and median) with peak memory, and the ratios
ours / theirs. --per-layer adds the backward time of every layer at batch 16
next to PyTorch's. Needs the bench extra (torch)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from measure import peak_rss_mb, timed  # noqa: E402


def one(impl, mode, batch, iters, work):
    """One measurement in this process; prints JSON {best, median, rss}."""
    import numpy as np                      # first, as most scripts do
    sys.path.insert(0, HERE)
    import bench_caffenet_cpu as b
    rng = np.random.RandomState(0)
    weights = os.path.join(work, "caffenet.caffemodel")
    x = (rng.randn(batch, 3, 227, 227) * 50).astype(np.float32)
    labels = rng.randint(0, 1000, size=batch)
    out = None
    if impl == "ours":
        import pycaffe_lite as caffe
        caffe.init_log(2)
        if mode == "forward":
            net = caffe.Net(b.DEPLOY, caffe.TEST, weights=weights)
            net.blobs["data"].reshape(batch, 3, 227, 227)
            net.reshape()

            def fn():
                return net.forward(data=x)["prob"]
            out = fn().copy()
        else:
            net = caffe.Net(b.train_net_param(batch), caffe.TRAIN, weights=weights)
            net.blobs["data"].data[...] = x
            net.blobs["label"].data[...] = labels

            def fn():
                net._mark_param_diffs_clear()        # what the solver does before each iteration
                net.forward_backward()
    elif impl == "opencv":
        import cv2
        cv_net = cv2.dnn.readNetFromCaffe(b.DEPLOY, weights)

        def fn():
            cv_net.setInput(x)
            return cv_net.forward()
        out = fn().copy()
    else:
        import torch
        model = b.torch_caffenet(torch)
        source = np.load(os.path.join(work, "caffenet.npz"))        # the same weights, without our loader
        layers = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        with torch.no_grad():
            for m, name in zip(layers, ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]):
                m.weight.copy_(torch.from_numpy(source[name + "/0"]))
                m.bias.copy_(torch.from_numpy(source[name + "/1"]))
        del source
        xt = torch.from_numpy(x)
        if mode == "forward":
            model.eval()

            def fn():
                with torch.no_grad():
                    return torch.softmax(model(xt), 1).numpy()
            out = fn().copy()
        else:
            model.train()
            yt = torch.from_numpy(labels)
            loss_fn = torch.nn.CrossEntropyLoss()

            def fn():
                model.zero_grad(set_to_none=False)
                loss_fn(model(xt), yt).backward()
    if out is not None:
        np.save(os.path.join(work, "%s_%d_out.npy" % (impl, batch)), out.reshape(batch, -1))
    best, median = timed(fn, iters)
    print(json.dumps({"best": best, "median": median, "rss": peak_rss_mb()}))


def per_layer(batch, iters):
    """Backward ms of each layer, ours and PyTorch's, at one batch size."""
    import numpy as np
    import torch
    import pycaffe_lite as caffe
    sys.path.insert(0, HERE)
    import bench_caffenet_cpu as b
    caffe.init_log(2)
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
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--per-layer", action="store_true")
    ap.add_argument("--one", nargs=4, metavar=("IMPL", "MODE", "BATCH", "WORK"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        return one(args.one[0], args.one[1], int(args.one[2]), args.iters, args.one[3])
    import numpy as np
    import pycaffe_lite as caffe
    sys.path.insert(0, HERE)
    import bench_caffenet_cpu as b
    caffe.init_log(2)
    work = tempfile.mkdtemp()
    caffe.set_random_seed(0)
    net = caffe.Net(b.DEPLOY, caffe.TEST)
    net.save(os.path.join(work, "caffenet.caffemodel"))
    np.savez(os.path.join(work, "caffenet.npz"), **{"%s/%d" % (k, i): p.data for k, v in net.params.items()
                                                    for i, p in enumerate(v)})
    del net
    print("CaffeNet, ms per batch, best / median of %d [peak RSS MB]; ratio = ours / theirs (best)" % args.iters)
    print("  %5s %-17s %24s %24s %24s   %s" % ("batch", "", "ours", "PyTorch", "OpenCV", "ratios"))
    for batch in [int(v) for v in args.batches.split(",")]:
        for mode in ("forward", "forward+backward"):
            r = {}
            for impl in ("ours", "torch", "opencv"):
                if impl == "opencv" and mode != "forward":
                    continue
                out = subprocess.run([sys.executable, __file__, "--iters", str(args.iters), "--one", impl, mode,
                                      str(batch), work], capture_output=True, text=True)
                lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
                r[impl] = json.loads(lines[-1]) if lines else None
                if not lines:
                    sys.stderr.write(out.stderr[-1500:])
            if mode == "forward":
                ours = np.load(os.path.join(work, "ours_%d_out.npy" % batch))
                for impl in ("torch", "opencv"):
                    path = os.path.join(work, "%s_%d_out.npy" % (impl, batch))
                    if r.get(impl) and os.path.exists(path):
                        np.testing.assert_allclose(np.load(path), ours, atol=1e-4,
                                                   err_msg="%s's probabilities differ from ours" % impl)

            def cell(v):
                return "%8.1f / %6.1f [%5.0f]" % (v["best"], v["median"], v["rss"]) if v else "%24s" % "-"
            ratios = ", ".join("%.2fx %s" % (r["ours"]["best"] / r[i]["best"], i) for i in ("torch", "opencv")
                               if r.get(i) and r.get("ours"))
            print("  %5d %-17s %s %s %s   %s" % (batch, mode, cell(r.get("ours")), cell(r.get("torch")),
                                                cell(r.get("opencv")), ratios))
    if args.per_layer:
        per_layer(16, args.iters)


if __name__ == "__main__":
    main()

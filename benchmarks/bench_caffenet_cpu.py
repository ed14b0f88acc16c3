"""CaffeNet on the CPU, pycaffe_lite next to PyTorch in the same process.

    python benchmarks/bench_caffenet_cpu.py [--batch 16] [--iters 5]

Times the deploy net's TEST forward and train_val's layers forward+backward
(its Data layers replaced by an Input of the same shape), prints ms/image and
the ratio pycaffe_lite / PyTorch. Needs the bench extra (torch, threadpoolctl).

This machine sets OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, which slow numpy's
sgemm down by half; the benchmark removes them for its own process only (it
re-executes itself without them) and prints which BLAS kernel it ran."""
import os
import sys

_SLOW_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _SLOW_BLAS_VARS):
    env = {k: v for k, v in os.environ.items() if k not in _SLOW_BLAS_VARS}
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import time  # noqa: E402

import pycaffe_lite as caffe  # noqa: E402  (first: it sets up OpenBLAS's threads, as for any user)
import numpy as np  # noqa: E402
from pycaffe_lite import protoio  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "models/bvlc_reference_caffenet/deploy.prototxt")
TRAIN_VAL = os.path.join(ROOT, "models/bvlc_reference_caffenet/train_val.prototxt")


def blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    rows = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join("%s %s (%s, %d threads)" % (i.get("internal_api"), i.get("version"),
                                                 i.get("architecture"), i.get("num_threads"))
                     for i in rows) or "no BLAS found"


def train_net_param(batch):
    """train_val.prototxt in TRAIN phase with its Data layer as an Input."""
    param = protoio.read_net_text(TRAIN_VAL)
    layers = [l for l in param.layer if l.type != "Data"]
    del param.layer[:]
    data = param.layer.add(name="data", type="Input", top=["data", "label"])
    data.input_param.shape.add().dim.extend([batch, 3, 227, 227])
    data.input_param.shape.add().dim.extend([batch])
    param.layer.extend(layers)
    return param


def best_of(fn, iters):
    fn()  # warm up: allocations, BLAS threads
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def ours(batch, iters, rng):
    caffe.set_random_seed(0)
    deploy = caffe.Net(DEPLOY, caffe.TEST)
    deploy.blobs["data"].reshape(batch, 3, 227, 227)
    deploy.reshape()
    deploy.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
    fwd = best_of(deploy.forward, iters)

    train = caffe.Net(train_net_param(batch), caffe.TRAIN)
    train.blobs["data"].data[...] = rng.randn(batch, 3, 227, 227) * 50
    train.blobs["label"].data[...] = rng.randint(0, 1000, size=batch)

    def step():
        train._mark_param_diffs_clear()      # what the solver does before each iteration
        train.forward_backward()
    fb = best_of(step, iters)
    return fwd, fb, deploy


def torch_caffenet(torch):
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, ceil_mode=True),
        nn.Flatten(), nn.Linear(9216, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(4096, 1000))


def theirs(batch, iters, rng, deploy):
    import torch
    model = torch_caffenet(torch)
    # Same weights as ours, so the forward outputs can be checked against each other.
    convs = [m for m in model if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    names = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"]
    with torch.no_grad():
        for m, name in zip(convs, names):
            m.weight.copy_(torch.from_numpy(deploy.params[name][0].data))
            m.bias.copy_(torch.from_numpy(deploy.params[name][1].data))
    x = torch.from_numpy(deploy.blobs["data"].data.copy())
    model.eval()
    with torch.no_grad():
        logits = model(x)
    agree = np.abs(torch.softmax(logits, 1).numpy() - deploy.blobs["prob"].data).max()

    def fwd():
        with torch.no_grad():
            model(x)
    f = best_of(fwd, iters)
    model.train()
    xt = torch.from_numpy(rng.randn(batch, 3, 227, 227).astype(np.float32) * 50)
    labels = torch.from_numpy(rng.randint(0, 1000, size=batch))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        model.zero_grad(set_to_none=False)
        loss_fn(model(xt), labels).backward()
    fb = best_of(step, iters)
    return f, fb, agree, torch.__version__, torch.get_num_threads()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.RandomState(0)
    print("BLAS: %s" % blas_info())
    (f_min, f_med), (fb_min, fb_med), deploy = ours(args.batch, args.iters, rng)
    try:
        (tf_min, tf_med), (tfb_min, tfb_med), agree, version, threads = theirs(args.batch, args.iters, rng, deploy)
    except ImportError:
        print("PyTorch not installed (pip install -e '.[bench]'); pycaffe_lite only:")
        tf_min = tfb_min = None
    n = float(args.batch)
    print("CaffeNet, batch %d, best of %d (median in brackets), ms/image:" % (args.batch, args.iters))
    print("  %-26s %8s %8s %8s" % ("", "ours", "torch", "ratio"))
    for label, a, am, b, bm in [("forward (deploy, TEST)", f_min, f_med, tf_min, tf_med if tf_min else None),
                                ("forward+backward (train)", fb_min, fb_med, tfb_min,
                                 tfb_med if tfb_min else None)]:
        if b is None:
            print("  %-26s %8.2f" % (label, 1e3 * a / n))
        else:
            print("  %-26s %8.2f %8.2f %7.2fx   (medians %.2f / %.2f)"
                  % (label, 1e3 * a / n, 1e3 * b / n, a / b, 1e3 * am / n, 1e3 * bm / n))
    if tf_min is not None:
        print("PyTorch %s, %d threads; max |prob difference| with the same weights: %.2g"
              % (version, threads, agree))


if __name__ == "__main__":
    main()

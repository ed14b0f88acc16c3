"""Published architectures at batch 1 on the CPU, next to OpenCV's dnn module
reading the very same prototxt and .caffemodel:

    python benchmarks/bench_zoo_cpu.py [--iters 5] [NET ...]

The nets are tests/zoo_nets.py's (GoogLeNet, ResNet-50, SqueezeNet 1.1,
MobileNet v1, ...) with random weights; the outputs are checked to agree
before timing. Prints forward ms (best of --iters), the ratio, and where our
time goes by layer type."""
import pycaffe_lite as caffe  # noqa: F401  (first, as the command-line tools load it)
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
import zoo_nets  # noqa: E402


def best_of(fn, iters):
    fn()
    best = float("inf")
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    import cv2
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("nets", nargs="*", default=["googlenet", "resnet50", "squeezenet", "mobilenet"])
    args = ap.parse_args()
    work = tempfile.mkdtemp()
    print("%-20s %10s %10s %7s   ours by layer type (ms)" % ("net, batch 1", "ours ms", "OpenCV ms", "ratio"))
    for name in args.nets:
        model = os.path.join(work, name + ".prototxt")
        with open(model, "w") as f:
            f.write(str(zoo_nets.NETS[name]()))
        caffe.set_random_seed(1)
        net = caffe.Net(model, caffe.TEST)
        rng = np.random.RandomState(0)
        for layer, blobs in net.params.items():
            if net.layer_dict[layer].type == "BatchNorm":
                blobs[1].data[...] = rng.rand(*blobs[1].data.shape) + 0.5
                blobs[2].data[...] = 1
        weights = os.path.join(work, name + ".caffemodel")
        net.save(weights)
        x = rng.rand(*net.blobs["data"].shape).astype(np.float32)
        out = net.outputs[0]
        ours = net.forward(data=x)[out].copy()
        cv_net = cv2.dnn.readNetFromCaffe(model, weights)
        cv_net.setInput(x)
        theirs = cv_net.forward()
        np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-3, atol=1e-5)

        types = [net.layer_dict[n].type for n in net._layer_names]
        spent, started = {}, {}
        net.before_forward(lambda i: started.__setitem__("t", time.perf_counter()))
        net.after_forward(lambda i: spent.__setitem__(types[i], spent.get(types[i], 0.0)
                                                      + time.perf_counter() - started["t"]))
        spent.clear()
        t_ours = best_of(lambda: net.forward(data=x), args.iters)
        runs = args.iters + 1                     # best_of's warm-up and the timed runs
        by_type = ", ".join("%s %.1f" % (k, 1e3 * v / runs) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
                            if 1e3 * v / runs >= 0.5)

        def opencv():
            cv_net.setInput(x)
            cv_net.forward()
        t_cv = best_of(opencv, args.iters)
        print("%-20s %10.1f %10.1f %6.2fx   %s" % (name, 1e3 * t_ours, 1e3 * t_cv, t_ours / t_cv, by_type))


if __name__ == "__main__":
    main()

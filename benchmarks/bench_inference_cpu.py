"""Inference on the CPU, published prototxts as published, next to ONNX
Runtime (running our own export of the same net, default session options)
and OpenCV dnn (reading the same prototxt and .caffemodel):

    python benchmarks/bench_inference_cpu.py NAME=deploy.prototxt ... [--iters 10] [--batches 1,16]

The prototxts are read from their repositories at benchmark time (never
committed): shicai/MobileNet-Caffe, forresti/SqueezeNet,
KaimingHe/deep-residual-networks, BVLC's GoogLeNet and CaffeNet. Weights are
random (BatchNorm statistics away from identity). Each measurement runs in
a process of its own that imports numpy first; its peak RSS is its own.
Prints forward ms (best of --iters) per batch and peak RSS at batch 1."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from measure import peak_rss_mb, timed  # noqa: E402


def one(impl, work, name, batch, iters):
    import numpy as np                       # first, as most scripts do
    model = os.path.join(work, name + ".prototxt")
    weights = os.path.join(work, name + ".caffemodel")
    shape = json.load(open(os.path.join(work, name + ".json")))
    x = np.random.RandomState(0).rand(batch, *shape[1:]).astype(np.float32)
    if impl == "ours":
        import pycaffe_lite as caffe
        caffe.init_log(2)
        net = caffe.Net(model, weights, caffe.TEST)
        data = net.inputs[0]
        net.blobs[data].reshape(*x.shape)
        net.reshape()

        def run():
            net.blobs[data].data[...] = x
            net.forward()
    elif impl == "ort":
        import onnxruntime as ort
        sess = ort.InferenceSession(os.path.join(work, name + ".onnx"), providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}

        def run():
            sess.run(None, feed)
    else:
        import cv2
        net = cv2.dnn.readNetFromCaffe(model, weights)

        def run():
            net.setInput(x)
            net.forward()
    best, median = timed(run, iters)
    return {"best": best, "median": median, "rss": peak_rss_mb()}


def prepare(work, name, source):
    import numpy as np
    import pycaffe_lite as caffe
    caffe.init_log(2)
    model = os.path.join(work, name + ".prototxt")
    with open(source) as f, open(model, "w") as out:
        out.write(f.read())
    net = caffe.Net(model, caffe.TEST)
    rng = np.random.RandomState(3)
    for layer, blobs in net.params.items():
        kind = net.layer_dict[layer].type
        if kind == "BatchNorm":
            blobs[0].data[...] = rng.randn(*blobs[0].shape) * 0.1
            blobs[1].data[...] = rng.rand(*blobs[1].shape) + 0.5
            blobs[2].data[...] = 1.0
        elif kind == "Scale":
            blobs[0].data[...] = rng.rand(*blobs[0].shape) + 0.5
    net.save(os.path.join(work, name + ".caffemodel"))
    with open(os.path.join(work, name + ".json"), "w") as f:
        json.dump(list(net.blobs[net.inputs[0]].shape), f)
    caffe.export_onnx(net, os.path.join(work, name + ".onnx"), dynamic_batch=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("nets", nargs="*", help="NAME=deploy.prototxt")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        impl, work, name, batch, iters = args.one
        print(json.dumps(one(impl, work, name, int(batch), int(iters))))
        return
    work = tempfile.mkdtemp(prefix="bench_inference_")
    batches = [int(b) for b in args.batches.split(",")]
    impls = ("ours", "ort", "opencv")
    print("%-16s %5s %10s %10s %10s %10s %10s   %s" % ("net", "batch", "ours ms", "ORT ms", "OpenCV ms", "/ORT",
                                                         "/OpenCV", "peak RSS MB ours/ORT/OpenCV (batch 1)"))
    for spec in args.nets:
        name, source = spec.split("=", 1)
        prepare(work, name, source)
        for batch in batches:
            res = {}
            for impl in impls:
                out = subprocess.run([sys.executable, __file__, "--one", impl, work, name, str(batch), str(args.iters)],
                                     capture_output=True, text=True)
                res[impl] = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
            t = {k: (v["best"] if v else float("nan")) for k, v in res.items()}
            rss = "/".join("%.0f" % res[k]["rss"] if res[k] else "-" for k in impls) if batch == 1 else ""
            print("%-16s %5d %10.1f %10.1f %10.1f %9.2fx %9.2fx   %s" % (
                name, batch, t["ours"], t["ort"], t["opencv"], t["ours"] / t["ort"], t["ours"] / t["opencv"], rss))


if __name__ == "__main__":
    main()

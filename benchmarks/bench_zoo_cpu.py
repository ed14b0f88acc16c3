"""Published architectures on the CPU, next to OpenCV's dnn module (reading the
very same prototxt and .caffemodel, fusion on and off), PyTorch (the same
net and weights, benchmarks/torch_nets.py) and onnxruntime (running our ONNX
export of them, caffe.export_onnx):

    python benchmarks/bench_zoo_cpu.py [--iters 10] [--nets googlenet,resnet50,...] [--train-batch 4]

The nets are tests/zoo_nets.py's (GoogLeNet, ResNet-50, SqueezeNet 1.1 and
MobileNet v1, layer for layer) with random weights. Each measurement runs in
a process of its own that imports numpy first, as most scripts do, so that its
peak memory is its own; the outputs are checked to agree with ours. Prints
forward ms at batch 1 (best and median of --iters) and the ratios, then
ResNet-50 training (forward+backward, batch --train-batch) next to PyTorch."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from measure import peak_rss_mb, timed  # noqa: E402
ROOT = os.path.dirname(HERE)


def train_param(model, batch):
    """The deploy net as a TRAIN net: batch statistics, a label, a loss."""
    from pycaffe_lite import protoio
    param = protoio.read_net_text(model)
    data = param.layer[0]
    data.input_param.shape[0].dim[0] = batch
    data.top.append("label")
    data.input_param.shape.add().dim.extend([batch])
    for lp in param.layer:
        if lp.type == "BatchNorm":
            lp.batch_norm_param.ClearField("use_global_stats")
    last = param.layer[-1]
    last.type, last.name = "SoftmaxWithLoss", "loss"
    last.bottom.append("label")
    del last.top[:]
    last.top.append("loss")
    return param


def one(impl, name, work, iters, mode, batch):
    import numpy as np                       # first, as most scripts do
    model = os.path.join(work, name + ".prototxt")
    weights = os.path.join(work, name + ".caffemodel")
    x = np.load(os.path.join(work, name + ".npy"))
    result = {}
    if mode == "train":
        rng = np.random.RandomState(0)
        xb = rng.rand(batch, *x.shape[1:]).astype(np.float32)
        labels = rng.randint(0, 1000, size=batch)
        if impl == "ours":
            import pycaffe_lite as caffe
            caffe.init_log(2)
            net = caffe.Net(train_param(model, batch), caffe.TRAIN, weights=weights)
            net.blobs["data"].data[...] = xb
            net.blobs["label"].data[...] = labels

            def step():
                net._mark_param_diffs_clear()
                net.forward_backward()
        else:
            import torch
            import pycaffe_lite as caffe
            sys.path.insert(0, HERE)
            from torch_nets import to_torch
            caffe.init_log(2)
            model_t = to_torch(caffe.Net(model, caffe.TEST, weights=weights), torch)
            model_t.train()
            xt, yt = torch.from_numpy(xb), torch.from_numpy(labels)

            def step():
                model_t.zero_grad(set_to_none=False)
                out = model_t(xt)[0]
                torch.nn.functional.cross_entropy(out, yt).backward()
        result["best"], result["median"] = timed(step, iters)
    else:
        if impl == "ours":
            import pycaffe_lite as caffe
            caffe.init_log(2)
            net = caffe.Net(model, caffe.TEST, weights=weights)
            out = net.outputs[0]

            def fwd():
                return net.forward(data=x)[out]
        elif impl == "onnxruntime":
            import onnxruntime as ort
            sess = ort.InferenceSession(os.path.join(work, name + ".onnx"), providers=["CPUExecutionProvider"])
            feed = sess.get_inputs()[0].name

            def fwd():
                return sess.run(None, {feed: x})[0]
        elif impl.startswith("opencv"):
            import cv2
            cv_net = cv2.dnn.readNetFromCaffe(model, weights)
            cv_net.enableFusion(impl == "opencv")

            def fwd():
                cv_net.setInput(x)
                return cv_net.forward()
        else:
            import torch
            import pycaffe_lite as caffe
            sys.path.insert(0, HERE)
            from torch_nets import to_torch
            caffe.init_log(2)
            model_t = to_torch(caffe.Net(model, caffe.TEST, weights=weights), torch).eval()
            xt = torch.from_numpy(x)

            def fwd():
                with torch.no_grad():
                    return model_t(xt)[0].numpy()
        np.save(os.path.join(work, "%s_%s_out.npy" % (name, impl)), np.asarray(fwd()).reshape(-1))
        result["best"], result["median"] = timed(fwd, iters)
    result["rss"] = peak_rss_mb()
    print(json.dumps(result))


def _child(args, impl, name, work, mode, batch=1):
    out = subprocess.run([sys.executable, __file__, "--one", impl, name, work, mode, str(batch),
                          "--iters", str(args.iters)], capture_output=True, text=True)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.stderr.write(out.stderr[-2000:])
        return None
    return json.loads(lines[-1])


def prepare(name, work):
    import numpy as np
    import pycaffe_lite as caffe
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import zoo_nets
    caffe.init_log(2)
    model = os.path.join(work, name + ".prototxt")
    with open(model, "w") as f:
        f.write(str(zoo_nets.NETS[name]()))
    caffe.set_random_seed(1)
    net = caffe.Net(model, caffe.TEST)
    rng = np.random.RandomState(0)
    for layer, blobs in net.params.items():
        if net.layer_dict[layer].type == "BatchNorm":
            blobs[0].data[...] = rng.randn(*blobs[0].data.shape) * 0.1
            blobs[1].data[...] = rng.rand(*blobs[1].data.shape) + 0.5
            blobs[2].data[...] = 1
    net.save(os.path.join(work, name + ".caffemodel"))
    np.save(os.path.join(work, name + ".npy"), rng.rand(*net.blobs["data"].shape).astype(np.float32))
    try:
        caffe.export_onnx(net, os.path.join(work, name + ".onnx"))        # for the onnxruntime column
    except Exception as e:            # no onnx package: that column stays empty
        print("(no ONNX export: %s)" % e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--nets", default="googlenet,resnet50,squeezenet,mobilenet")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        impl, name, work, mode, batch = args.one
        return one(impl, name, work, args.iters, mode, int(batch))
    import numpy as np
    work = tempfile.mkdtemp()
    impls = ["ours", "opencv", "opencv_nofusion", "torch", "onnxruntime"]
    print("Forward at batch 1, ms best / median of %d [peak RSS MB]; ratio = ours / theirs (best):" % args.iters)
    print("%-11s %20s %20s %20s %20s %20s   %s" % ("net", "ours", "OpenCV (fusion)", "OpenCV (no fusion)",
                                                  "PyTorch", "onnxruntime (ours)", "ratios"))
    for name in args.nets.split(","):
        prepare(name, work)
        r = {impl: _child(args, impl, name, work, "forward") for impl in impls}
        ours_out = np.load(os.path.join(work, "%s_ours_out.npy" % name))
        for impl in impls[1:]:
            path = os.path.join(work, "%s_%s_out.npy" % (name, impl))
            if r[impl] and os.path.exists(path):
                np.testing.assert_allclose(np.load(path), ours_out, rtol=1e-3, atol=1e-5,
                                           err_msg="%s: %s's output differs from ours" % (name, impl))

        def cell(v):
            return "%7.1f / %5.1f [%4.0f]" % (v["best"], v["median"], v["rss"]) if v else "%20s" % "failed"
        ratios = ", ".join("%.2fx %s" % (r["ours"]["best"] / r[i]["best"], i) for i in impls[1:]
                           if r["ours"] and r[i])
        print("%-11s %s %s %s %s %s   %s" % (name, cell(r["ours"]), cell(r["opencv"]), cell(r["opencv_nofusion"]),
                                             cell(r["torch"]), cell(r["onnxruntime"]), ratios))
    if args.train_batch and "resnet50" in args.nets.split(","):
        print("\nResNet-50 training (forward+backward), batch %d, ms best / median [peak RSS MB]:" % args.train_batch)
        r = {impl: _child(args, impl, "resnet50", work, "train", args.train_batch) for impl in ("ours", "torch")}
        if r["ours"] and r["torch"]:
            print("  ours %s   PyTorch %s   ratio %.2fx" % (
                "%.1f / %.1f [%.0f]" % (r["ours"]["best"], r["ours"]["median"], r["ours"]["rss"]),
                "%.1f / %.1f [%.0f]" % (r["torch"]["best"], r["torch"]["median"], r["torch"]["rss"]),
                r["ours"]["best"] / r["torch"]["best"]))


if __name__ == "__main__":
    main()

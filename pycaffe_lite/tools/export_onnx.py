"""Export a Caffe net and its weights to ONNX, computing what Caffe computes:

    python -m pycaffe_lite.tools.export_onnx --model deploy.prototxt --weights w.caffemodel --output model.onnx
        [--opset 17] [--dynamic_batch] [--outputs blob,...] [--input_shape data=1,3,227,227 ...]
        [--phase TEST] [--bake_transform] [--mean_file F] [--mean_value 104,117,123] [--raw_scale 255]
        [--input_scale S] [--channel_swap 2,1,0]

Data layers become graph inputs; --input_shape gives a data layer's top its
shape (and spares reading its database). The preprocessing (a data layer's
transform_param, or the pycaffe Transformer the --mean_file ... flags
describe, with transpose 2,0,1 as classify.py's) is written into the model's
metadata, or baked into the graph with --bake_transform. The model is checked
by onnx's checker and written whole or not at all."""
import argparse

import numpy as np

from .. import glog, protoio
from ..errors import ConfigError
from ..net import Net, _phase_value
from ..onnx_export import DATA_LAYERS, export
from ..proto import caffe_pb2 as pb
from ._cli import add_bool, parse, run


def _parser():
    p = argparse.ArgumentParser(prog="export_onnx", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="the net's prototxt (a deploy net)")
    p.add_argument("--weights", default="", help="its .caffemodel (without: the fillers' weights)")
    p.add_argument("--output", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=17)
    add_bool(p, "--dynamic_batch", "the batch axis of inputs and outputs as a symbolic N")
    p.add_argument("--outputs", default="", help="more blobs to expose as outputs, comma-separated")
    p.add_argument("--input_shape", action="append", default=[], metavar="BLOB=D0,D1,...",
                   help="the shape of a data layer's top (repeat for each)")
    p.add_argument("--phase", default="TEST")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--stage", default="")
    add_bool(p, "--bake_transform", "put the inputs' preprocessing into the graph")
    p.add_argument("--mean_file", default="", help="mean (.npy C x H x W or C, or .binaryproto)")
    p.add_argument("--mean_value", default="", help="per-channel mean, e.g. 104,117,123")
    p.add_argument("--raw_scale", type=float, default=None)
    p.add_argument("--input_scale", type=float, default=None)
    p.add_argument("--channel_swap", default="")
    return p


def _shapes(specs):
    shapes = {}
    for spec in specs:
        name, _, dims = spec.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.split(",")]
        except ValueError:
            raise ConfigError("--input_shape %s: give BLOB=D0,D1,... with whole numbers" % spec) from None
        if not name or not shapes[name] or min(shapes[name]) < 1:
            raise ConfigError("--input_shape %s: give BLOB=D0,D1,... with positive dims" % spec)
    return shapes


def _with_inputs(param, shapes, source):
    """Data layers whose tops all have a given shape become Input layers (with
    their transform_param kept for the metadata)."""
    used = set()
    for lp in param.layer:
        if lp.type not in DATA_LAYERS or lp.type == "Input":
            continue
        if lp.top[0] not in shapes:
            continue
        transform = pb.TransformationParameter()
        transform.CopyFrom(lp.transform_param)
        keep = {"name": lp.name, "top": list(lp.top), "include": list(lp.include), "exclude": list(lp.exclude)}
        lp.Clear()
        lp.name, lp.type = keep["name"], "Input"
        lp.top.extend(keep["top"])
        lp.include.extend(keep["include"])
        lp.exclude.extend(keep["exclude"])
        if transform.ListFields():
            lp.transform_param.CopyFrom(transform)
        for i, t in enumerate(keep["top"]):
            # a label not given: one per item of the batch, as data layers make it
            lp.input_param.shape.add().dim.extend(shapes.get(t, shapes[keep["top"][0]][:1] if i else None))
            used.add(t)
    unknown = set(shapes) - used
    if unknown:
        raise ConfigError("%s: --input_shape names %s, which no data layer of this phase produces"
                          % (source, ", ".join(sorted(unknown))))
    return param


def _transformer(args, net):
    if not (args.mean_file or args.mean_value or args.raw_scale is not None or args.input_scale is not None
            or args.channel_swap):
        return None
    from ..io import Transformer
    from .convert_mean import load_mean
    name = net.inputs[0] if net.inputs else next(iter(net.blobs))
    t = Transformer({name: net.blobs[name].data.shape})
    t.set_transpose(name, (2, 0, 1))
    if args.channel_swap:
        t.set_channel_swap(name, [int(v) for v in args.channel_swap.split(",")])
    if args.raw_scale is not None:
        t.set_raw_scale(name, args.raw_scale)
    if args.mean_file:
        t.set_mean(name, load_mean(args.mean_file))
    elif args.mean_value:
        t.set_mean(name, np.array([float(v) for v in args.mean_value.split(",")]))
    if args.input_scale is not None:
        t.set_input_scale(name, args.input_scale)
    return t


def main_args(args):
    param = protoio.read_net_text(args.model)
    param = _with_inputs(param, _shapes(args.input_shape), args.model)
    stages = [s for s in args.stage.split(",") if s]
    net = Net(param, _phase_value(args.phase), level=args.level, stages=stages)
    net._source = args.model
    if args.weights:
        net.copy_from(args.weights)
    outputs = [o for o in args.outputs.split(",") if o]
    path = export(net, args.output, opset=args.opset, dynamic_batch=args.dynamic_batch, outputs=outputs,
                  transformer=_transformer(args, net), bake_transform=args.bake_transform)
    glog.info("Wrote %s (ONNX opset %d): inputs %s, outputs %s", path, args.opset, ", ".join(net.inputs) or "-",
              ", ".join(list(net.outputs) + [o for o in outputs if o not in net.outputs]))
    return 0


def main(argv=None):
    return run(lambda a: main_args(parse(_parser(), a)), argv)


if __name__ == "__main__":
    raise SystemExit(main())

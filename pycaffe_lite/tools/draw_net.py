"""Draw a net definition as a graph (layers as boxes, blobs as octagons), as
Caffe's draw_net.py:

    python -m pycaffe_lite.tools.draw_net NET.prototxt OUT.png [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]

An output ending in .dot is written as Graphviz text and needs nothing more;
images need pydot and the Graphviz programs (pip install pydot; apt-get install graphviz)."""
import argparse

from .. import protoio
from ..errors import ConfigError
from ..net import filter_net
from ..proto import caffe_pb2 as pb
from ..upgrade import upgrade_net
from ._cli import run

LAYER_STYLE = 'shape=record, style=filled, fillcolor="#6495ED"'
BLOB_STYLE = 'shape=octagon, style=filled, fillcolor="#E0E0E0"'


def _quote(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def _label(layer):
    text = "%s\\n(%s)" % (layer.name, layer.type)
    if layer.type in ("Convolution", "Deconvolution"):
        p = layer.convolution_param
        k = p.kernel_size[0] if len(p.kernel_size) else p.kernel_h
        text += "\\nkernel %s, stride %s, pad %s" % (k, p.stride[0] if len(p.stride) else 1,
                                                      p.pad[0] if len(p.pad) else 0)
    elif layer.type == "Pooling":
        p = layer.pooling_param
        text += "\\n%s %s, stride %s" % (pb.PoolingParameter.PoolMethod.Name(p.pool), p.kernel_size, p.stride)
    return text


def net_to_dot(net, rankdir="LR", phase=None):
    upgrade_net(net)
    if phase is not None:
        net = filter_net(net, pb.NetState(phase=phase))
    lines = ["digraph %s {" % _quote(net.name or "net"), "  rankdir=%s;" % rankdir]
    blobs = set()
    for i, layer in enumerate(net.layer):
        node = "layer_%d" % i
        lines.append("  %s [label=%s, %s];" % (node, _quote(_label(layer)), LAYER_STYLE))
        in_place = list(layer.bottom) == list(layer.top)
        for b in layer.bottom:
            blobs.add(b)
            lines.append("  %s -> %s;" % (_quote("blob_" + b), node))
        for t in layer.top:
            if in_place:
                continue
            blobs.add(t)
            lines.append("  %s -> %s;" % (node, _quote("blob_" + t)))
    for b in sorted(blobs):
        lines.append("  %s [label=%s, %s];" % (_quote("blob_" + b), _quote(b), BLOB_STYLE))
    lines.append("}")
    return "\n".join(lines) + "\n"


def draw_net_to_file(net, filename, rankdir="LR", phase=None):
    """caffe.draw.draw_net_to_file: write the graph of a NetParameter."""
    dot = net_to_dot(net, rankdir, phase)
    if filename.endswith(".dot"):
        with open(filename, "w") as f:
            f.write(dot)
        return
    try:
        import pydot
    except ImportError:
        raise ConfigError("drawing %s needs pydot and Graphviz (pip install pydot; apt-get install graphviz); "
                          "or write a .dot file, which needs neither" % filename) from None
    graphs = pydot.graph_from_dot_data(dot)
    ext = filename.rsplit(".", 1)[-1]
    try:
        graphs[0].write(filename, format=ext)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError("Graphviz is not installed (apt-get install graphviz): %s; or write a .dot file" % e) \
            from None


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="draw_net", description=__doc__.split("\n\n")[0])
        p.add_argument("input_net_proto_file")
        p.add_argument("output_image_file")
        p.add_argument("--rankdir", default="LR", choices=["LR", "TB", "BT", "RL"])
        p.add_argument("--phase", default="ALL", choices=["ALL", "TRAIN", "TEST"])
        args = p.parse_args(a)
        net = protoio.read_net_text(args.input_net_proto_file)
        phase = None if args.phase == "ALL" else getattr(pb, args.phase)
        print("Drawing net to %s" % args.output_image_file)
        draw_net_to_file(net, args.output_image_file, args.rankdir, phase)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

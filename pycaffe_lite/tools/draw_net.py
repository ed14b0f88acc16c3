"""Draw a net definition as a graph (layers as boxes, blobs as octagons), as
Caffe's draw_net.py:

    python -m pycaffe_lite.tools.draw_net NET.prototxt OUT.png [--rankdir LR|TB|BT|RL] [--phase TRAIN|TEST|ALL]

An output ending in .dot (or .raw) is written as Graphviz text and needs
nothing more; images need pydot and the Graphviz programs (pip install -e
'.[draw]'; apt-get install graphviz)."""
import argparse

from .. import protoio
from ..draw import draw_net_to_file
from ..proto import caffe_pb2 as pb
from ._cli import run


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="draw_net", description=__doc__.split("\n\n")[0])
        p.add_argument("input_net_proto_file")
        p.add_argument("output_image_file")
        p.add_argument("--rankdir", default="LR", choices=["LR", "TB", "BT", "RL"])
        p.add_argument("--phase", default="ALL", choices=["ALL", "TRAIN", "TEST"])
        p.add_argument("--display_lrm", action="store_true", help="show the lr multipliers of learning layers")
        args = p.parse_args(a)
        net = protoio.read_net_text(args.input_net_proto_file)
        phase = None if args.phase == "ALL" else getattr(pb, args.phase)
        print("Drawing net to %s" % args.output_image_file)
        draw_net_to_file(net, args.output_image_file, args.rankdir, phase, args.display_lrm)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

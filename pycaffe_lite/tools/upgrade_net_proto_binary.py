"""Upgrade a .caffemodel written in an old format (V0 or V1 `layers`) to the
current one, as Caffe's upgrade_net_proto_binary (blobs keep their shapes):

    python -m pycaffe_lite.tools.upgrade_net_proto_binary OLD.caffemodel NEW.caffemodel"""
import argparse

from .. import log, protoio
from ..proto import caffe_pb2 as pb
from ..upgrade import upgrade_net
from ._cli import run


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="upgrade_net_proto_binary", description=__doc__.split("\n\n")[0])
        p.add_argument("input")
        p.add_argument("output")
        args = p.parse_args(a)
        net = protoio.read_binary(args.input, pb.NetParameter())
        upgrade_net(net, args.input)
        protoio.write_binary(args.output, net)
        log.info("Wrote upgraded NetParameter binary proto to %s", args.output)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

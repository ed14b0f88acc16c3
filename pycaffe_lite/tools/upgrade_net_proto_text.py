"""Upgrade a net definition in an old text format (V0 or V1 `layers`, `input`
fields) to the current one, as Caffe's upgrade_net_proto_text:

    python -m pycaffe_lite.tools.upgrade_net_proto_text OLD.prototxt NEW.prototxt"""
import argparse

from google.protobuf import text_format

from .. import log, protoio
from ..upgrade import upgrade_net
from ._cli import run


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="upgrade_net_proto_text", description=__doc__.split("\n\n")[0])
        p.add_argument("input")
        p.add_argument("output")
        args = p.parse_args(a)
        net = protoio.read_net_text(args.input)
        upgrade_net(net, args.input)
        protoio.write_text(args.output, net)
        log.info("Wrote upgraded NetParameter text proto to %s", args.output)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""Upgrade a net definition in an old text format (V0 or V1 `layers`, `input`
fields) to the current one, as Caffe's upgrade_net_proto_text:

    python -m pycaffe_lite.tools.upgrade_net_proto_text OLD.prototxt NEW.prototxt"""
from .. import protoio
from ..upgrade import upgrade_net
from ._upgrade import upgrade_tool


def main(argv=None):
    return upgrade_tool(argv, __doc__, protoio.read_net_text, upgrade_net, protoio.write_text,
                        "NetParameter text proto", "upgrade_net_proto_text")


if __name__ == "__main__":
    raise SystemExit(main())

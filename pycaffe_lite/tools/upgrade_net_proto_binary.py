"""Upgrade a .caffemodel written in an old format (V0 or V1 `layers`) to the
current one, as Caffe's upgrade_net_proto_binary (blobs keep their shapes):

    python -m pycaffe_lite.tools.upgrade_net_proto_binary OLD.caffemodel NEW.caffemodel"""
from .. import protoio
from ..proto import caffe_pb2 as pb
from ..upgrade import upgrade_net
from ._upgrade import upgrade_tool


def main(argv=None):
    return upgrade_tool(argv, __doc__, lambda path: protoio.read_binary(path, pb.NetParameter()), upgrade_net,
                        protoio.write_binary, "NetParameter binary proto", "upgrade_net_proto_binary")


if __name__ == "__main__":
    raise SystemExit(main())

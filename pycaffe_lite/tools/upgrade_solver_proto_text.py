"""Upgrade a solver definition with the deprecated solver_type enum to the
string `type`, as Caffe's upgrade_solver_proto_text:

    python -m pycaffe_lite.tools.upgrade_solver_proto_text OLD.prototxt NEW.prototxt"""
from .. import protoio
from ..proto import caffe_pb2 as pb
from ..upgrade import upgrade_solver
from ._upgrade import upgrade_tool


def main(argv=None):
    return upgrade_tool(argv, __doc__, lambda path: protoio.read_text(path, pb.SolverParameter()), upgrade_solver,
                        protoio.write_text, "SolverParameter text proto",
                        "upgrade_solver_proto_text")


if __name__ == "__main__":
    raise SystemExit(main())

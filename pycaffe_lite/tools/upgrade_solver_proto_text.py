"""Upgrade a solver definition with the deprecated solver_type enum to the
string `type`, as Caffe's upgrade_solver_proto_text:

    python -m pycaffe_lite.tools.upgrade_solver_proto_text OLD.prototxt NEW.prototxt"""
import argparse

from .. import log, protoio
from ..proto import caffe_pb2 as pb
from ..upgrade import upgrade_solver
from ._cli import run


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="upgrade_solver_proto_text", description=__doc__.split("\n\n")[0])
        p.add_argument("input")
        p.add_argument("output")
        args = p.parse_args(a)
        solver = protoio.read_text(args.input, pb.SolverParameter())
        upgrade_solver(solver, args.input)
        protoio.write_text(args.output, solver)
        log.info("Wrote upgraded SolverParameter text proto to %s", args.output)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

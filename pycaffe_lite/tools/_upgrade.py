"""What the three upgrade tools share: read, upgrade, write, report."""
import argparse

from .. import glog
from ._cli import run


def upgrade_tool(argv, doc, read, upgrade, write, what, program):
    def go(a):
        p = argparse.ArgumentParser(prog=program, description=doc.split("\n\n")[0])
        p.add_argument("input")
        p.add_argument("output")
        args = p.parse_args(a)
        message = read(args.input)
        upgrade(message, args.input)
        write(args.output, message)
        glog.info("Wrote upgraded %s to %s", what, args.output)
    return run(go, argv, program)

"""What every command line shares: gflags-style boolean flags, and Caffe-style
error reporting (`error: ...`, exit status 2, a traceback only with --debug)."""
import argparse
import sys

from .. import glog
from ..errors import CaffeError


def flag_bool(value):
    v = str(value).lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError("expected true or false, got %r" % value)


def add_bool(parser, name, help, default=False):
    """A gflags boolean: `--name` alone means true, `--name=false` sets it."""
    parser.add_argument(name, type=flag_bool, default=default, metavar="BOOL", help=help)
    parser.__dict__.setdefault("bool_flags", set()).add(name)


def parse(parser, argv):
    flags = getattr(parser, "bool_flags", set())
    argv = [a + "=true" if a in flags else a for a in argv]
    return parser.parse_args(argv)


def run(main, argv=None, program=None, alsologtostderr=True):
    """main(argv) as a command line. A tool that stands for one of Caffe's
    C++ tools names it as `program`: logging starts as there (glog's log
    files, and with alsologtostderr every line on standard error too)."""
    argv = sys.argv[1:] if argv is None else argv
    if program:
        glog.init_google_logging(program, alsologtostderr)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        return main(argv) or 0
    except (CaffeError, OSError, RuntimeError) as e:   # RuntimeError: no GPU for --gpu
        if debug:
            raise
        print("error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

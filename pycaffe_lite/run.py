"""Run a program written for pycaffe, unchanged, on pycaffe_lite:

    python -m pycaffe_lite.run script.py [ARGS...]
    python -m pycaffe_lite.run -m package.module [ARGS...]

`import caffe` in the program (and in what it imports) gives pycaffe_lite."""
import runpy
import sys

from .alias import install


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    install()
    if argv[0] == "-m":
        if len(argv) < 2:
            print("error: -m needs a module name", file=sys.stderr)
            return 2
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = argv
        sys.path.insert(0, __import__("os").path.dirname(__import__("os").path.abspath(argv[0])))
        runpy.run_path(argv[0], run_name="__main__")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

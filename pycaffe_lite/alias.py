"""`import caffe` for programs written for pycaffe, unchanged.

install() makes the name `caffe` and pycaffe's submodules (caffe.io,
caffe.draw, caffe.net_spec, caffe.proto.caffe_pb2, caffe._caffe, ...) give
pycaffe_lite's, imported when the program first imports caffe, as pycaffe
is: what a program sets before that (os.environ["GLOG_minloglevel"]) counts.
`python -m pycaffe_lite.run script.py ARGS` runs a script with it installed."""
import importlib
import importlib.abc
import importlib.machinery
import sys

# pycaffe's modules, and ours that stand for each ("" is the package itself)
SUBMODULES = {
    "caffe": "", "caffe.pycaffe": "pycaffe", "caffe._caffe": "", "caffe.io": "io", "caffe.draw": "draw",
    "caffe.net_spec": "net_spec", "caffe.coord_map": "coord_map", "caffe.classifier": "classifier",
    "caffe.detector": "detector", "caffe.proto": "proto", "caffe.proto.caffe_pb2": "proto.caffe_pb2",
    "caffe.model_libs": "model_libs",
}


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname not in SUBMODULES:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=fullname in ("caffe", "caffe.proto"))

    def create_module(self, spec):
        ours = SUBMODULES[spec.name]
        if spec.name == "caffe":
            # glog reads GLOG_* when Caffe's library loads: at `import caffe`
            # (pycaffe_lite itself may have been loaded earlier, by the runner)
            from . import glog
            glog.FLAGS.read_environment()
        return importlib.import_module("pycaffe_lite" + ("." + ours if ours else ""))

    def exec_module(self, module):
        pass                    # already run, as pycaffe_lite's


_finder = _Finder()


def install():
    """From now on `import caffe` (and its submodules) gives pycaffe_lite."""
    if _finder not in sys.meta_path:
        sys.meta_path.insert(0, _finder)

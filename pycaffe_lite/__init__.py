"""pycaffe_lite: BVLC Caffe reimplemented in Python.

Scripts written for pycaffe run with `import pycaffe_lite as caffe`."""
import os as _os
import sys as _sys

# OpenBLAS's idle threads spin for a long while after each GEMM and take the
# cores from the element-wise work between GEMMs (pooling, col2im, ...):
# training is 1.25x faster on 2 cores when they sleep at once. OpenBLAS reads
# this when it loads, so it counts only if numpy is not loaded yet (the
# command-line tools, scripts that import us first); a user's setting stays.
if "numpy" not in _sys.modules:
    _os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
from . import layers as _layers  # noqa: F401  (registers the layer types)
from .backend import (cpu_engine, num_threads, set_cpu_engine, set_device, set_mode_cpu, set_mode_gpu, set_numpy_layers,
                      set_multiprocess, set_num_threads, set_random_seed, set_solver_count, set_solver_rank,
                      solver_count, solver_rank)
from .blob import Blob
from .glog import init_log, log
from .parallel import NCCL, has_nccl
from .timer import Timer
from .errors import CaffeError, ConfigError, FormatError, ShapeError
from .layer import Layer, layer_type_list
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2
from . import io
from .net_spec import NetSpec, layers, params, to_proto
from .classifier import Classifier
from .detector import Detector
from . import coord_map, detector, draw, pycaffe  # noqa: F401  (pycaffe's module names)


def export_onnx(net, path, opset=17, dynamic_batch=False, outputs=(), transformer=None, bake_transform=False):
    """Write a net (its weights as they are now) as an ONNX model that computes
    what Caffe computes; see pycaffe_lite.onnx_export.export."""
    from .onnx_export import export
    return export(net, path, opset=opset, dynamic_batch=dynamic_batch, outputs=outputs, transformer=transformer,
                  bake_transform=bake_transform)
from .solver import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                     Solver, get_solver)

__version__ = "0.1.0"

__all__ = [
    "AdaDeltaSolver", "AdaGradSolver", "AdamSolver", "NesterovSolver", "RMSPropSolver", "SGDSolver", "Solver",
    "get_solver", "NetSpec", "layers", "params", "to_proto", "Blob", "CaffeError", "Classifier", "Detector", "io",
    "ConfigError", "FormatError", "Layer", "Net", "ShapeError", "TEST", "TRAIN", "NCCL", "Timer", "caffe_pb2",
    "layer_type_list", "set_device", "set_mode_cpu", "set_mode_gpu", "set_random_seed", "init_log", "log",
    "has_nccl", "solver_count", "set_solver_count", "solver_rank", "set_solver_rank", "set_multiprocess",
    "cpu_engine", "set_cpu_engine", "set_num_threads", "num_threads", "export_onnx", "set_numpy_layers",
]

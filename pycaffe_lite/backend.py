"""The compute mode (CPU or GPU) and what goes with it: the array module and the
kernel table. Layers ask this module for `xp` and `ops` instead of importing
numpy or cupy themselves, so one layer definition runs on both devices."""
import numpy as np

from .kernels import cpu as _cpu_ops
from .scratch import Buffers

CPU, GPU = 0, 1

_state = {"mode": CPU, "device": 0, "ops": _cpu_ops, "xp": np}


def mode():
    return _state["mode"]


def xp():
    """The array module of the current mode (numpy on the CPU)."""
    return _state["xp"]


def ops():
    """The kernel table of the current mode (kernels.cpu on the CPU)."""
    return _state["ops"]


def set_mode_cpu():
    _state.update(mode=CPU, ops=_cpu_ops, xp=np)


_gpu_ops = {}


def set_mode_gpu():
    """Run on the CUDA device chosen with set_device (0 by default). Needs CuPy."""
    try:
        import cupy
    except ImportError:
        raise RuntimeError("GPU mode needs CuPy, which is not installed (pip install -e '.[gpu]'); "
                           "use caffe.set_mode_cpu() to run on the CPU") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:      # CUDARuntimeError without a driver or device
        raise RuntimeError("GPU mode needs a CUDA device, and none is usable here (%s); "
                           "use caffe.set_mode_cpu() to run on the CPU" % e) from None
    if count == 0 or _state["device"] >= count:
        raise RuntimeError("GPU mode needs CUDA device %d, and %d device(s) are present; "
                           "use caffe.set_mode_cpu() to run on the CPU" % (_state["device"], count))
    cupy.cuda.Device(_state["device"]).use()
    if _state["device"] not in _gpu_ops:
        from .kernels.gpu import cupy_ops
        _gpu_ops[_state["device"]] = cupy_ops()
    _state.update(mode=GPU, xp=cupy, ops=_gpu_ops[_state["device"]])


def set_device(device_id):
    _state["device"] = int(device_id)
    if _state["mode"] == GPU:
        set_mode_gpu()


def to_host(a):
    """A numpy array for a host or device array."""
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else a


# Blobs are float32, as in every Caffe build people use. The gradient checks
# switch to float64 so that finite differences are meaningful.
_dtype = {"dtype": np.float32}


def float_type():
    return _dtype["dtype"]


class precision:
    """Context manager: blobs created inside use `dtype` (tests only)."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype).type

    def __enter__(self):
        self.saved = _dtype["dtype"]
        _dtype["dtype"] = self.dtype

    def __exit__(self, *exc):
        _dtype["dtype"] = self.saved


# One random stream for fillers, Dropout and data shuffling, seeded by
# caffe.set_random_seed like Caffe's global RNG.
_rng = {"rng": np.random.default_rng()}


def rng():
    return _rng["rng"]


def set_random_seed(seed):
    _rng["rng"] = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)


# Data-parallel training (pycaffe's solver_count/solver_rank): how many
# solvers run together and which one this is. Rank 0 tests, logs and snapshots.
_parallel = {"count": 1, "rank": 0, "multiprocess": False}


def solver_count():
    return _parallel["count"]


def set_solver_count(count):
    if int(count) < 1:
        raise ValueError("solver_count must be at least 1, got %s" % count)
    _parallel["count"] = int(count)


def solver_rank():
    return _parallel["rank"]


def set_solver_rank(rank):
    _parallel["rank"] = int(rank)


def set_multiprocess(flag):
    _parallel["multiprocess"] = bool(flag)


# Scratch memory for work inside one layer call (transposed diffs, column
# gradients, GEMM outputs): layers run one at a time, so every layer shares it
# instead of each keeping its own (about 1 GB less for CaffeNet at batch 64).
_scratch = Buffers()


def scratch(key, size, dtype):
    """A grow-only buffer of at least `size` elements, shared by all layers."""
    return _scratch.get((_state["mode"], _state["device"], key), size, np.dtype(dtype), xp().empty)

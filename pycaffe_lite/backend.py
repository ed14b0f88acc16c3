"""The compute mode (CPU or GPU) and what goes with it: the array module and the
kernel table. Layers ask this module for `xp` and `ops` instead of importing
numpy or cupy themselves, so one layer definition runs on both devices."""
import os

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


# -- CPU engines -----------------------------------------------------------
# Two engines on the CPU, as Caffe has engines per layer: numpy (kernels/cpu.py,
# the reference) and oneDNN (kernels/dnnl.py). The user picks one with
# set_cpu_engine or PYCAFFE_LITE_CPU_ENGINE; oneDNN is the default wherever its
# library loads. Single layers go to numpy by name or type with
# set_numpy_layers or PYCAFFE_LITE_NUMPY_LAYERS (a prototxt's `engine: CAFFE`
# is a GPU hint and does not).
ENGINE_ENV = "PYCAFFE_LITE_CPU_ENGINE"
CPU_ENGINES = ("dnnl", "numpy")
_engine = {"name": None, "why": None}


def _engine_name(name):
    """An engine name as given, with oneDNN's other names for 'dnnl'."""
    name = str(name).lower()
    return "dnnl" if name in ("onednn", "mkldnn") else name


def _resolve_engine():
    from .kernels import dnnl
    wanted = _engine_name(os.environ.get(ENGINE_ENV, "").strip()) or None
    if wanted not in (None,) + CPU_ENGINES:
        _engine.update(name="numpy" if not dnnl.available() else "dnnl",
                       why="%s=%s is not an engine (dnnl or numpy)" % (ENGINE_ENV, wanted))
        return
    if wanted == "numpy":
        _engine.update(name="numpy", why="%s=numpy" % ENGINE_ENV)
    elif dnnl.available():
        _engine.update(name="dnnl", why=None)
    else:
        _engine.update(name="numpy", why="oneDNN is unavailable: %s" % dnnl.unavailable_reason())


def cpu_engine():
    """The CPU engine layers use: 'dnnl' (oneDNN) or 'numpy'."""
    if _engine["name"] is None:
        _resolve_engine()
    return _engine["name"]


def cpu_engine_note():
    """One line saying which CPU engine runs, and why when it is not oneDNN."""
    from .kernels import dnnl
    name = cpu_engine()
    if name == "dnnl":
        return "CPU engine: oneDNN %s (%s)" % (dnnl.version(), dnnl.library_path())
    return "CPU engine: numpy (%s)" % _engine["why"]


def set_cpu_engine(name):
    """Run CPU layers on 'dnnl' (oneDNN) or 'numpy'."""
    from .kernels import dnnl
    name = _engine_name(name)
    if name not in CPU_ENGINES:
        raise ValueError("set_cpu_engine takes 'dnnl' or 'numpy', got %r" % (name,))
    if name == "dnnl" and not dnnl.available():
        raise RuntimeError("the oneDNN engine is unavailable: %s" % dnnl.unavailable_reason())
    _engine.update(name=name, why="set_cpu_engine('numpy')" if name == "numpy" else None)


NUMPY_LAYERS_ENV = "PYCAFFE_LITE_NUMPY_LAYERS"
_numpy_layers = {"set": None}


def set_numpy_layers(names):
    """Run these layers (by name or by type: ["conv1", "LRN"]) on the numpy
    engine whatever the CPU engine is; an empty list undoes it. The
    variable PYCAFFE_LITE_NUMPY_LAYERS=conv1,LRN does the same from the
    start."""
    if isinstance(names, str):
        names = [names]
    _numpy_layers["set"] = frozenset(str(n) for n in names)


def numpy_layers():
    if _numpy_layers["set"] is None:
        _numpy_layers["set"] = frozenset(n.strip() for n in os.environ.get(NUMPY_LAYERS_ENV, "").split(",")
                                         if n.strip())
    return _numpy_layers["set"]


def numpy_forced(name, type_name):
    forced = numpy_layers()
    return bool(forced) and (name in forced or type_name in forced)


def dnnl_for():
    """kernels.dnnl when layers run on oneDNN now; None when they run the
    numpy engine or on the GPU."""
    if _state["mode"] != CPU or _dtype["dtype"] is not np.float32 or cpu_engine() != "dnnl":
        return None
    from .kernels import dnnl
    return dnnl


# -- threads ---------------------------------------------------------------
def set_num_threads(n):
    """Cap every thread pool the CPU engines run on at n threads: oneDNN's
    (OpenMP), the BLAS's and our own element-wise one, whichever of them a
    script loaded first (threadpoolctl reaches the libraries as loaded).
    OMP_NUM_THREADS in the environment caps all three from the start."""
    n = int(n)
    if n < 1:
        raise ValueError("set_num_threads needs at least 1 thread, got %d" % n)
    cpu_engine()                   # loads oneDNN, and with it OpenMP, so the cap reaches them
    from threadpoolctl import threadpool_limits
    threadpool_limits(limits=n)
    _cpu_ops.set_workers(n)
    # oneDNN fixes a primitive's threads when it is made: layers make theirs anew
    _threads["generation"] += 1


_threads = {"generation": 0}


def threads_generation():
    """Changes whenever set_num_threads does (primitives made before are stale)."""
    return _threads["generation"]


def num_threads():
    """The threads each CPU thread pool may use now (the smallest cap)."""
    from threadpoolctl import threadpool_info
    counts = [i["num_threads"] for i in threadpool_info() if i.get("user_api") in ("blas", "openmp")]
    return min(counts + [_cpu_ops.workers()])

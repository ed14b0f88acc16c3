"""The compute mode (CPU or GPU) and what goes with it: the array module and the
kernel table. Layers ask this module for `xp` and `ops` instead of importing
numpy or cupy themselves, so one layer definition runs on both devices."""
import numpy as np

from .kernels import cpu as _cpu_ops

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


def set_mode_gpu():
    # The GPU backend arrives with issue P4; until then say so plainly.
    raise RuntimeError(
        "GPU mode is not available in this build of pycaffe_lite: the CUDA backend is not "
        "installed yet. Use caffe.set_mode_cpu().")


def set_device(device_id):
    _state["device"] = int(device_id)


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

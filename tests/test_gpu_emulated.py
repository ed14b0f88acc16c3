"""GPU mode without a GPU: CuPy stood in for by numpy arrays that live apart
from the host copies (so every missing host<->device copy shows up as a wrong
number), and the CUDA kernels run through the CPU emulation harness. This
covers the GPU code paths of Blob (SyncedMemory), the layers and the solver
on every CI run; tests/test_gpu.py covers the real device."""
import types

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import backend
from pycaffe_lite.kernels import gpu
from cuda_emulation import EmulatedKernels
from conftest import GOLDEN_SSD, golden_cases


class DeviceArray(np.ndarray):
    """A 'device' array: separate memory, reached from the host only by get/set."""

    def get(self, out=None):
        host = np.array(self, copy=True).view(np.ndarray)
        if out is None:
            return host
        out[...] = host
        return out

    def set(self, host):
        self[...] = host


def _device(a):
    return a.view(DeviceArray)


def fake_cupy():
    xp = types.SimpleNamespace()
    for name in dir(np):
        if not name.startswith("_"):
            setattr(xp, name, getattr(np, name))
    xp.asarray = lambda a, dtype=None: _device(np.array(a, dtype=dtype, copy=True))
    xp.zeros = lambda *a, **k: _device(np.zeros(*a, **k))
    xp.empty = lambda *a, **k: _device(np.empty(*a, **k))
    xp.ascontiguousarray = lambda a, dtype=None: _device(np.ascontiguousarray(a, dtype=dtype))
    return xp


@pytest.fixture
def emulated_gpu():
    xp = fake_cupy()
    saved = dict(backend._state)
    backend._state.update(mode=backend.GPU, xp=xp, ops=gpu.CudaOps(xp, EmulatedKernels()))
    yield xp
    assert backend.mode() == backend.GPU, "something switched back to the CPU during the test"
    backend._state.clear()
    backend._state.update(saved)


@pytest.mark.parametrize("name", golden_cases("layers"))
def test_golden_layer_case_in_gpu_mode(name, emulated_gpu, monkeypatch):
    from test_golden_layers import test_layer_case
    made = []
    real = caffe.Net._init

    def spy(self, *a, **k):
        real(self, *a, **k)
        made.append(self)
    monkeypatch.setattr(caffe.Net, "_init", spy)
    test_layer_case(name)
    # The layers that compute really ran on 'device' memory (Flatten and
    # Reshape only share the bottom's memory and never touch it).
    if any(l.type not in ("Input", "Flatten", "Reshape") for net in made for l in net.layers):
        assert any(b._data_buf.device is not None for net in made for b in net.blobs.values())


@pytest.mark.parametrize("name", golden_cases("layers", GOLDEN_SSD))
def test_ssd_golden_layer_case_in_gpu_mode(name, emulated_gpu):
    """The SSD fork's cases through the GPU code paths (Permute's kernel,
    Normalize on the array module, the host-side detection layers)."""
    from test_golden_layers import test_ssd_layer_case
    test_ssd_layer_case(name)


def test_blob_keeps_host_and_device_in_step(emulated_gpu):
    b = caffe.Blob((2, 3))
    b.data[...] = 1                       # written on the host
    dev = b.dev_data                      # copied up
    assert isinstance(dev, DeviceArray) and (dev == 1).all()
    dev += 1                              # written on the device
    assert isinstance(b.data, np.ndarray) and not isinstance(b.data, DeviceArray)
    np.testing.assert_array_equal(b.data, 2)   # copied down on host access
    host = b.data
    host[...] = 5                          # pycaffe style: write into .data, then run
    np.testing.assert_array_equal(b.dev_data, 5)


@pytest.mark.parametrize("case", ["sgd_step", "adam", "sgd_clip"])
def test_solver_case_in_gpu_mode(case, emulated_gpu, tmp_path, monkeypatch):
    run_solver_case(case, tmp_path, monkeypatch, DeviceArray)


def run_solver_case(case, tmp_path, monkeypatch, device_array):
    """20 iterations of a golden solver case in the current (GPU) mode; weights
    at 20 against Caffe's."""
    import json
    import os
    from conftest import GOLDEN, golden_path
    folder = golden_path("solver", case)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    with open(os.path.join(folder, "case.json")) as f:
        tol = json.load(f)["tolerance"]["atol"]
    monkeypatch.chdir(GOLDEN)
    param = caffe.solver.read_solver_param(os.path.join(folder, "solver.prototxt"))
    param.snapshot_prefix = str(tmp_path / "snap")
    solver = caffe.Solver(param)
    solver.net.copy_from("solver/init.caffemodel")
    solver.step(20)
    assert isinstance(solver.history[0], device_array)
    for name, blobs in solver.net.params.items():
        for i, b in enumerate(blobs):
            key = "weights20/%s/%d" % (name, i)
            assert np.abs(b.data - arrays[key]).max() <= tol[key], key


def test_depthwise_and_pointwise_convolution_in_gpu_mode(tmp_path, emulated_gpu):
    """The GPU twins of the CPU fast paths (depthwise through im2col + one GEMM
    per channel; pointwise as batched GEMMs) give the CPU's numbers."""
    path = tmp_path / "net.prototxt"
    path.write_text("""
input: "data" input_shape { dim: 2 dim: 4 dim: 7 dim: 7 }
force_backward: true
layer { name: "dw" type: "Convolution" bottom: "data" top: "dw"
  convolution_param { num_output: 4 group: 4 kernel_size: 3 stride: 2 pad: 1
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
layer { name: "pw" type: "Convolution" bottom: "dw" top: "pw"
  convolution_param { num_output: 5 kernel_size: 1
    weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 } } }
""")
    rng = np.random.RandomState(0)
    x = rng.randn(2, 4, 7, 7).astype(np.float32)
    dy = rng.randn(2, 5, 4, 4).astype(np.float32)
    gpu_net = caffe.Net(str(path), caffe.TEST)
    cpu_state = dict(backend._state)
    runs = []
    for mode in ("gpu", "cpu"):
        if mode == "cpu":
            backend._state.update(mode=backend.CPU, xp=np, ops=backend._cpu_ops)
        net = gpu_net
        net.forward(data=x)
        net.clear_param_diffs()
        net.backward(pw=dy)
        runs.append([net.blobs["pw"].data.copy(), net.blobs["data"].diff.copy()] +
                    [p.diff.copy() for name in ("dw", "pw") for p in net.params[name]])
    backend._state.clear()
    backend._state.update(cpu_state)
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert np.abs(a).max() > 0


FORK_NET = """
force_backward: true
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 8 dim: 6 dim: 8 } } }
layer { name: "rois" type: "Input" top: "rois" input_param { shape { dim: 3 dim: 5 } } }
layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 2 dim: 8 dim: 1 dim: 1 } } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "x" top: "shuffle" shuffle_channel_param { group: 2 } }
layer { name: "norm" type: "Normalize" bottom: "shuffle" top: "norm" norm_param { across_spatial: false
  channel_shared: false scale_filler { type: "uniform" min: 1 max: 2 } } }
layer { name: "axpy" type: "Axpy" bottom: "a" bottom: "norm" bottom: "x" top: "axpy" }
layer { name: "relu6" type: "ReLU6" bottom: "axpy" top: "relu6" }
layer { name: "perm" type: "Permute" bottom: "relu6" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "interp" type: "Interp" bottom: "relu6" top: "interp" interp_param { zoom_factor: 2 } }
layer { name: "pool" type: "Pooling" bottom: "interp" top: "pool" top: "mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "up" type: "Upsample" bottom: "pool" bottom: "mask" top: "up" propagate_down: true propagate_down: false upsample_param { scale: 2 } }
layer { name: "roi" type: "ROIPooling" bottom: "up" bottom: "rois" top: "roi" propagate_down: true propagate_down: false
  roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.5 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "x" bottom: "rois" top: "psroi" propagate_down: true propagate_down: false
  psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 2 } }
"""


def test_fork_layers_in_gpu_mode(tmp_path, emulated_gpu):
    """The forks' kernels inside a net: forward and backward in GPU mode give
    the CPU's numbers."""
    path = tmp_path / "net.prototxt"
    path.write_text(FORK_NET)
    rng = np.random.RandomState(0)
    feed = {"x": rng.randn(2, 8, 6, 8).astype(np.float32),
            "rois": np.array([[0, 0, 0, 15, 11], [1, 2, 3, 9, 10], [1, 4.5, 2.5, 14, 6]], np.float32),
            "a": rng.rand(2, 8, 1, 1).astype(np.float32)}
    caffe.set_random_seed(3)
    net = caffe.Net(str(path), caffe.TEST)
    diffs = {b: rng.randn(*net.blobs[b].shape).astype(np.float32) for b in ("perm", "roi", "psroi")}
    cpu_state = dict(backend._state)
    runs = []
    for mode in ("gpu", "cpu"):
        if mode == "cpu":
            backend._state.update(mode=backend.CPU, xp=np, ops=backend._cpu_ops)
        net.forward(**feed)
        net.clear_param_diffs()
        net.backward(**diffs)
        runs.append([net.blobs[b].data.copy() for b in ("perm", "up", "roi", "psroi")] +
                    [net.blobs[b].diff.copy() for b in ("x", "a")] + [net.params["norm"][0].diff.copy()])
    backend._state.clear()
    backend._state.update(cpu_state)
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert np.abs(a).max() > 0

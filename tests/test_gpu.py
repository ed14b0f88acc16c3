"""On a real GPU (marker gpu; benchmarks/gpu_check.sh runs these): every golden
layer and solver case in GPU mode, CPU and GPU agreement on CaffeNet, and the
Data layer feeding the device. Without CuPy or a device they are skipped."""
import os

import numpy as np
import pytest

import pycaffe_lite as caffe
from conftest import REPO, golden_cases

pytestmark = pytest.mark.gpu


def _gpu_available():
    try:
        caffe.set_mode_gpu()
    except RuntimeError as e:
        return str(e)
    finally:
        caffe.set_mode_cpu()
    return None


_WHY = _gpu_available()


@pytest.fixture
def gpu():
    if _WHY:
        pytest.skip("no GPU here: " + _WHY)
    caffe.set_mode_gpu()
    yield
    caffe.set_mode_cpu()


@pytest.mark.parametrize("name", golden_cases("layers"))
def test_golden_layer_case_on_gpu(name, gpu):
    from test_golden_layers import test_layer_case
    test_layer_case(name)


@pytest.mark.parametrize("case", [c for c in golden_cases("solver") if not c.startswith("resume")])
def test_golden_solver_case_on_gpu(case, gpu, tmp_path, monkeypatch):
    import cupy
    from test_gpu_emulated import run_solver_case
    run_solver_case(case, tmp_path, monkeypatch, cupy.ndarray)


def test_cpu_and_gpu_agree_on_caffenet(gpu):
    import sys
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from bench_caffenet_cpu import train_net_param
    param = train_net_param(4)
    rng = np.random.RandomState(0)
    x = (rng.randn(4, 3, 227, 227) * 50).astype(np.float32)
    labels = rng.randint(0, 1000, size=4)
    results = []
    for mode in ("cpu", "gpu"):
        getattr(caffe, "set_mode_" + mode)()
        caffe.set_random_seed(3)
        net = caffe.Net(param, caffe.TEST)      # TEST: Dropout is the identity
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = labels
        loss = net.forward_backward()
        results.append((float(loss), net.blobs["fc8"].data.copy(), net.params["conv1"][0].diff.copy(),
                        net.params["fc6"][0].diff.copy()))
    (l0, f0, c0, w0), (l1, f1, c1, w1) = results
    assert abs(l0 - l1) <= 1e-4 * abs(l0)
    np.testing.assert_allclose(f1, f0, rtol=1e-3, atol=1e-4 * np.abs(f0).max())
    np.testing.assert_allclose(c1, c0, rtol=1e-3, atol=1e-3 * np.abs(c0).max())
    np.testing.assert_allclose(w1, w0, rtol=1e-3, atol=1e-3 * np.abs(w0).max())


def test_data_layer_feeds_the_device(gpu, monkeypatch):
    from conftest import GOLDEN, golden_path
    folder = golden_path("data", "datalayer_meanfile")
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    monkeypatch.chdir(GOLDEN)
    net = caffe.Net("data/datalayer_meanfile/net.prototxt", caffe.TEST)
    for b in range(6):
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, arrays["batch/%d/data" % b], rtol=1e-6, atol=1e-6)

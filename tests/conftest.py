import json
import os

import numpy as np
import pytest

# The command-line tools write glog's log files, as Caffe's do: a folder of
# their own for the test run (set before pycaffe_lite reads GLOG_* at import).
if "GLOG_log_dir" not in os.environ:
    import tempfile
    os.environ["GLOG_log_dir"] = tempfile.mkdtemp(prefix="pycaffe_lite-test-logs-")

import pycaffe_lite as caffe  # noqa: E402
from pycaffe_lite import backend, glog  # noqa: E402
from pycaffe_lite.kernels import dnnl  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.normpath(os.path.join(REPO, "..", "shared", "golden"))
# The same kinds of cases computed by the SSD fork (weiliu89/caffe, branch ssd).
GOLDEN_SSD = os.path.normpath(os.path.join(REPO, "..", "shared", "golden-ssd"))


def interruptible():
    """preexec_fn for a child a test interrupts with SIGINT: the signal at its
    default, as at a terminal. A test run started as a background job gets
    SIGINT ignored, its children inherit that, and Python then never raises
    KeyboardInterrupt (Caffe's C++ tools would ignore it too)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def golden_path(*parts, tree=GOLDEN):
    path = os.path.join(tree, *parts)
    if not os.path.exists(path):
        pytest.skip("golden fixtures not found at %s (they live in ../shared/%s beside the repo)"
                    % (path, os.path.basename(tree)))
    return path


def golden_cases(kind, tree=GOLDEN):
    """Folder names of one kind of golden case, or a placeholder that skips
    when the tree is absent."""
    index = os.path.join(tree, "index.json")
    if not os.path.exists(index):
        return ["<%s missing>" % os.path.basename(tree)]
    folder = os.path.join(tree, kind)
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))


def load_case(kind, name, tree=GOLDEN):
    folder = golden_path(kind, name, tree=tree)
    with open(os.path.join(folder, "case.json")) as f:
        case = json.load(f)
    arrays = np.load(os.path.join(folder, "arrays.npz"), allow_pickle=False) \
        if os.path.exists(os.path.join(folder, "arrays.npz")) else {}
    return folder, case, arrays


def assert_close(actual, expected, key, tol):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, "%s: shape %s, Caffe has %s" % (key, actual.shape, expected.shape)
    if key in tol.get("exact", []):
        np.testing.assert_array_equal(actual, expected, err_msg=key)
        return
    atol = tol.get("atol", {}).get(key, tol.get("atol_default", 1e-5))
    rtol = tol.get("rtol", 1e-4)
    err = np.abs(actual.astype(np.float64) - expected)
    bound = atol + rtol * np.abs(expected)
    bad = ~(err <= bound)
    assert not bad.any(), "%s: %d of %d values off; worst |diff| %.3g (atol %.3g)" % (
        key, bad.sum(), bad.size, np.nanmax(err), atol)


@pytest.fixture(autouse=True)
def _cpu_mode():
    caffe.set_mode_cpu()
    saved = dict(backend._engine)
    flags = dict(vars(glog.FLAGS))
    yield
    backend._engine.update(saved)     # a test's engine choice ends with it
    vars(glog.FLAGS).update(flags)    # and so does what it told glog (a tool it ran, init_log)


@pytest.fixture(params=backend.CPU_ENGINES)
def both_engines(request):
    """Runs a test once per CPU engine (modules opt in with
    pytestmark = pytest.mark.usefixtures("both_engines"))."""
    if request.param == "dnnl" and not dnnl.available():
        pytest.skip("the oneDNN engine is unavailable here: %s" % dnnl.unavailable_reason())
    backend.set_cpu_engine(request.param)
    yield request.param


@pytest.fixture
def numpy_engine():
    """For tests of the numpy engine's own code paths (kernel tables, fast paths)."""
    backend.set_cpu_engine("numpy")
    yield


def make_datum_lmdb(path, n, size, seed):
    """An LMDB of n random size x size colour Datums, labels cycling 0..2."""
    import lmdb
    from pycaffe_lite.data.datum import hwc_to_datum
    rng = np.random.RandomState(seed)
    env = lmdb.open(path, map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i in range(n):
            img = rng.randint(0, 256, (size, size, 3)).astype(np.uint8)
            txn.put(b"%08d" % i, hwc_to_datum(img, i % 3).SerializeToString())
    env.close()

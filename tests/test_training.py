"""Training beyond the golden runs: exact resume from our own snapshots,
signals, atomic snapshots, bad input, log parsing, the Python solver API."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.solver import DivergenceError, read_solver_param
from pycaffe_lite.tools import caffe as caffe_tool
from pycaffe_lite.tools.parse_log import parse
from conftest import golden_path, make_datum_lmdb

NET = '''name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 6 mirror: true scale: 0.0039 }
  data_param { source: "%(db)s" batch_size: 5 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 6 scale: 0.0039 }
  data_param { source: "%(db)s" batch_size: 4 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "drop" type: "Dropout" bottom: "ip" top: "ip" dropout_param { dropout_ratio: 0.3 } }
layer { name: "out" type: "InnerProduct" bottom: "ip" top: "out"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "acc" type: "Accuracy" bottom: "out" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
'''

SOLVER = '''net: "%(net)s"
test_iter: 2
test_interval: 4
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 5
display: 1
max_iter: %(max_iter)d
snapshot: %(snapshot)d
snapshot_prefix: "%(prefix)s"
solver_mode: CPU
random_seed: 5
type: "%(type)s"
'''


def make_db(path):
    make_datum_lmdb(path, n=13, size=9, seed=0)


@pytest.fixture
def setup(tmp_path):
    db = str(tmp_path / "db")
    make_db(db)
    net = tmp_path / "net.prototxt"
    net.write_text(NET % {"db": db})

    def solver(name="solver", max_iter=12, snapshot=5, type="SGD", prefix=None):
        path = tmp_path / (name + ".prototxt")
        path.write_text(SOLVER % {"net": net, "max_iter": max_iter, "snapshot": snapshot, "type": type,
                                  "prefix": prefix or str(tmp_path / name)})
        return str(path)
    return tmp_path, solver


def params(net):
    return {k: [b.data.copy() for b in v] for k, v in net.params.items()}


@pytest.mark.parametrize("kind", ["SGD", "Adam"])
@pytest.mark.usefixtures("both_engines")
def test_resume_from_our_snapshot_is_exact(setup, kind):
    tmp, solver = setup
    # 5 batches of 5 from 13 records: iteration 5 is mid-epoch, with random
    # crops, mirrors and Dropout masks all in play.
    full = caffe.get_solver(solver("full", type=kind))
    full.solve()
    expected = params(full.net)
    resumed = caffe.get_solver(solver("again", type=kind))
    resumed.solve(str(tmp / "full_iter_5.solverstate"))
    assert resumed.iter == 12
    got = params(resumed.net)
    for name in expected:
        for a, b in zip(expected[name], got[name]):
            np.testing.assert_array_equal(a, b)
    # The test net's cursor was restored too: the last test saw the same data.
    assert full.last_test_scores.keys() == resumed.last_test_scores.keys()
    for k in full.last_test_scores:
        np.testing.assert_array_equal(full.last_test_scores[k], resumed.last_test_scores[k])


def test_python_solver_api(setup):
    tmp, solver = setup
    s = caffe.SGDSolver(solver(max_iter=3, snapshot=0))
    assert isinstance(s.net, caffe.Net) and len(s.test_nets) == 1
    w0 = s.net.params["ip"][0].data.copy()
    s.step(2)
    assert s.iter == 2
    assert not np.array_equal(w0, s.net.params["ip"][0].data)
    assert s.test_nets[0].params["ip"][0] is s.net.params["ip"][0]
    path = s.snapshot()
    assert path.endswith("_iter_2.solverstate") and os.path.exists(path)
    t = caffe.SGDSolver(solver(max_iter=3, snapshot=0))
    t.restore(path)
    assert t.iter == 2
    np.testing.assert_array_equal(t.net.params["ip"][0].data, s.net.params["ip"][0].data)
    with pytest.raises(caffe.ConfigError, match="Adam"):
        caffe.AdamSolver(solver("typed", type="SGD"))


def test_snapshot_given_a_caffemodel(setup, capsys):
    tmp, solver = setup
    assert caffe_tool.main(["train", "--solver=" + solver(), "--snapshot=" + str(tmp / "x.caffemodel")]) == 2
    err = capsys.readouterr().err
    assert "solverstate" in err
    caffe.get_solver(solver(max_iter=5)).solve()
    assert caffe_tool.main(["train", "--solver=" + solver(), "--snapshot=" + str(tmp / "solver_iter_5.caffemodel")]) == 2
    assert ".solverstate" in capsys.readouterr().err


def test_solverstate_that_does_not_fit(setup):
    tmp, solver = setup
    caffe.get_solver(solver("sgd", max_iter=5)).solve()
    adam = caffe.get_solver(solver("adam", type="Adam"))
    with pytest.raises(caffe.FormatError, match="history blobs"):
        adam.restore(str(tmp / "sgd_iter_5.solverstate"))
    other = tmp / "other.prototxt"
    other.write_text((tmp / "net.prototxt").read_text().replace("num_output: 8", "num_output: 9"))
    p = caffe.solver.read_solver_param(solver("sgd2"))
    p.net = str(other)
    s = caffe.Solver(p)
    with pytest.raises(caffe.FormatError, match="history blob 2"):
        s.restore(str(tmp / "sgd_iter_5.solverstate"))


def test_missing_net_file(setup, capsys):
    tmp, solver = setup
    path = solver()
    text = open(path).read().replace(str(tmp / "net.prototxt"), str(tmp / "nope.prototxt"))
    open(path, "w").write(text)
    assert caffe_tool.main(["train", "--solver=" + path]) == 2
    assert "nope.prototxt does not exist" in capsys.readouterr().err


def test_divergence_stops_with_a_snapshot(setup):
    tmp, solver = setup
    path = solver("diverge", max_iter=50, snapshot=100)
    text = open(path).read().replace("base_lr: 0.05", "base_lr: 1e12")
    open(path, "w").write(text)
    s = caffe.get_solver(path)
    with pytest.raises(DivergenceError) as e:
        s.solve()
    it = s.iter
    assert "iteration %d" % it in str(e.value)
    saved = tmp / ("diverge_iter_%d.caffemodel" % it)
    assert saved.exists()
    w = caffe.Net(str(tmp / "net.prototxt"), caffe.TEST, weights=str(saved))
    assert all(np.isfinite(b.data).all() for v in w.params.values() for b in v)


def test_log_columns_match_caffes(setup, capsys, tmp_path):
    tmp, solver = setup
    assert caffe_tool.main(["train", "--solver=" + solver(max_iter=8)]) == 0
    ours = tmp / "ours.log"
    ours.write_text(capsys.readouterr().err)
    train, test, tcols, vcols = parse(str(ours))
    g_train, g_test, g_tcols, g_vcols = parse(golden_path("solver", "sgd_step", "train.log"))
    assert tcols == g_tcols == ["NumIters", "Seconds", "LearningRate", "loss"]
    # Our test net reports acc where the golden net says accuracy; the shape of the table is the same.
    assert g_vcols == ["NumIters", "Seconds", "LearningRate", "accuracy", "loss"]
    assert vcols == ["NumIters", "Seconds", "LearningRate", "acc", "loss"]
    assert [r["NumIters"] for r in train] == list(range(8))
    assert [r["NumIters"] for r in test] == [0, 4, 8]
    assert train[6]["LearningRate"] == pytest.approx(0.025)


def test_plot_training_log(tmp_path):
    pytest.importorskip("matplotlib")
    from pycaffe_lite.tools import plot_training_log
    out = tmp_path / "curves.png"
    assert plot_training_log.main([golden_path("solver", "sgd_step", "train.log"), str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _train_process(tmp, solver_path, *flags):
    return subprocess.Popen([sys.executable, "-m", "pycaffe_lite.tools.caffe", "train", "--solver=" + solver_path]
                            + list(flags), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigint_snapshots_and_exits_cleanly(setup):
    tmp, solver = setup
    path = solver("long", max_iter=100000, snapshot=0)
    proc = _train_process(tmp, path)
    deadline = time.time() + 60
    lines = []
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "Iteration 30," in line:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    log = "".join(lines) + err
    assert proc.returncode == 0, log[-2000:]
    assert "Optimization stopped early." in log
    found = re.findall(r"Snapshotting solver state to binary proto file (\S+)", log)
    assert found and os.path.exists(found[-1])
    state = pb.SolverState.FromString(open(found[-1], "rb").read())
    assert state.iter >= 30


def test_sigkill_never_leaves_a_truncated_snapshot(tmp_path):
    # Large weights make each snapshot take a while, so the kill lands mid-write.
    net = tmp_path / "big.prototxt"
    net.write_text('''layer { name: "x" type: "DummyData" top: "x" top: "y"
      dummy_data_param { shape { dim: 2 dim: 3000 } shape { dim: 2 } } }
      layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
        inner_product_param { num_output: 3000 weight_filler { type: "gaussian" std: 0.01 } } }
      layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }''')
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s" base_lr: 0.01 lr_policy: "fixed" max_iter: 100000 snapshot: 1 display: 0 '
                      'snapshot_prefix: "%s/snap" solver_mode: CPU' % (net, tmp_path))
    for delay in (1.5, 2.3, 3.1):
        proc = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.tools.caffe", "train",
                                 "--solver=%s" % solver], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.kill()
        proc.wait()
        for f in os.listdir(tmp_path):
            if f.startswith("snap_iter_") and f.endswith(".caffemodel"):
                w = pb.NetParameter.FromString((tmp_path / f).read_bytes())
                assert len(w.layer[1].blobs[0].data) == 3000 * 3000, f
            elif f.startswith("snap_iter_") and f.endswith(".solverstate"):
                s = pb.SolverState.FromString((tmp_path / f).read_bytes())
                assert len(s.history) == 2, f
        for f in os.listdir(tmp_path):
            if f.startswith("snap_iter_"):
                os.unlink(tmp_path / f)


def test_gpu_flag_without_a_gpu_is_one_clear_error(setup, capsys):
    tmp, solver = setup
    assert caffe_tool.main(["train", "--solver=" + solver(), "--gpu=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --gpu needs CuPy") and "Traceback" not in err and err.count("\n") == 1


def test_caffe_time_times_every_backward_like_caffe(tmp_path, capsys):
    """Caffe's time runs each layer's Backward whatever need_backward says, so
    a deploy net (no loss) still shows its backward cost: the parameter
    gradients of conv and fc layers."""
    from conftest import REPO
    model = tmp_path / "deploy.prototxt"
    text = open(os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")).read()
    model.write_text(text.replace("dim: 10 dim: 3 dim: 227 dim: 227", "dim: 2 dim: 3 dim: 227 dim: 227"))
    assert caffe_tool.main(["time", "--model=%s" % model, "--iterations=2"]) == 0
    err = capsys.readouterr().err
    backward = dict(re.findall(r"\] +(\S+)\tbackward: ([0-9.e-]+) ms", err))
    assert set(backward) == {"data", "conv1", "relu1", "pool1", "norm1", "conv2", "relu2", "pool2", "norm2", "conv3",
                             "relu3", "conv4", "relu4", "conv5", "relu5", "pool5", "fc6", "relu6", "drop6", "fc7",
                             "relu7", "drop7", "fc8", "prob"}
    assert all(float(v) > 0 for v in backward.values())
    # The parameter gradients cost about as much as the forward GEMMs.
    forward = dict(re.findall(r"\] +(\S+)\tforward: ([0-9.e-]+) ms", err))
    assert float(backward["fc6"]) > 0.3 * float(forward["fc6"])
    assert float(re.search(r"Average Backward pass: ([0-9.e-]+) ms", err).group(1)) > 1


def test_solver_refuses_a_snapshot_prefix_it_cannot_write(setup, capsys):
    tmp, solver = setup
    path = solver("nowhere", prefix=str(tmp / "missing" / "folder" / "net"))
    with pytest.raises(caffe.ConfigError, match=r"Cannot write to snapshot prefix '.*missing/folder/net'"):
        caffe.get_solver(path)
    assert not list(tmp.glob("**/*.tempfile"))
    # the command line says it in one line, before any training
    assert caffe_tool.main(["train", "--solver=" + path]) == 2
    err = capsys.readouterr().err
    assert "Cannot write to snapshot prefix" in err and "Iteration" not in err and "Traceback" not in err


def test_snapshot_prefix_defaults_to_the_solver_file_as_in_caffe(setup):
    tmp, solver = setup
    text = open(solver("mine")).read()
    no_prefix = tmp / "noprefix.prototxt"
    no_prefix.write_text("\n".join(l for l in text.splitlines() if not l.startswith("snapshot_prefix")))
    s = caffe.get_solver(str(no_prefix))
    assert s.param.snapshot_prefix == str(tmp / "noprefix")
    folder = tmp / "snaps"
    folder.mkdir()
    in_folder = tmp / "infolder.prototxt"
    in_folder.write_text(text.replace('snapshot_prefix: "%s"' % (tmp / "mine"), 'snapshot_prefix: "%s"' % folder))
    s = caffe.get_solver(str(in_folder))
    assert s.param.snapshot_prefix == str(folder / "infolder")
    s.step(5)
    assert (folder / "infolder_iter_5.caffemodel").exists()


def test_a_solver_parameter_with_snapshots_needs_a_prefix(setup):
    tmp, solver = setup
    param = pb.SolverParameter()
    param.CopyFrom(read_solver_param(solver("p")))
    param.ClearField("snapshot_prefix")
    with pytest.raises(caffe.ConfigError, match="snapshot is specified .* but snapshot_prefix is not"):
        caffe.SGDSolver(param)

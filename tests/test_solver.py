"""Training against BVLC Caffe's own 20-iteration runs (../shared/golden/solver):
weights at 10 and 20, logged losses, learning rates and test outputs, the
snapshot contents, and resume."""
import json
import os
import re

import numpy as np
import pytest

from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import caffe as caffe_tool
from pycaffe_lite.tools.parse_log import parse
from conftest import GOLDEN, golden_cases, golden_path

# Run under both CPU engines: numpy (the reference) and oneDNN.
pytestmark = pytest.mark.usefixtures("both_engines")

RUNS = [c for c in golden_cases("solver") if c not in ("resume", "resume_aligned")]


def run_tool(tmp_path, monkeypatch, capsys, case, extra, solver_text=None):
    """caffe train from the golden root with snapshots redirected to tmp_path; returns the log."""
    folder = golden_path("solver", case)
    text = solver_text or open(os.path.join(folder, "solver.prototxt")).read()
    text = re.sub(r'snapshot_prefix: "[^"]*"', 'snapshot_prefix: "%s/snap"' % tmp_path, text)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text)
    monkeypatch.chdir(GOLDEN)
    capsys.readouterr()
    assert caffe_tool.main(["train", "--solver=%s" % solver] + extra) == 0
    log = tmp_path / "train.log"
    log.write_text(capsys.readouterr().err)
    return str(log)


def weights_of(path):
    net = pb.NetParameter()
    with open(path, "rb") as f:
        net.ParseFromString(f.read())
    out = {}
    for layer in net.layer:
        for i, b in enumerate(layer.blobs):
            out["%s/%d" % (layer.name, i)] = np.array(b.data, np.float32).reshape(tuple(b.shape.dim))
    return out


def logged_losses(log):
    """(iteration, loss) of every 'Iteration N (... iter/s ...), loss = X' line,
    then the forward-only 'Iteration N, loss = X' Caffe logs after the last update."""
    with open(log) as f:
        text = f.read()
    found = re.findall(r"Iteration (\d+) \([^)]*\), loss = (\S+)", text)
    found += re.findall(r"Iteration (\d+), loss = (\S+)", text)[-1:]
    return [int(i) for i, _ in found], [float(v) for _, v in found]


def check_weights(tmp_path, arrays, tol, it):
    got = weights_of(str(tmp_path / ("snap_iter_%d.caffemodel" % it)))
    keys = [k for k in arrays if k.startswith("weights%d/" % it)]
    assert keys
    for key in keys:
        name = key.split("/", 1)[1]
        err = np.abs(got[name] - arrays[key]).max()
        assert err <= tol["atol"][key], "%s off by %.3g (atol %.3g)" % (key, err, tol["atol"][key])


@pytest.mark.parametrize("case", RUNS)
def test_solver_matches_caffe(case, tmp_path, monkeypatch, capsys):
    folder = golden_path("solver", case)
    with open(os.path.join(folder, "case.json")) as f:
        meta = json.load(f)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    tol = meta["tolerance"]
    log = run_tool(tmp_path, monkeypatch, capsys, case, ["--weights=solver/init.caffemodel"])
    train, test, tcols, vcols = parse(log)

    # Losses of iterations 0..19, then the forward-only loss Caffe logs at 20.
    iters, losses = logged_losses(log)
    assert iters == list(arrays["loss_iter"])
    assert [r["NumIters"] for r in train] == list(arrays["loss_iter"][:-1])
    np.testing.assert_allclose(losses, arrays["loss"], rtol=0, atol=tol["atol"]["loss"] + 1e-9)
    lrs = [r["LearningRate"] for r in train]
    np.testing.assert_allclose(lrs, arrays["lr"], rtol=1e-6)
    # Tests at 0, 5, 10, 15, 20.
    assert [r["NumIters"] for r in test] == list(arrays["test_iter"])
    for name in vcols[3:]:
        values = [r[name] for r in test]
        if name == "accuracy":
            np.testing.assert_array_equal(values, arrays["test/accuracy"])
        else:
            np.testing.assert_allclose(values, arrays["test/" + name], atol=tol["atol"]["loss"] + 1e-9, rtol=0)

    for it in (10, 20):
        check_weights(tmp_path, arrays, tol, it)
        state = pb.SolverState()
        with open(str(tmp_path / ("snap_iter_%d.solverstate" % it)), "rb") as f:
            state.ParseFromString(f.read())
        assert state.iter == int(arrays["state%d/iter" % it])
        assert state.current_step == int(arrays["state%d/current_step" % it])
        assert state.learned_net == str(tmp_path / ("snap_iter_%d.caffemodel" % it))
        hist = [k for k in arrays if k.startswith("state%d/history/" % it)]
        assert len(state.history) == len(hist)
        for i, proto in enumerate(state.history):
            expected = arrays["state%d/history/%d" % (it, i)]
            got = np.array(proto.data, np.float32).reshape(tuple(proto.shape.dim))
            assert got.shape == expected.shape
            np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max() + 1e-9)


def test_gradient_clipping_is_logged_like_caffe(tmp_path, monkeypatch, capsys):
    folder = golden_path("solver", "sgd_clip")
    with open(os.path.join(folder, "case.json")) as f:
        meta = json.load(f)
    log = run_tool(tmp_path, monkeypatch, capsys, "sgd_clip", ["--weights=solver/init.caffemodel"])
    with open(log) as f:
        ours = [l.split("] ", 1)[1] for l in f if "Gradient clipping" in l]
    assert len(ours) == len(meta["gradient_clipping_log"]) > 0


@pytest.mark.parametrize("case", ["resume", "resume_aligned"])
def test_resuming_caffes_solverstate(case, tmp_path, monkeypatch, capsys):
    folder = golden_path("solver", case)
    with open(os.path.join(folder, "case.json")) as f:
        meta = json.load(f)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    snapshot = re.search(r"--snapshot=(\S+)", meta["how"]).group(1)
    log = run_tool(tmp_path, monkeypatch, capsys, case, ["--snapshot=%s" % snapshot])
    tol = {"atol": {k: 1e-5 for k in arrays if k.startswith("weights20/")}}
    tol["atol"].update(meta.get("tolerance", {}).get("atol", {}))
    check_weights(tmp_path, arrays, tol, 20)
    train, test, _, _ = parse(log)
    assert train[0]["NumIters"] == meta["resumed_from_iter"]
    np.testing.assert_allclose(logged_losses(log)[1], arrays["loss"], atol=1e-5 + 1e-9)
    assert [r["accuracy"] for r in test] == [t["outputs"]["accuracy"] for t in meta["tests"]]

"""The SSD fork's detection training and testing against its own runs
(../shared/golden-ssd/solver): mAP and per-class AP for each ap_version from
fixed detections, and a tiny SSD trained 10 iterations (losses, learning
rates, the test mAPs at 0, 5 and 10, weights and momentum at 10)."""
import os
import re

import numpy as np
import pytest

from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import caffe as caffe_tool
from conftest import GOLDEN_SSD, golden_cases, load_case

pytestmark = pytest.mark.usefixtures("both_engines")


def train(tmp_path, monkeypatch, capsys, folder, case):
    text = open(os.path.join(folder, "solver.prototxt")).read()
    text = re.sub(r'snapshot_prefix: "[^"]*"', 'snapshot_prefix: "%s/snap"' % tmp_path, text)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(text)
    monkeypatch.chdir(GOLDEN_SSD)
    capsys.readouterr()
    assert caffe_tool.main(["train", "--solver=%s" % solver, "--weights=%s" % case["initial_weights"]]) == 0
    return capsys.readouterr().err


def logged_tests(log):
    """[{iter, outputs: {name: mAP}, class_ap: {name: {label: AP}}}] from the log's test blocks."""
    tests, classes = [], {}
    for line in log.splitlines():
        m = re.search(r"Iteration (\d+), Testing net", line)
        if m:
            tests.append({"iter": int(m.group(1)), "outputs": {}, "class_ap": {}})
            classes = {}
        m = re.search(r"\] class(\d+): (\S+)$", line)
        if m:
            classes[m.group(1)] = float(m.group(2))
        m = re.search(r"Test net output #\d+: (\S+) = (\S+)", line)
        if m:
            tests[-1]["outputs"][m.group(1)] = float(m.group(2))
            tests[-1]["class_ap"][m.group(1)] = classes
            classes = {}
    return tests


def check_tests(log, case):
    atol = case["tolerance"]["atol"]
    atol = atol.get("test/detection_eval", atol["loss"]) if isinstance(atol, dict) else atol
    ours = logged_tests(log)
    assert [t["iter"] for t in ours] == [t["iter"] for t in case["tests"]]
    for got, want in zip(ours, case["tests"]):
        assert got["outputs"].keys() == want["outputs"].keys()
        for name, value in want["outputs"].items():
            assert abs(got["outputs"][name] - value) <= atol + 1e-9, (got["iter"], name, got["outputs"][name], value)
            assert got["class_ap"][name].keys() == want["class_ap"][name].keys()
            for label, ap in want["class_ap"][name].items():
                assert abs(got["class_ap"][name][label] - ap) <= atol + 1e-9, (name, label)


@pytest.mark.parametrize("name", [c for c in golden_cases("solver", GOLDEN_SSD)
                                  if c.startswith(("detection_eval", "<"))])
def test_detection_eval_matches_the_fork(name, tmp_path, monkeypatch, capsys):
    folder, case, _ = load_case("solver", name, GOLDEN_SSD)
    check_tests(train(tmp_path, monkeypatch, capsys, folder, case), case)


def test_ssd_training_matches_the_fork(tmp_path, monkeypatch, capsys):
    folder, case, arrays = load_case("solver", "ssd_sgd", GOLDEN_SSD)
    log = train(tmp_path, monkeypatch, capsys, folder, case)
    tol = case["tolerance"]["atol"]
    found = re.findall(r"Iteration (\d+)(?: \([^)]*\))?, loss = (\S+)", log)
    assert [int(i) for i, _ in found] == list(arrays["loss_iter"])
    np.testing.assert_allclose([float(v) for _, v in found], arrays["loss"], rtol=0, atol=tol["loss"])
    lrs = re.findall(r"Iteration (\d+), lr = (\S+)", log)
    assert [int(i) for i, _ in lrs] == list(arrays["lr_iter"])
    np.testing.assert_allclose([float(v) for _, v in lrs], arrays["lr"], rtol=1e-6)
    check_tests(log, case)

    net = pb.NetParameter()
    net.ParseFromString((tmp_path / "snap_iter_10.caffemodel").read_bytes())
    got = {"%s/%d" % (l.name, i): np.array(b.data, np.float32) for l in net.layer for i, b in enumerate(l.blobs)}
    keys = [k for k in arrays if k.startswith("weights10/")]
    assert keys and set(got) == {k.split("/", 1)[1] for k in keys}
    for key in keys:
        err = np.abs(got[key.split("/", 1)[1]] - arrays[key].ravel()).max()
        assert err <= tol[key], "%s off by %.3g (atol %.3g)" % (key, err, tol[key])
    state = pb.SolverState()
    state.ParseFromString((tmp_path / "snap_iter_10.solverstate").read_bytes())
    assert (state.iter, state.current_step) == (int(arrays["state10/iter"]), int(arrays["state10/current_step"]))
    for i, proto in enumerate(state.history):
        expected = arrays["state10/history/%d" % i]
        np.testing.assert_allclose(np.array(proto.data, np.float32).reshape(expected.shape), expected,
                                   rtol=1e-4, atol=1e-5 * np.abs(expected).max() + 1e-9)

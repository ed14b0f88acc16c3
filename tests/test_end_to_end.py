"""The recipe end to end, as a newcomer runs it: the brew demo (scikit-learn's
digits in ImageNet's folder layout -> lists, LMDBs, mean, caffe train with a
resume from the middle snapshot, caffe time, Classifier, pictures), at a
reduced number of iterations; and Ctrl-C during conversion and training."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import lmdb
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.tools import brew_demo
from conftest import interruptible

DEMO = [sys.executable, "-m", "pycaffe_lite.tools.brew_demo"]


@pytest.mark.slow
def test_demo_brews_digits(tmp_path):
    work = tmp_path / "brew"
    res = subprocess.run(DEMO + [str(work), "--iterations=120"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = res.stdout
    # Each step shows the command a user would type.
    for cmd in ("pycaffe_lite.tools.make_imagenet_lists", "pycaffe_lite.tools.convert_imageset",
                "pycaffe_lite.tools.compute_image_mean", "caffe train --solver=models/digits/solver_first_half",
                "--snapshot=models/digits/digits_train_iter_60.solverstate", "caffe time --model=",
                "caffe.Classifier("):
        assert cmd in out, cmd
    accuracy = float(re.search(r"validation accuracy: ([0-9.]+)%", out).group(1))
    assert accuracy > 85, out[-1500:]
    assert re.search(r"\d+\.\d s  in all", out)
    for picture in ("training_curve.png", "predictions.png"):
        assert (work / picture).read_bytes()[:4] == b"\x89PNG"
    assert (work / "net.png").exists() or "net.dot" in out
    for path in ("examples/digits/train_lmdb", "examples/digits/val_lmdb", "data/digits/mean.binaryproto",
                 "models/digits/digits_train_iter_60.solverstate", "models/digits/digits_train_iter_120.caffemodel",
                 "logs/train.log", "logs/resume.log"):
        assert (work / path).exists(), path
    # The glog lines are in the logs, with no progress bar in them.
    log = (work / "logs" / "resume.log").read_text()
    assert "Restoring previous solver status from" in log and "\r" not in log
    # The picture names classes by what they mean: a correctly classified
    # image is titled with the digit it shows (its source in scikit-learn's
    # set), the synset beside it; synset_words.txt says what each synset is.
    from sklearn.datasets import load_digits
    target = load_digits().target
    titles = json.loads((work / "predictions.json").read_text())
    assert len(titles) == 24 and sum(t["right"] for t in titles) >= 18
    for t in titles:
        digit = int(re.match(r"val_(\d+)\.png", t["image"]).group(1))
        if t["right"]:
            assert re.fullmatch(r"%d \(n\d{8}\)" % target[digit], t["title"]), t
        else:
            assert re.search(r"\ntrue %d \(n\d{8}\)$" % target[digit], t["title"]), t
    words = dict(line.split() for line in (work / "data/digits/synset_words.txt").read_text().splitlines())
    synsets = (work / "data/digits/synsets.txt").read_text().split()
    assert list(words) == synsets
    for wnid, word in words.items():
        sample = next((work / "images/train" / wnid).iterdir()).name
        assert target[int(re.search(r"_(\d+)\.png", sample).group(1))] == int(word)
    assert re.search(r"\d\.\d{4}  n\d{8} \d", out)          # classify.py's top classes, by their words
    # A second run into the same folder refuses.
    again = subprocess.run(DEMO + [str(work)], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "already holds files" in again.stderr


@pytest.mark.slow
def test_demo_brews_a_detector(tmp_path):
    work = tmp_path / "brew"
    res = subprocess.run(DEMO + ["--detection", str(work), "--iterations=300"], capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    out = res.stdout
    for cmd in ("pycaffe_lite.tools.create_label_map --include_background=true",
                "pycaffe_lite.tools.convert_annoset --anno_type=detection --label_type=xml",
                "caffe train --solver=models/shapes/solver_first_half",
                "--snapshot=models/shapes/ssd_shapes_iter_150.solverstate"):
        assert cmd in out, cmd
    m = float(re.search(r"validation mAP: ([0-9.]+)", out).group(1))
    assert m > 0.5, out[-1500:]
    # The solver's own test lines carry the same mAP, class by class with VOC's boxes.
    log = (work / "logs" / "resume.log").read_text()
    assert "Restoring previous solver status from" in log
    assert float(re.findall(r"Test net output #0: detection_eval = (\S+)", log)[-1]) == pytest.approx(m, abs=1e-3)
    xml = (work / "data/shapes/Annotations/val_0000.xml").read_text()
    assert "<bndbox>" in xml and "<name>" in xml
    env = lmdb.open(str(work / "examples/shapes/val_lmdb"), readonly=True, lock=False)
    assert env.stat()["entries"] == 160
    env.close()
    assert (work / "detections.png").read_bytes()[:4] == b"\x89PNG"
    assert "models/shapes/train.prototxt" in (work / "models/shapes/solver.prototxt").read_text()
    train = (work / "models/shapes/train.prototxt").read_text()
    for kind in ("AnnotatedData", "batch_sampler", "distort_param", "MultiBoxLoss", "PriorBox", "Permute"):
        assert kind in train, kind


def interrupt_when(tmp_path, pattern, log):
    """Start the demo, send SIGINT once `pattern` shows in logs/LOG: the
    state the test needs, however long a busy machine takes to reach it."""
    work = tmp_path / "brew"
    # its output goes to files: a pipe nobody reads fills up and stalls it
    with open(tmp_path / "stdout", "w") as out_f, open(tmp_path / "stderr", "w") as err_f:
        proc = subprocess.Popen(DEMO + [str(work), "--iterations=400"], stdout=out_f, stderr=err_f,
                                preexec_fn=interruptible)
        path = work / "logs" / log
        deadline = time.time() + 600
        while proc.poll() is None:
            assert time.time() < deadline, "the demo never logged %r in %s" % (pattern, log)
            if path.exists() and re.search(pattern, path.read_text()):
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
        assert proc.poll() is None or proc.returncode == 130, "the demo ended before %r showed" % pattern
        proc.wait(timeout=600)
    return work, proc.returncode, (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()


@pytest.mark.slow
def test_ctrl_c_during_conversion_leaves_no_half_database(tmp_path):
    work, code, out, err = interrupt_when(tmp_path, r"A total of \d+ images", "convert_train.log")
    assert code == 130, err[-2000:]
    assert "interrupted" in err
    leftovers = [n for n in os.listdir(work / "examples" / "digits")] if (work / "examples/digits").exists() else []
    # Either the conversion finished (the database is whole) or nothing of it is left.
    for name in leftovers:
        assert name in ("train_lmdb", "val_lmdb"), leftovers
        env = lmdb.open(str(work / "examples/digits" / name), readonly=True, lock=False)
        assert env.stat()["entries"] > 0
        env.close()


@pytest.mark.slow
def test_ctrl_c_during_training_leaves_whole_snapshots(tmp_path):
    work, code, out, err = interrupt_when(tmp_path, r"Iteration 3\d ", "train.log")
    assert code == 130, err[-2000:]
    log = (work / "logs" / "train.log").read_text()
    assert "Optimization stopped early." in log
    snaps = sorted(p for p in os.listdir(work / "models" / "digits") if p.endswith(".caffemodel"))
    assert snaps, "Caffe's SIGINT stops with a snapshot"
    assert not [p for p in os.listdir(work / "models" / "digits") if p.endswith(".tmp")]
    for name in snaps:
        caffe.Net(str(work / "models/digits/deploy.prototxt"), str(work / "models/digits" / name), caffe.TEST)


def test_demo_refuses_a_folder_with_files(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert brew_demo.main([str(tmp_path)]) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine"

"""Data: convert_imageset and compute_image_mean against Caffe's own outputs,
the Data and ImageData layers against Caffe's batches, TRAIN-phase behaviour,
and bad input."""
import json
import os
import signal
import subprocess
import sys
import time

import lmdb
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.data.datum import hwc_to_datum
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import compute_image_mean, convert_imageset
from conftest import GOLDEN, REPO, golden_path, interruptible


def records(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k, v) for k, v in txn.cursor()]
    env.close()
    return out


def convert(argv):
    assert convert_imageset.main(argv) == 0


@pytest.mark.parametrize("case", ["convert_resize", "convert_gray", "convert_encoded", "convert_noresize"])
def test_convert_imageset_matches_caffe(case, tmp_path, monkeypatch):
    folder = golden_path("data", case)
    with open(os.path.join(folder, "case.json")) as f:
        command = json.load(f)["command"]
    monkeypatch.chdir(GOLDEN)
    out = str(tmp_path / "db")
    convert(["--workers=2"] + command[1:-1] + [out])
    ours, caffes = records(out), records(os.path.join(folder, "db"))
    assert [k for k, _ in ours] == [k for k, _ in caffes]
    for (key, a), (_, b) in zip(ours, caffes):
        da, db = pb.Datum.FromString(a), pb.Datum.FromString(b)
        assert (da.label, da.channels, da.height, da.width, da.encoded) == \
               (db.label, db.channels, db.height, db.width, db.encoded), key
        if da.encoded:
            import cv2
            pa = cv2.imdecode(np.frombuffer(da.data, np.uint8), cv2.IMREAD_COLOR)
            pb_ = cv2.imdecode(np.frombuffer(db.data, np.uint8), cv2.IMREAD_COLOR)
            np.testing.assert_array_equal(pa, pb_, err_msg=key)
        else:
            np.testing.assert_array_equal(np.frombuffer(da.data, np.uint8), np.frombuffer(db.data, np.uint8),
                                          err_msg=key)


def test_compute_image_mean_matches_caffe(tmp_path, monkeypatch):
    folder = golden_path("data", "mean")
    monkeypatch.chdir(GOLDEN)
    out = str(tmp_path / "mean.binaryproto")
    assert compute_image_mean.main(["data/convert_resize/db", out]) == 0
    with open(out, "rb") as a, open(os.path.join(folder, "mean.binaryproto"), "rb") as b:
        assert a.read() == b.read()


@pytest.mark.parametrize("case", ["datalayer_meanfile", "datalayer_meanvalue", "imagedata"])
def test_data_layer_batches_match_caffe(case, monkeypatch):
    folder = golden_path("data", case)
    with open(os.path.join(folder, "case.json")) as f:
        meta = json.load(f)
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    monkeypatch.chdir(GOLDEN)
    net = caffe.Net(os.path.join("data", case, "net.prototxt"), caffe.TEST)
    for b in range(meta["batches"]):
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, arrays["batch/%d/data" % b], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data, arrays["batch/%d/label" % b])


# ---------------------------------------------------------------- shapes of nets with Data layers

def _make_db(path, n, shape, rng):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    env = lmdb.open(path, map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i in range(n):
            img = rng.randint(0, 256, size=(shape[1], shape[2], shape[0])).astype(np.uint8)
            txn.put(b"%08d" % i, hwc_to_datum(img, i % 10).SerializeToString())
    env.close()


def _make_mean(db, out):
    os.makedirs(os.path.dirname(out), exist_ok=True)
    assert compute_image_mean.main([db, out]) == 0


NETS = {
    "bvlc_reference_caffenet_train_val": ("models/bvlc_reference_caffenet/train_val.prototxt",
                                          [("examples/imagenet/ilsvrc12_train_lmdb", (3, 256, 256)),
                                           ("examples/imagenet/ilsvrc12_val_lmdb", (3, 256, 256))],
                                          "data/ilsvrc12/imagenet_mean.binaryproto"),
    "lenet_train_test": ("examples/mnist/lenet_train_test.prototxt",
                         [("examples/mnist/mnist_train_lmdb", (1, 28, 28)),
                          ("examples/mnist/mnist_test_lmdb", (1, 28, 28))], None),
    "cifar10_quick_train_test": ("examples/cifar10/cifar10_quick_train_test.prototxt",
                                 [("examples/cifar10/cifar10_train_lmdb", (3, 32, 32)),
                                  ("examples/cifar10/cifar10_test_lmdb", (3, 32, 32))],
                                 "examples/cifar10/mean.binaryproto"),
}


@pytest.mark.parametrize("case_name", sorted(NETS))
def test_shape_cases_with_data_layers(case_name, tmp_path, monkeypatch):
    from test_shapes import describe
    path = golden_path("shapes", case_name, "case.json")
    with open(path) as f:
        case = json.load(f)
    prototxt, dbs, mean = NETS[case_name]
    monkeypatch.chdir(tmp_path)
    rng = np.random.RandomState(0)
    for db, shape in dbs:
        _make_db(db, 3, shape, rng)
    if mean:
        _make_mean(dbs[0][0], mean)
    for phase in ("TRAIN", "TEST"):
        expected = case["phases"][phase]
        net = caffe.Net(os.path.join(REPO, prototxt), getattr(caffe, phase))
        layers, blobs = describe(net)
        assert layers == expected["layers"], phase
        assert blobs == expected["blobs"], phase
        assert net.outputs == expected["outputs"]
        assert {k: v for k, v in net.blob_loss_weights.items() if v} == expected["loss_weights"]


# ---------------------------------------------------------------- TRAIN-phase behaviour

def _numbered_db(path, n=6, size=(3, 8, 8)):
    """Records whose pixels encode (record, channel, row, col), so every crop
    and mirror can be read back from the output."""
    env = lmdb.open(path, map_size=1 << 26)
    with env.begin(write=True) as txn:
        for i in range(n):
            c, h, w = size
            img = np.zeros((h, w, c), np.uint8)
            img[...] = (np.arange(h)[:, None, None] * 16 + np.arange(w)[None, :, None] + 0)
            img[..., 0] = (img[..., 0] % 128)
            img[0, 0, 2] = 200 + i            # record id, in a corner a crop may cut off
            txn.put(b"%08d" % i, hwc_to_datum(img, label=i).SerializeToString())
    env.close()


def test_train_crops_mirrors_and_labels(tmp_path):
    db = str(tmp_path / "db")
    _numbered_db(db)
    net_text = '''layer { name: "d" type: "Data" top: "data" top: "label"
        transform_param { crop_size: 5 mirror: true }
        data_param { source: "%s" batch_size: 3 backend: LMDB } }''' % db
    p = tmp_path / "net.prototxt"
    p.write_text(net_text)
    caffe.set_random_seed(3)
    net = caffe.Net(str(p), caffe.TRAIN)
    seen_offsets, seen_mirror, labels = set(), set(), []
    full = np.arange(8)[:, None] * 16 + np.arange(8)[None, :]
    for _ in range(40):
        net.forward()
        for img, label in zip(net.blobs["data"].data, net.blobs["label"].data):
            labels.append(int(label))
            g = img[1].astype(int)                     # channel 1 holds row*16 + col
            flipped = g[0, 0] > g[0, -1]
            if flipped:
                g = g[:, ::-1]
            r0, c0 = divmod(int(g[0, 0]), 16)
            assert 0 <= r0 <= 3 and 0 <= c0 <= 3, "crop outside the image"
            np.testing.assert_array_equal(g, full[r0:r0 + 5, c0:c0 + 5])
            seen_offsets.add((r0, c0))
            seen_mirror.add(bool(flipped))
    assert seen_offsets == {(r, c) for r in range(4) for c in range(4)}
    assert seen_mirror == {True, False}
    # Labels follow the records in key order, wrapping around.
    assert labels == [i % 6 for i in range(len(labels))]


# ---------------------------------------------------------------- bad input

@pytest.fixture
def image_tree(tmp_path):
    import cv2
    root = tmp_path / "images"
    root.mkdir()
    for i in range(4):
        cv2.imwrite(str(root / ("%d.png" % i)), np.full((6, 7, 3), 40 * i, np.uint8))
    (root / "broken.jpg").write_bytes(b"not an image at all")
    return root


def test_missing_and_unreadable_images_are_skipped_and_counted(image_tree, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("0.png 0\nmissing.png 1\n1.png 1\nbroken.jpg 2\n2.png 2\n")
    out = str(tmp_path / "db")
    convert(["--workers=1", str(image_tree) + "/", str(lst), out])
    err = capsys.readouterr().err
    assert "line 2" in err and "missing.png" in err
    assert "line 4" in err and "broken.jpg" in err
    assert "Skipped 2 of 5 images" in err
    assert [k for k, _ in records(out)] == [b"00000000_0.png", b"00000002_1.png", b"00000004_2.png"]


def test_list_line_without_label(image_tree, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("0.png 0\n1.png\n")
    assert convert_imageset.main([str(image_tree) + "/", str(lst), str(tmp_path / "db")]) == 2
    err = capsys.readouterr().err
    assert "list.txt:2" in err and "no label" in err
    assert not os.path.exists(tmp_path / "db")


def test_existing_output_db_is_refused(image_tree, tmp_path, capsys):
    lst = tmp_path / "list.txt"
    lst.write_text("0.png 0\n")
    out = tmp_path / "db"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert convert_imageset.main([str(image_tree) + "/", str(lst), str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def test_empty_db_for_the_mean(tmp_path, capsys):
    db = str(tmp_path / "empty")
    lmdb.open(db, map_size=1 << 20).close()
    assert compute_image_mean.main([db, str(tmp_path / "m.binaryproto")]) == 2
    assert "empty" in capsys.readouterr().err


def test_mixed_record_sizes_for_the_mean(tmp_path, capsys):
    db = str(tmp_path / "mixed")
    env = lmdb.open(db, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"a", hwc_to_datum(np.zeros((4, 4, 3), np.uint8), 0).SerializeToString())
        txn.put(b"b", hwc_to_datum(np.zeros((5, 4, 3), np.uint8), 0).SerializeToString())
    env.close()
    assert compute_image_mean.main([db]) == 2
    err = capsys.readouterr().err
    assert "'b'" in err and "same size" in err


def test_corrupted_record_names_the_key(tmp_path):
    db = str(tmp_path / "db")
    env = lmdb.open(db, map_size=1 << 22)
    with env.begin(write=True) as txn:
        txn.put(b"00000000_ok", hwc_to_datum(np.zeros((4, 4, 3), np.uint8), 0).SerializeToString())
        txn.put(b"00000001_bad", b"\xff\xff\xff garbage")
    env.close()
    p = tmp_path / "net.prototxt"
    p.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                 'data_param { source: "%s" batch_size: 2 backend: LMDB } }' % db)
    net = caffe.Net(str(p), caffe.TEST)
    with pytest.raises(caffe.FormatError, match="00000001_bad"):
        net.forward()


def test_mean_file_that_does_not_fit(tmp_path):
    db = str(tmp_path / "db")
    _numbered_db(db)
    mean = pb.BlobProto(num=1, channels=3, height=6, width=6)
    mean.data.extend([0.0] * 108)
    (tmp_path / "mean.binaryproto").write_bytes(mean.SerializeToString())
    p = tmp_path / "net.prototxt"
    p.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                 'transform_param { crop_size: 4 mean_file: "%s" } '
                 'data_param { source: "%s" batch_size: 2 backend: LMDB } }' % (tmp_path / "mean.binaryproto", db))
    with pytest.raises(caffe.ShapeError, match="mean"):
        net = caffe.Net(str(p), caffe.TEST)
        net.forward()


def test_interrupted_convert_leaves_no_database(tmp_path):
    import cv2
    root = tmp_path / "many"
    root.mkdir()
    rng = np.random.RandomState(0)
    for i in range(4):
        cv2.imwrite(str(root / ("%d.png" % i)), rng.randint(0, 255, (200, 200, 3)).astype(np.uint8))
    # far more records than can be written before the signal: the state the
    # test waits for (1000 records written, glog's "Processed 1000 files.")
    # comes long before the end, however busy the machine
    lst = tmp_path / "list.txt"
    lst.write_text("".join("%d.png %d\n" % (i % 4, i % 3) for i in range(50000)))
    logs = tmp_path / "logs"
    logs.mkdir()
    env = dict(os.environ, GLOG_log_dir=str(logs))
    env.pop("GLOG_logtostderr", None)
    env.pop("GLOG_minloglevel", None)
    for sig in (signal.SIGINT, signal.SIGKILL):
        out = tmp_path / ("db_%d" % sig)
        for old in logs.iterdir():
            old.unlink()
        proc = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.tools.convert_imageset", "--workers=1",
                                 "--resize_height=256", "--resize_width=256", str(root) + "/", str(lst), str(out)],
                                stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=env,
                                preexec_fn=interruptible)
        log = logs / "convert_imageset.INFO"
        deadline = time.time() + 600
        while not (log.exists() and "Processed 1000 files." in log.read_text()):
            assert proc.poll() is None, "convert_imageset ended before it could be interrupted"
            assert time.time() < deadline, "convert_imageset never wrote 1000 records"
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=600)
        assert not out.exists(), "an interrupted run left %s" % out
    # Ctrl-C also cleans up its temporary database; only SIGKILL leaves one behind.
    leftovers = [p.name for p in tmp_path.iterdir() if ".incomplete" in p.name]
    assert leftovers == [] or all(p.startswith("db_%d" % signal.SIGKILL) for p in leftovers)

"""The recipe's LevelDB path (plyvel): convert_imageset and compute_image_mean
write the same records and mean as through LMDB, our LevelDB reads back
record for record, and the Data layer gives Caffe's batches from it."""
import json
import os

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.data import db as dbmod
from pycaffe_lite.tools import compute_image_mean, convert_imageset
from conftest import GOLDEN, golden_path

plyvel = pytest.importorskip("plyvel", reason="LevelDB needs plyvel (pip install -e '.[leveldb]')")


def all_records(path, backend):
    reader = dbmod.Reader(path, backend)
    out = [reader.next() for _ in range(len(reader))]
    reader.close()
    return out


@pytest.mark.parametrize("case", ["convert_resize", "convert_gray", "convert_encoded"])
def test_convert_imageset_leveldb_equals_lmdb(case, tmp_path, monkeypatch):
    folder = golden_path("data", case)
    with open(os.path.join(folder, "case.json")) as f:
        command = json.load(f)["command"]
    monkeypatch.chdir(GOLDEN)
    flags = command[1:-1]
    assert convert_imageset.main(flags + ["--backend=lmdb", str(tmp_path / "lmdb")]) == 0
    assert convert_imageset.main(flags + ["--backend=leveldb", str(tmp_path / "leveldb")]) == 0
    lm = all_records(str(tmp_path / "lmdb"), "lmdb")
    lv = all_records(str(tmp_path / "leveldb"), "leveldb")
    assert len(lv) == len(lm) > 0
    assert lv == lm
    # And through plyvel directly: the database is an ordinary LevelDB.
    db = plyvel.DB(str(tmp_path / "leveldb"))
    assert list(db.iterator()) == lm
    db.close()


def test_compute_image_mean_from_leveldb_is_caffes(tmp_path, monkeypatch):
    folder = golden_path("data", "mean")
    monkeypatch.chdir(GOLDEN)
    with open(os.path.join(folder, "..", "convert_resize", "case.json")) as f:
        command = json.load(f)["command"]
    db = str(tmp_path / "leveldb")
    assert convert_imageset.main(command[1:-1] + ["--backend=leveldb", db]) == 0
    out = str(tmp_path / "mean.binaryproto")
    assert compute_image_mean.main([db, out, "--backend=leveldb"]) == 0
    with open(out, "rb") as a, open(os.path.join(folder, "mean.binaryproto"), "rb") as b:
        assert a.read() == b.read()


def test_data_layer_reads_leveldb_batches_as_caffe(tmp_path, monkeypatch):
    folder = golden_path("data", "datalayer_meanfile")
    arrays = np.load(os.path.join(folder, "arrays.npz"))
    monkeypatch.chdir(GOLDEN)
    with open(os.path.join(GOLDEN, "data", "convert_resize", "case.json")) as f:
        command = json.load(f)["command"]
    db = str(tmp_path / "leveldb")
    assert convert_imageset.main(command[1:-1] + ["--backend=leveldb", db]) == 0
    text = open(os.path.join(folder, "net.prototxt")).read()
    text = text.replace('"data/convert_resize/db"', '"%s"' % db).replace("backend: LMDB", "backend: LEVELDB")
    assert "LEVELDB" in text
    net_file = tmp_path / "net.prototxt"
    net_file.write_text(text)
    net = caffe.Net(str(net_file), caffe.TEST)
    for b in range(6):
        net.forward()
        np.testing.assert_allclose(net.blobs["data"].data, arrays["batch/%d/data" % b], rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(net.blobs["label"].data, arrays["batch/%d/label" % b])

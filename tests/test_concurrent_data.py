"""Data while others use it: a process commits records in small
transactions while our readers (Reader, the Data layer, compute_image_mean)
read whole passes. LMDB promises each reader a consistent snapshot (its
read transaction holds a reader slot, so the writer never reuses the pages
it reads): every pass must see records 0..n-1 of some committed n, each
whole and right, and no error."""
import multiprocessing
import os
import time

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.data import db as dbmod
from pycaffe_lite.data.datum import parse_datum

SIDE = 24                    # 3x24x24 records: 1.7 KB, a few to a page, so commits split and reuse pages
BATCH = 40
TOTAL = 2400


def record(k):
    """Record k: label k, every pixel (k * 7) % 256, so a torn or stale
    value cannot pass for it."""
    from pycaffe_lite.data.datum import hwc_to_datum
    img = np.full((SIDE, SIDE, 3), (k * 7) % 256, np.uint8)
    img[0, 0, 0] = k % 251
    return hwc_to_datum(img, k).SerializeToString()


def writer(path, started):
    import lmdb
    env = lmdb.open(path, map_size=1 << 28, subdir=True)
    for start in range(0, TOTAL, BATCH):
        with env.begin(write=True) as txn:
            for k in range(start, start + BATCH):
                txn.put(b"%08d" % k, record(k))
        if start == 0:
            started.set()
        time.sleep(0.005)
    env.close()


@pytest.fixture
def busy_db(tmp_path):
    path = str(tmp_path / "db")
    os.makedirs(path)
    ctx = multiprocessing.get_context("spawn")
    started = ctx.Event()
    proc = ctx.Process(target=writer, args=(path, started))
    proc.start()
    assert started.wait(60), "the writer did not start"
    yield path, proc
    proc.join(60)
    assert proc.exitcode == 0


def check_record(key, value):
    k = int(key)
    datum = parse_datum(value)
    assert datum.label == k
    pixels = np.frombuffer(datum.data, np.uint8)
    assert pixels[0] == k % 251 and (pixels[1:] == (k * 7) % 256).all(), "record %d is torn or stale" % k


def test_reader_passes_are_consistent_snapshots(busy_db):
    path, proc = busy_db
    passes, sizes = 0, []
    while proc.is_alive() or passes < 3:
        reader = dbmod.Reader(path)
        for _ in range(2):                       # two passes on one reader: the second sees newer commits
            n = len(reader)
            assert n % BATCH == 0 and n > 0      # a committed state, never half a transaction
            keys = []
            for _ in range(n):
                key, value = reader.next()
                check_record(key, value)
                keys.append(int(key))
            assert keys == list(range(n))
            sizes.append(n)
            passes += 1
        reader.close()
    assert passes >= 3 and sizes[-1] <= TOTAL


def test_data_layer_reads_while_a_writer_commits(busy_db, tmp_path):
    path, proc = busy_db
    net_file = tmp_path / "net.prototxt"
    net_file.write_text('layer { name: "d" type: "Data" top: "data" top: "label" '
                        'data_param { source: "%s" batch_size: 64 backend: LMDB } }' % path)
    net = caffe.Net(str(net_file), caffe.TRAIN)
    seen = 0
    while proc.is_alive() or seen < 400:
        out = net.forward()
        labels = out["label"].astype(int)
        pixels = out["data"].reshape(64, -1)
        np.testing.assert_array_equal(pixels[:, 0], labels % 251)
        np.testing.assert_array_equal(pixels[:, 1:], np.repeat(((labels * 7) % 256)[:, None], pixels.shape[1] - 1, 1))
        seen += 64


def test_compute_image_mean_while_a_writer_commits(busy_db):
    from pycaffe_lite.tools.compute_image_mean import mean_of_db
    path, proc = busy_db
    runs = 0
    while proc.is_alive() or runs < 2:
        value = float(np.asarray(mean_of_db(path)).reshape(-1)[1])
        # the mean of some committed prefix 0..n-1
        ok = [n for n in range(BATCH, TOTAL + 1, BATCH)
              if abs(np.mean([(k * 7) % 256 for k in range(n)]) - value) < 1e-3]
        assert ok, "mean %.4f is no committed prefix's" % value
        runs += 1


def test_a_database_replaced_under_a_reader(tmp_path):
    """A conversion renamed over the database while a reader has it: the
    reader goes on with the old one, whole; a new reader gets the new one."""
    from conftest import make_datum_lmdb
    path, new = str(tmp_path / "db"), str(tmp_path / "db.new")
    make_datum_lmdb(path, 5, 6, 0)
    old_reader = dbmod.Reader(path)
    first = [old_reader.next() for _ in range(5)]
    make_datum_lmdb(new, 8, 6, 1)
    os.rename(path, str(tmp_path / "db.old"))
    os.rename(new, path)
    new_reader = dbmod.Reader(path)
    assert len(new_reader) == 8 and len(old_reader) == 5
    assert [old_reader.next() for _ in range(5)] == first          # the next pass: still the old database
    new_reader.close()
    old_reader.close()

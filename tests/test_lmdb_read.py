"""Our LMDB reader (data/lmdb_read.py) gives the records LMDB's own library
gives, in the same order, for every shape of tree Caffe's databases take."""
import lmdb
import numpy as np
import pytest

from pycaffe_lite.data.db import Reader
from pycaffe_lite.data.lmdb_read import LMDBFile


def lmdb_records(path):
    env = lmdb.open(path, readonly=True, lock=False)
    with env.begin() as txn:
        records = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    depth = env.stat()["depth"]
    env.close()
    return records, depth


def write(path, batches, deletes=()):
    env = lmdb.open(str(path), map_size=1 << 28)
    for batch in batches:
        with env.begin(write=True) as txn:
            for k, v in batch:
                txn.put(k, v)
    with env.begin(write=True) as txn:
        for k in deletes:
            txn.delete(k)
    env.close()
    return str(path)


def values(n, size, seed=0):
    rng = np.random.RandomState(seed)
    return [(b"%08d" % i, rng.bytes(size if size else rng.randint(0, 9000))) for i in range(n)]


@pytest.mark.parametrize("n, size, least_depth", [
    (0, 10, 0),                 # empty
    (5, 100, 1),                # one leaf
    (3, 196624, 1),             # values in overflow pages (a 3x256x256 Datum)
    (40, 0, 1),                 # sizes from 0 to 9 KB: inline and overflow mixed
    (30000, 20, 3),             # branch pages, three levels
])
def test_the_same_records_as_lmdb(tmp_path, n, size, least_depth):
    path = write(tmp_path / "db", [values(n, size)])
    expected, depth = lmdb_records(path)
    assert depth >= least_depth
    db = LMDBFile(path)
    assert len(db) == n and list(db.items()) == expected
    db.close()


def test_after_updates_and_deletes(tmp_path):
    # several transactions: the newer meta page wins, freed pages are not read
    first = values(500, 300, 1)
    second = [(k, v[::-1] + b"x") for k, v in values(250, 300, 2)]
    path = write(tmp_path / "db", [first, second], deletes=[b"%08d" % i for i in range(0, 500, 7)])
    expected, _ = lmdb_records(path)
    db = LMDBFile(path)
    assert list(db.items()) == expected and len(db) == len(expected)
    db.close()


def test_the_reader_wraps_around_in_key_order(tmp_path):
    records = values(7, 50)
    path = write(tmp_path / "db", [list(reversed(records))])
    reader = Reader(path)
    got = [reader.next() for _ in range(10)]
    assert got == records + records[:3]
    reader.close()

"""Files others can read and failures that say what is left: what we write
follows the umask; a full disk stops training with one line naming the
file, the last whole snapshot and the command that resumes from it; SIGTERM
does what SIGINT does; a mean file with NaN or infinity is refused; a
damaged data.mdb is a clear error in a worker process, never a signal; a
read-only database folder is read without a reader slot."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.proto import caffe_pb2 as pb
from conftest import make_datum_lmdb

NET = '''layer { name: "x" type: "DummyData" top: "x" top: "y"
  dummy_data_param { shape { dim: 2 dim: 100 } shape { dim: 2 } data_filler { type: "gaussian" }
    data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip"
  inner_product_param { num_output: %d weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "y" top: "loss" }'''


def write_solver(folder, prefix, outputs=10, max_iter=6, snapshot=2):
    net = os.path.join(folder, "net.prototxt")
    with open(net, "w") as f:
        f.write(NET % outputs)
    path = os.path.join(folder, "solver.prototxt")
    with open(path, "w") as f:
        f.write('net: "%s" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed" max_iter: %d snapshot: %d display: 1 '
                'snapshot_prefix: "%s" solver_mode: CPU random_seed: 1' % (net, max_iter, snapshot, prefix))
    return path


def caffe_cli(*argv, **kw):
    return subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.caffe"] + list(argv), capture_output=True,
                          text=True, timeout=300, **kw)


# -- modes ---------------------------------------------------------------------------
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    """Snapshots, solver states, means and LMDB files, as Caffe's: 0666 less the umask."""
    solver = write_solver(str(tmp_path), str(tmp_path / "snap"), max_iter=2)
    images = tmp_path / "images"
    images.mkdir()
    import cv2
    for i in range(3):
        cv2.imwrite(str(images / ("%d.png" % i)), np.full((8, 8, 3), i * 40, np.uint8))
    (tmp_path / "list.txt").write_text("".join("%d.png %d\n" % (i, i) for i in range(3)))
    set_umask = lambda: os.umask(umask)           # noqa: E731
    run = dict(preexec_fn=set_umask, capture_output=True, text=True, timeout=300)
    assert caffe_cli("train", "--solver=" + solver, preexec_fn=set_umask).returncode == 0
    tool = [sys.executable, "-m"]
    assert subprocess.run(tool + ["pycaffe_lite.tools.convert_imageset", str(images) + "/", str(tmp_path / "list.txt"),
                                  str(tmp_path / "db")], **run).returncode == 0
    assert subprocess.run(tool + ["pycaffe_lite.tools.compute_image_mean", str(tmp_path / "db"),
                                  str(tmp_path / "mean.binaryproto")], **run).returncode == 0
    for name in ("snap_iter_2.caffemodel", "snap_iter_2.solverstate", "mean.binaryproto", "db/data.mdb",
                 "db/lock.mdb"):
        got = os.stat(tmp_path / name).st_mode & 0o777
        assert got == mode, "%s is %o, want %o" % (name, got, mode)
    assert os.stat(tmp_path / "db").st_mode & 0o777 == 0o777 & ~umask


# -- a full disk ---------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A 120 KB tmpfs (root can mount one; where it cannot, the test skips)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=120k", "tmpfs", str(mount)], capture_output=True,
                         text=True)
    if res.returncode:
        pytest.skip("cannot mount a small tmpfs here (%s); test_a_full_disk_simulated covers the same path"
                    % res.stderr.strip())
    yield mount
    subprocess.run(["umount", str(mount)])


def test_training_onto_a_full_disk_stops_with_the_last_snapshot(small_disk, tmp_path):
    # 10000 weights: 40 KB a .caffemodel, 40 KB its momentum in the .solverstate:
    # the snapshot of iteration 2 fits, the one of iteration 4 does not
    solver = write_solver(str(tmp_path), str(small_disk / "snap"), outputs=100)
    res = caffe_cli("train", "--solver=" + solver)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [l for l in res.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr[-2000:]
    line = lines[0]
    assert "cannot write %s/snap_iter_4" % small_disk in line and "No space left on device" in line, line
    last = "%s/snap_iter_2.solverstate" % small_disk
    assert "The last whole snapshot is %s" % last in line, line
    state = pb.SolverState.FromString(open(last, "rb").read())
    assert state.iter == 2
    assert not [f for f in os.listdir(small_disk) if f.endswith(".tmp")], "a temporary file was left"
    # free space, then the printed command resumes and finishes
    subprocess.run(["mount", "-o", "remount,size=2m", str(small_disk)], check=True)
    command = line.split("resume with: ", 1)[1].split()
    assert command[:4] == ["python", "-m", "pycaffe_lite.tools.caffe", "train"]
    res = subprocess.run([sys.executable] + command[1:], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Restoring previous solver status from %s" % last in res.stderr
    assert os.path.exists("%s/snap_iter_6.caffemodel" % small_disk)


def test_a_full_disk_simulated(tmp_path, monkeypatch, capsys):
    """The same failure without a tmpfs: the second snapshot's write fails with ENOSPC."""
    import errno
    from pycaffe_lite import protoio
    from pycaffe_lite.tools import caffe as caffe_tool
    solver = write_solver(str(tmp_path), str(tmp_path / "snap"))
    real = os.fsync
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 3:          # the third file: iteration 4's .caffemodel
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    monkeypatch.setattr(protoio.os, "fsync", fsync)
    assert caffe_tool.main(["train", "--solver=" + solver]) == 2
    err = capsys.readouterr().err
    line = [l for l in err.splitlines() if l.startswith("error:")][0]
    assert re.search(r"cannot write \S+/snap_iter_4\.caffemodel: No space left on device\. The last whole snapshot "
                     r"is \S+/snap_iter_2\.solverstate; free some space and resume with: python -m "
                     r"pycaffe_lite\.tools\.caffe train --solver=\S+ --snapshot=\S+snap_iter_2\.solverstate", line), line
    assert not os.path.exists(tmp_path / "snap_iter_4.caffemodel")
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_a_write_error_names_the_path_and_reason(tmp_path):
    with pytest.raises(caffe.CaffeError, match=r"cannot write %s/nowhere/x.caffemodel: No such file or directory"
                       % re.escape(str(tmp_path))):
        caffe.protoio.write_binary(str(tmp_path / "nowhere" / "x.caffemodel"), pb.NetParameter())


# -- SIGTERM -------------------------------------------------------------------------
def test_sigterm_stops_as_sigint_does(tmp_path):
    solver = write_solver(str(tmp_path), str(tmp_path / "snap"), max_iter=1000000, snapshot=0)
    proc = subprocess.Popen([sys.executable, "-m", "pycaffe_lite.tools.caffe", "train", "--solver=" + solver],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, deadline = [], time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "Iteration 30," in line:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    log = "".join(lines) + err
    assert proc.returncode == 0, log[-2000:]
    assert "Optimization stopped early." in log
    found = re.findall(r"Snapshotting solver state to binary proto file (\S+)", log)
    assert found and pb.SolverState.FromString(open(found[-1], "rb").read()).iter >= 30


# -- a mean with NaN -----------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_mean_with_nan_or_infinity_is_refused(tmp_path, bad):
    mean = np.full((1, 3, 6, 6), 100, np.float32)
    mean[0, 1, 2, 3] = bad
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(caffe.io.array_to_blobproto(mean).SerializeToString())
    db = str(tmp_path / "db")
    make_datum_lmdb(db, 4, 6, 0)
    net = tmp_path / "net.prototxt"
    net.write_text('layer { name: "d" type: "Data" top: "data" top: "label" transform_param { mean_file: "%s" } '
                   'data_param { source: "%s" batch_size: 2 backend: LMDB } }' % (path, db))
    with pytest.raises(caffe.CaffeError, match=r"mean.binaryproto: the mean image holds 1 NaN or infinite values "
                                               r"\(the first at channel 1, row 2, column 3"):
        caffe.Net(str(net), caffe.TRAIN)
    text = net.read_text().replace('mean_file: "%s"' % path, "mean_value: %s" % bad)
    net.write_text(text)
    with pytest.raises(caffe.CaffeError, match="must be finite"):
        caffe.Net(str(net), caffe.TRAIN)


# -- damaged databases in a worker process -----------------------------------------------
@pytest.mark.parametrize("damage", ["truncate", "flip", "miscount"])
def test_a_damaged_lmdb_is_an_error_in_a_worker_not_a_signal(tmp_path, damage):
    from pycaffe_lite.data import lmdb_read
    db = str(tmp_path / "db")
    make_datum_lmdb(db, 60, 24, 1)
    data = os.path.join(db, "data.mdb")
    raw = bytearray(open(data, "rb").read())
    if damage == "truncate":
        raw = raw[:len(raw) // 2]
    elif damage == "flip":                   # a branch/leaf page's child and node words scrambled
        for at in range(3 * 4096 + 16, 3 * 4096 + 400, 7):
            raw[at] ^= 0xA5
    else:
        for page in (0, 1):
            at = page * 4096 + lmdb_read.META_DB + lmdb_read.DB_SIZE + 32
            raw[at:at + 8] = (10 ** 6).to_bytes(8, "little")
    open(data, "wb").write(bytes(raw))
    code = ("import sys\nfrom pycaffe_lite.data import db\nr = db.Reader(sys.argv[1])\n"
            "[r.next() for _ in range(2 * len(r))]\n")
    res = subprocess.run([sys.executable, "-c", code, db], capture_output=True, text=True, timeout=120)
    assert res.returncode >= 0, "the worker died of signal %d" % -res.returncode
    if res.returncode:
        assert "FormatError" in res.stderr and db in res.stderr, res.stderr[-1500:]


def test_a_read_only_database_folder_is_read_without_a_reader_slot(tmp_path, monkeypatch):
    """Where lock.mdb cannot be written (a read-only file system), the library
    refuses a reader slot; nobody can be writing there, so none is needed."""
    import lmdb
    from pycaffe_lite.data import db as dbmod
    path = str(tmp_path / "db")
    make_datum_lmdb(path, 5, 6, 2)
    real = lmdb.open
    asked = []

    def open_(p, **kw):
        asked.append(kw.get("lock"))
        if kw.get("lock", True):
            raise lmdb.ReadonlyError("%s: Read-only file system" % p)
        return real(p, **kw)
    monkeypatch.setattr(lmdb, "open", open_)
    reader = dbmod.Reader(path)
    assert len(reader) == 5 and [reader.next()[0] for _ in range(5)] == [b"%08d" % i for i in range(5)]
    reader.close()
    assert asked == [True, False]

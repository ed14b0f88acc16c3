"""Data-parallel training across processes (mpiexec from the mpi extra's
MPICH): N ranks with batch b behave as one process with iter_size N; rank 0
alone tests, logs and snapshots; a 2-rank resume is exact; a lost rank stops
the run; the NCCL engine's code runs over MPI through a stand-in module."""
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
from pycaffe_lite.tools import caffe as caffe_tool
from conftest import REPO, make_datum_lmdb

pytest.importorskip("mpi4py", reason="the mpi extra (mpi4py, mpich) brings MPI")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec: pip install -e '.[mpi]' brings MPICH's", allow_module_level=True)

NET = '''name: "par"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { %(transform)s } data_param { source: "%(db)s" batch_size: 4 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { %(test_transform)s } data_param { source: "%(db)s" batch_size: 6 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "tanh" type: "TanH" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''
SOLVER = '''net: "%(net)s"
test_iter: 2
test_interval: 5
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
display: 1
max_iter: %(max_iter)d
snapshot: %(snapshot)d
snapshot_prefix: "%(prefix)s"
iter_size: %(iter_size)d
solver_mode: CPU
random_seed: 4
'''
DETERMINISTIC = "mean_value: 120 scale: 0.01"
RANDOM = "mean_value: 120 scale: 0.01 crop_size: 6 mirror: true"


def make_db(path):
    make_datum_lmdb(path, n=30, size=8, seed=1)


@pytest.fixture
def files(tmp_path):
    make_db(str(tmp_path / "db"))

    def solver(name, transform=DETERMINISTIC, max_iter=20, snapshot=10, iter_size=1, prefix=None):
        net = tmp_path / ("%s_net.prototxt" % name)
        test_transform = DETERMINISTIC + (" crop_size: 6" if "crop_size" in transform else "")
        net.write_text(NET % {"db": tmp_path / "db", "transform": transform, "test_transform": test_transform})
        path = tmp_path / ("%s_solver.prototxt" % name)
        path.write_text(SOLVER % {"net": net, "max_iter": max_iter, "snapshot": snapshot, "iter_size": iter_size,
                                  "prefix": prefix or tmp_path / name})
        return str(path)
    return tmp_path, solver


def mpi_train(n, args, timeout=300, **kw):
    cmd = [MPIEXEC, "-n", str(n), sys.executable, "-m", "pycaffe_lite.tools.caffe", "train"] + args
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


def weights(path):
    net = pb.NetParameter.FromString(open(path, "rb").read())
    return {(l.name, i): np.array(b.data, np.float32) for l in net.layer for i, b in enumerate(l.blobs)}


def test_two_ranks_equal_one_process_with_iter_size_2(files):
    tmp, solver = files
    single = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.caffe", "train",
                             "--solver=" + solver("single", iter_size=2)], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    res = mpi_train(2, ["--solver=" + solver("pair")])
    assert res.returncode == 0, res.stderr[-3000:]
    for it in (10, 20):
        a, b = weights(tmp / ("single_iter_%d.caffemodel" % it)), weights(tmp / ("pair_iter_%d.caffemodel" % it))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=2e-6, err_msg="%s at %d" % (k, it))
    # Only rank 0 logs and tests: one "Training on 2 solvers" line, tests at 0, 5, ..., 20.
    assert res.stderr.count("Training on 2 solvers (MPIComm)") == 1
    tests = re.findall(r"Iteration (\d+), Testing net", res.stderr)
    assert tests == ["0", "5", "10", "15", "20"]
    accuracy = re.findall(r"Test net output #0: acc = (\S+)", res.stderr)
    assert len(accuracy) == 5
    assert accuracy == re.findall(r"Test net output #0: acc = (\S+)", single.stderr)
    losses = [float(v) for v in re.findall(r"Test net output #1: loss = (\S+)", res.stderr)]
    np.testing.assert_allclose(losses, [float(v) for v in re.findall(r"Test net output #1: loss = (\S+)",
                                                                      single.stderr)], rtol=1e-4)
    assert res.stderr.count("Starting Optimization") == 1           # rank 1 says nothing
    # Only rank 0 writes snapshots: exactly the two of each kind, nothing else.
    snaps = sorted(f for f in os.listdir(tmp) if f.startswith("pair_iter"))
    assert snaps == ["pair_iter_10.caffemodel", "pair_iter_10.solverstate", "pair_iter_20.caffemodel",
                     "pair_iter_20.solverstate"]
    # Each rank's data position is in the state: rank 1 under its own prefix.
    state = pb.SolverState.FromString((tmp / "pair_iter_10.solverstate").read_bytes())
    names = {e.layer: e.records_read for e in state.data_state}
    assert names["train/data"] == 79 and names["rank1/train/data"] == 80
    assert "rank1/random_state" in names


def test_two_rank_resume_is_exact_with_random_crops(files):
    tmp, solver = files
    res = mpi_train(2, ["--solver=" + solver("full", transform=RANDOM, max_iter=16, snapshot=7)])
    assert res.returncode == 0, res.stderr[-3000:]
    res = mpi_train(2, ["--solver=" + solver("again", transform=RANDOM, max_iter=16, snapshot=7),
                        "--snapshot=" + str(tmp / "full_iter_7.solverstate")])
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = weights(tmp / "full_iter_16.caffemodel"), weights(tmp / "again_iter_16.caffemodel")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=str(k))


def start_and_kill_rank_1(solver_file, mpiexec_flags):
    proc = subprocess.Popen([MPIEXEC] + mpiexec_flags + ["-n", "2", sys.executable, "-m", "pycaffe_lite.tools.caffe",
                            "train", "--solver=" + solver_file], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    import threading
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.time() + 120
    pid = None
    while time.time() < deadline and pid is None:
        found = re.findall(r"rank 1 is pid (\d+)", "".join(lines))
        pid = int(found[0]) if found else None
        time.sleep(0.1)
    assert pid, "".join(lines)[-2000:]
    time.sleep(2)                                    # mid-run
    start = time.time()
    os.kill(pid, signal.SIGKILL)
    out = proc.stdout.read()
    proc.wait(timeout=90)
    reader.join(10)
    return proc.returncode, out + "".join(lines), time.time() - start, pid


def test_a_killed_rank_stops_the_run(files):
    """With MPICH's default clean-up, mpiexec kills the rest of the job as
    soon as one process dies and reports a pid of the job (not always the
    lost one); the ranks' start-up lines map pids to ranks. The run ends,
    non-zero, well within a minute, and no snapshot is left half-written.
    (Naming the lost rank is the watch's job when the launcher leaves the
    survivors running: test_peer_watch_names_the_lost_rank.)"""
    tmp, solver = files
    code, said, seconds, pid = start_and_kill_rank_1(solver("long", max_iter=100000, snapshot=50), [])
    assert code != 0 and seconds < 60
    ranks = dict((int(p), int(r)) for r, p in re.findall(r"rank (\d) is pid (\d+)", said))
    assert ranks.get(pid) == 1 and set(ranks.values()) == {0, 1}
    reported = re.findall(r"PID (\d+) RUNNING", said)
    by_watch = re.search(r"error: rank 1 \(pid %d on .*\) is gone; rank 0 stops too" % pid, said)
    assert by_watch or (reported and int(reported[0]) in ranks), said[-2000:]
    # A process killed while writing leaves at most a hidden temporary file;
    # every file under a snapshot's name is whole.
    for f in os.listdir(tmp):
        if f.startswith("long_iter_") and f.endswith(".caffemodel"):
            assert pb.NetParameter.FromString((tmp / f).read_bytes()).layer, f
        elif f.startswith("long_iter_") and f.endswith(".solverstate"):
            assert pb.SolverState.FromString((tmp / f).read_bytes()).HasField("iter"), f


WATCHED = r'''
import os, sys, time
from pycaffe_lite.comm import peer_watch


class FileComm:
    """Two plain processes exchange their (host, pid) through files."""
    def __init__(self, folder, rank):
        self.folder, self.rank, self.size = folder, rank, 2

    def allgather(self, obj):
        with open(os.path.join(self.folder, "rank%d" % self.rank), "w") as f:
            f.write(repr(obj))
        while not all(os.path.exists(os.path.join(self.folder, "rank%d" % r)) for r in range(2)):
            time.sleep(0.05)
        time.sleep(0.1)
        return [eval(open(os.path.join(self.folder, "rank%d" % r)).read()) for r in range(2)]


peer_watch(FileComm(sys.argv[1], int(sys.argv[2])), interval=0.2)
time.sleep(120)
'''


def test_peer_watch_names_the_lost_rank(tmp_path):
    """When mpiexec leaves the others running (e.g. -disable-auto-cleanup, or
    another launcher), a rank whose peer on the same machine died stops by
    itself within a second and says which rank it lost."""
    script = tmp_path / "watched.py"
    script.write_text(WATCHED)
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path), str(r)], stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=REPO)) for r in range(2)]
    deadline = time.time() + 30
    while time.time() < deadline and not all((tmp_path / ("rank%d" % r)).exists() for r in range(2)):
        time.sleep(0.05)
    time.sleep(0.5)
    procs[1].kill()
    start = time.time()
    err = procs[0].communicate(timeout=30)[1]
    procs[1].wait()
    assert procs[0].returncode == 2 and time.time() - start < 10
    assert re.search(r"error: rank 1 \(pid %d on .*\) is gone; rank 0 stops too" % procs[1].pid, err), err


def test_rank_0_cannot_write_snapshots(files):
    tmp, solver = files
    locked = tmp / "locked"
    locked.mkdir()
    path = solver("nowrite", prefix=locked / "snap")
    os.chmod(locked, 0o500)
    try:
        if os.access(str(locked), os.W_OK):      # root ignores the mode: make the folder vanish instead
            os.chmod(locked, 0o700)
            shutil.rmtree(locked)
            (tmp / "locked").write_text("a file, not a folder")
        res = mpi_train(2, ["--solver=" + path], timeout=120)
    finally:
        if locked.is_dir():
            os.chmod(locked, 0o700)
    assert res.returncode != 0
    assert res.stderr.count("error: rank 0 cannot write snapshots to") == 2, res.stderr[-2000:]


def test_gpu_list_is_checked(files, capsys):
    tmp, solver = files
    assert caffe_tool.main(["train", "--solver=" + solver("g"), "--gpu=0,0"]) == 2
    assert "lists GPU 0 twice" in capsys.readouterr().err
    assert caffe_tool.main(["train", "--solver=" + solver("g"), "--gpu=7"]) == 2
    err = capsys.readouterr().err
    assert "--gpu" in err and ("no GPU 7" in err or "CuPy" in err or "no usable CUDA device" in err)


NCCL_DOUBLE = r'''
"""Run the NCCL engine's code (NCCLComm: flattening, pointers, allgather and
agree built from allReduce) over MPI: a stand-in for cupy.cuda.nccl."""
import ctypes
import sys

import numpy as np
from mpi4py import MPI

import pycaffe_lite as caffe
from pycaffe_lite import backend
from pycaffe_lite.comm import NCCLComm
from pycaffe_lite.parallel import DataParallel


class FakeNccl:
    NCCL_FLOAT32 = 7
    NCCL_SUM = 0
    calls = []

    class NcclCommunicator:
        def __init__(self, size, uid, rank):
            assert (size, rank) == (MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank) and len(uid) == 128
            self.comm = MPI.COMM_WORLD

        @staticmethod
        def _array(ptr, count):
            return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(count,))

        def allReduce(self, send, recv, count, dtype, op, stream):
            FakeNccl.calls.append("allReduce")
            assert dtype == FakeNccl.NCCL_FLOAT32 and op == FakeNccl.NCCL_SUM and send == recv
            self.comm.Allreduce(MPI.IN_PLACE, self._array(recv, count), op=MPI.SUM)

        def bcast(self, buf, count, dtype, root, stream):
            FakeNccl.calls.append("bcast")
            self.comm.Bcast(self._array(buf, count), root=root)


solver_file, out = sys.argv[1:3]
world = MPI.COMM_WORLD
caffe.set_solver_count(world.size)
caffe.set_solver_rank(world.rank)
uid = world.bcast(caffe.NCCL.new_uid() if world.rank == 0 else None, root=0)
solver = caffe.get_solver(solver_file)
comm = NCCLComm(uid, world.size, world.rank, nccl=FakeNccl)
parallel = DataParallel(solver, comm)
parallel.bcast()
solver.add_callback(parallel)
solver.net.after_backward(parallel)          # layer by layer, as NCCL runs on GPUs
assert comm.allgather({"rank": world.rank}) == [{"rank": r} for r in range(world.size)]
assert comm.agree(world.rank + 3) == world.size + 2
solver.step(10)
if world.rank == 0:
    solver.net.save(out)
    print("calls", sorted(set(FakeNccl.calls)))
'''


def test_nccl_engine_code_over_an_mpi_stand_in(files):
    """NCCL itself needs GPUs; its engine's code runs here over a stand-in
    module, and gives the MPI engine's numbers."""
    tmp, solver = files
    script = tmp / "nccl_double.py"
    script.write_text(NCCL_DOUBLE)
    res = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), solver("nccl", max_iter=10),
                          str(tmp / "nccl.caffemodel")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "calls ['allReduce', 'bcast']" in res.stdout
    res = mpi_train(2, ["--solver=" + solver("mpi", max_iter=10, snapshot=10)])
    assert res.returncode == 0, res.stderr[-3000:]
    a, b = weights(tmp / "nccl.caffemodel"), weights(tmp / "mpi_iter_10.caffemodel")
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-7, err_msg=str(k))

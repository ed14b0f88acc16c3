"""Communicators for data-parallel training: one interface, several engines.

    allreduce_sum(arrays)     sum each array over all solvers, in place
    broadcast(arrays, root)   every solver gets root's values, in place
    allgather(obj)            [obj of rank 0, obj of rank 1, ...] (small Python objects)
    agree(flag)               the largest of every solver's small integer

MPIComm (mpi4py) works between processes and machines on host arrays (device
arrays go through the host). NCCLComm (cupy.cuda.nccl) works between GPUs; it
takes its NCCL module as an argument so that a test double can stand in for
it on a machine without GPUs. Nothing here is imported unless it is used."""
import os
import socket

import numpy as np

from . import backend


def launched_by_mpi():
    """Whether mpiexec/mpirun started this process as one of several."""
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        if int(os.environ.get(var, "1") or 1) > 1:
            return True
    return False


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise RuntimeError("training across processes needs mpi4py and an MPI (pip install -e '.[mpi]')") from None
    return MPI


def _flat(arrays, xp):
    """One contiguous float32 buffer holding every array (and where each sits)."""
    sizes = [a.size for a in arrays]
    buf = xp.empty(sum(sizes), dtype=np.float32)
    at = 0
    for a, n in zip(arrays, sizes):
        buf[at:at + n] = a.reshape(-1)
        at += n
    return buf, sizes


def _unflat(buf, arrays, sizes):
    at = 0
    for a, n in zip(arrays, sizes):
        a[...] = buf[at:at + n].reshape(a.shape)
        at += n


class MPIComm:
    """Collectives over MPI.COMM_WORLD (or a given communicator)."""

    def __init__(self, comm=None):
        MPI = _mpi()
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.size, self.rank = self.comm.Get_size(), self.comm.Get_rank()
        self._buf = None

    def allreduce_sum(self, arrays):
        if not arrays:
            return
        host = [backend.to_host(a) for a in arrays]
        sizes = [a.size for a in host]
        total = sum(sizes)
        if self._buf is None or self._buf.size != total:
            self._buf = np.empty(total, dtype=np.float32)      # reused across iterations
        at = 0
        for a, n in zip(host, sizes):
            self._buf[at:at + n] = a.reshape(-1)
            at += n
        self.comm.Allreduce(self.MPI.IN_PLACE, self._buf, op=self.MPI.SUM)
        at = 0
        for a, h, n in zip(arrays, host, sizes):
            part = self._buf[at:at + n].reshape(a.shape)
            if h is a:
                a[...] = part
            else:
                a[...] = backend.xp().asarray(part)
            at += n

    def broadcast(self, arrays, root=0):
        for a in arrays:
            h = np.ascontiguousarray(backend.to_host(a), dtype=np.float32)
            self.comm.Bcast(h, root=root)
            a[...] = h if h is a else backend.xp().asarray(h)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def agree(self, flag):
        return int(self.comm.allreduce(int(flag), op=self.MPI.MAX))


class NCCLComm:
    """Collectives between GPUs through NCCL. `nccl` is cupy.cuda.nccl (or a
    stand-in with the same NcclCommunicator API); `uid` the id every rank got
    from rank 0 (NCCL.new_uid()); `side` an MPIComm (or None) for the small
    host-side exchanges."""

    def __init__(self, uid, size, rank, nccl=None, side=None):
        if nccl is None:
            from cupy.cuda import nccl
        self.nccl = nccl
        self.size, self.rank = size, rank
        self.side = side
        unique_id = tuple(np.frombuffer(bytes(uid), dtype=np.int8).tolist())
        self.comm = nccl.NcclCommunicator(size, unique_id, rank)

    @staticmethod
    def _ptr(a):
        data = getattr(a, "data", None)
        return data.ptr if hasattr(data, "ptr") else a.ctypes.data

    def _stream(self):
        xp = backend.xp()
        return xp.cuda.get_current_stream().ptr if hasattr(xp, "cuda") else 0

    def allreduce_sum(self, arrays):
        if not arrays:
            return
        xp = backend.xp()
        buf, sizes = _flat(arrays, xp)
        self.comm.allReduce(self._ptr(buf), self._ptr(buf), buf.size, self.nccl.NCCL_FLOAT32, self.nccl.NCCL_SUM,
                            self._stream())
        _unflat(buf, arrays, sizes)

    def broadcast(self, arrays, root=0):
        xp = backend.xp()
        buf, sizes = _flat(arrays, xp)
        self.comm.bcast(self._ptr(buf), buf.size, self.nccl.NCCL_FLOAT32, root, self._stream())
        _unflat(buf, arrays, sizes)

    def _slots(self, values, width):
        """Each rank's `values` (at most `width` numbers) in its own slot of a
        summed buffer: an all-gather built from allreduce alone."""
        xp = backend.xp()
        buf = xp.zeros(self.size * width, dtype=np.float32)
        buf[self.rank * width:self.rank * width + len(values)] = xp.asarray(np.asarray(values, np.float32))
        self.allreduce_sum([buf])
        return backend.to_host(buf).reshape(self.size, width)

    def allgather(self, obj):
        if self.side is not None:
            return self.side.allgather(obj)
        import pickle
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        lengths = self._slots([data.size], 1)[:, 0].astype(np.int64)
        rows = self._slots(data, int(lengths.max()))
        return [pickle.loads(rows[r, :lengths[r]].astype(np.uint8).tobytes()) for r in range(self.size)]

    def agree(self, flag):
        if self.side is not None:
            return self.side.agree(flag)
        return int(self._slots([flag], 1).max())


def _gone(pid):
    """Whether process `pid` has ended (a zombie not yet reaped counts)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


def peer_watch(comm, interval=1.0, grace=2.0):
    """A daemon thread that ends this process (exit 2, naming the lost rank)
    when another rank on the same machine dies: a blocked collective would
    otherwise wait for it forever. Ranks on other machines are left to
    mpiexec, which stops the job when one of its processes dies."""
    import sys
    import threading
    import time
    me = (socket.gethostname(), os.getpid())
    peers = comm.allgather(me)
    # mpiexec's own report of a lost process names its pid: this says which rank it was.
    sys.stderr.write("rank %d is pid %d on %s\n" % (comm.rank, me[1], me[0]))
    sys.stderr.flush()

    def watch():
        while True:
            time.sleep(interval)
            for rank, (host, pid) in enumerate(peers):
                if rank == comm.rank or host != me[0]:
                    continue
                if _gone(pid):
                    # Give the launcher a moment: mpiexec's own clean-up (which
                    # names the lost pid) comes first when it is on.
                    time.sleep(grace)
                    sys.stderr.write("error: rank %d (pid %d on %s) is gone; rank %d stops too (snapshots on disk "
                                     "are whole: they are written under temporary names)\n"
                                     % (rank, pid, host, comm.rank))
                    sys.stderr.flush()
                    os._exit(2)
    threading.Thread(target=watch, name="peer watch", daemon=True).start()
    return peers

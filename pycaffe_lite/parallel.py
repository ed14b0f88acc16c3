"""Data-parallel training as Caffe does it: each solver (one per device or
process) computes gradients on its own batch; they are summed across solvers
and scaled by 1/solver_count before the identical update. pycaffe's NCCL class
is the solver callback that does it."""
import os

import numpy as np

from . import backend


def has_nccl():
    """Whether NCCL is usable here (CuPy built with it)."""
    try:
        from cupy.cuda import nccl
    except Exception:      # no CuPy, or a CuPy without NCCL
        return False
    return bool(getattr(nccl, "available", True))


class DataParallel:
    """The solver callback that makes N solvers one: after backward it sums
    every learnable diff over the solvers and scales it by 1/N, so that all
    apply the same update (Caffe's NCCL::on_gradients_ready). As a net
    after_backward callback it reduces each layer's diffs as soon as that
    layer's backward is done (layer_wise_reduce)."""

    def __init__(self, solver, comm):
        self.solver, self.comm = solver, comm
        self.count, self.rank = comm.size, comm.rank
        self._layer_wise = False
        solver.comm = comm

    def bcast(self):
        """Every solver starts from rank 0's weights."""
        self.comm.broadcast([b.dev_data for b in self.solver.net.learnable_params], root=0)

    def on_start(self):
        pass

    def on_gradients_ready(self):
        if not self._layer_wise:
            self._reduce(self.solver.net.learnable_params)

    def __call__(self, layer_index):
        self._layer_wise = True
        net = self.solver.net
        owned = [blob for i, blob in enumerate(net.layers[layer_index].blobs)
                 if net._param_owner[net._param_layer_indices.index((layer_index, i))] < 0]
        if owned:
            self._reduce(owned)

    def _reduce(self, blobs):
        diffs = [b.dev_diff for b in blobs]
        self.comm.allreduce_sum(diffs)
        scale = np.float32(1.0 / self.count)
        for d in diffs:
            d *= scale


def communicator(uid=None, side=None):
    """The engine for this run: NCCL between GPUs (its id exchanged over MPI
    when launched by mpiexec), MPI between processes on the CPU. `side` is
    the MPIComm of an mpiexec launch, when the caller has one already."""
    from . import comm as engines
    count, rank = backend.solver_count(), backend.solver_rank()
    if side is None and engines.launched_by_mpi():
        side = engines.MPIComm()
    if side is not None and (side.size, side.rank) != (count, rank):
        raise RuntimeError("solver_count/solver_rank (%d/%d) do not match mpiexec's (%d/%d)"
                           % (count, rank, side.size, side.rank))
    if backend.mode() == backend.GPU:
        if not has_nccl():
            raise RuntimeError("training on %d GPUs needs NCCL (CuPy with NCCL: pip install -e '.[gpu]')" % count)
        if uid is None:
            if side is None:
                raise RuntimeError("NCCL needs the id from NCCL.new_uid() of rank 0 (or an mpiexec launch)")
            uid = side.comm.bcast(NCCL.new_uid() if rank == 0 else None, root=0)
        return engines.NCCLComm(uid, count, rank, side=side)
    if side is None:
        raise RuntimeError("%d solvers on the CPU need an MPI launch: mpiexec -n %d python -m "
                           "pycaffe_lite.tools.caffe train ..." % (count, count))
    return side


class NCCL(DataParallel):
    """pycaffe's caffe.NCCL(solver, uid): bcast() sends rank 0's weights to
    every solver; as a solver callback (solver.add_callback(nccl)) it reduces
    the gradients once they are ready, or layer by layer when registered with
    solver.net.after_backward(nccl) (layer_wise_reduce). Between GPUs it is
    NCCL; on the CPU under mpiexec it is MPI; with one solver it does nothing."""

    UID_BYTES = 128

    def __init__(self, solver, uid):
        self.uid = bytes(uid)
        if backend.solver_count() > 1:
            DataParallel.__init__(self, solver, communicator(self.uid))
        else:
            self.solver, self.comm, self.count, self.rank = solver, None, 1, 0
            self._layer_wise = False

    @staticmethod
    def new_uid():
        """A fresh id that every process of one run passes to NCCL()."""
        if has_nccl():
            from cupy.cuda import nccl
            return bytes(np.asarray(nccl.get_unique_id(), dtype=np.int8).tobytes())
        return os.urandom(NCCL.UID_BYTES)

    def bcast(self):
        if self.comm is not None:
            DataParallel.bcast(self)

    def _reduce(self, blobs):
        if self.comm is not None:
            DataParallel._reduce(self, blobs)

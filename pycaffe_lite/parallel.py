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


class NCCL:
    """pycaffe's caffe.NCCL(solver, uid): bcast() sends rank 0's weights to
    every solver; as a solver callback (solver.add_callback(nccl)) it reduces
    the gradients once they are ready, or layer by layer when registered with
    solver.net.after_backward(nccl) (layer_wise_reduce)."""

    UID_BYTES = 128

    def __init__(self, solver, uid):
        self.solver = solver
        self.uid = bytes(uid)
        self.count, self.rank = backend.solver_count(), backend.solver_rank()
        self._layer_wise = False
        self._comm = None
        if self.count > 1:
            raise RuntimeError("caffe.NCCL with solver_count %d: this build trains data-parallel only with one "
                               "solver (solver_count 1)" % self.count)

    @staticmethod
    def new_uid():
        """A fresh id that every process of one run passes to NCCL()."""
        if has_nccl():
            from cupy.cuda import nccl
            return bytes(np.asarray(nccl.get_unique_id(), dtype=np.int8).tobytes())
        return os.urandom(NCCL.UID_BYTES)

    def _params(self):
        return self.solver.net.learnable_params

    def bcast(self):
        if self._comm is not None:
            self._comm.broadcast([b.dev_data for b in self._params()], root=0)

    # -- solver callback ----------------------------------------------------
    def on_start(self):
        pass

    def on_gradients_ready(self):
        if self._comm is not None and not self._layer_wise:
            self._reduce(self._params())

    # -- net after_backward callback (layer-wise reduce) ---------------------
    def __call__(self, layer_index):
        self._layer_wise = True
        if self._comm is not None:
            net = self.solver.net
            owned = [net.layers[layer_index].blobs[i] for i in range(len(net.layers[layer_index].blobs))
                     if net._param_owner[net._param_layer_indices.index((layer_index, i))] < 0]
            if owned:
                self._reduce(owned)

    def _reduce(self, blobs):
        diffs = [b.dev_diff for b in blobs]
        self._comm.allreduce_sum(diffs)
        scale = np.float32(1.0 / self.count)
        for d in diffs:
            d *= scale

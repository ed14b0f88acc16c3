"""Data-parallel training on the CPU: CaffeNet-shaped training (train_val's
layers, DummyData in place of the Data layers, batch 8 per solver) in one
process and in MPI ranks, images/s and the share of an iteration spent in
the gradient allreduce.

    python benchmarks/bench_parallel.py              # runs every configuration below
    mpiexec -n 2 python benchmarks/bench_parallel.py --rank-run   # one configuration (used by the above)

Configurations: 1 process with 2 threads; 1 process with 1 thread; 2 MPI
ranks with 1 thread each (OMP/OPENBLAS_NUM_THREADS=1)."""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rank_run(iters, batch):
    import numpy as np
    import pycaffe_lite as caffe
    from pycaffe_lite import backend, protoio
    from pycaffe_lite.proto import caffe_pb2 as pb
    comm = None
    from pycaffe_lite.comm import launched_by_mpi
    if launched_by_mpi():
        from pycaffe_lite.comm import MPIComm
        comm = MPIComm()
        backend.set_solver_count(comm.size)
        backend.set_solver_rank(comm.rank)
        caffe.init_log(2)
    else:
        caffe.init_log(2)
    net = protoio.read_net_text(os.path.join(ROOT, "models/bvlc_reference_caffenet/train_val.prototxt"))
    layers = [l for l in net.layer if l.type != "Data" and l.name != "accuracy"]
    del net.layer[:]
    data = net.layer.add(name="data", type="DummyData", top=["data", "label"])
    data.dummy_data_param.shape.add().dim.extend([batch, 3, 227, 227])
    data.dummy_data_param.shape.add().dim.extend([batch])
    data.dummy_data_param.data_filler.add(type="gaussian", std=1)
    data.dummy_data_param.data_filler.add(type="constant", value=3)
    net.layer.extend(layers)
    solver_param = pb.SolverParameter(base_lr=0.001, momentum=0.9, weight_decay=0.0005, lr_policy="fixed",
                                      max_iter=1000, display=0, solver_mode=pb.SolverParameter.CPU,
                                      random_seed=1)
    solver_param.train_net_param.CopyFrom(net)
    solver = caffe.Solver(solver_param)
    reduce_time = [0.0]
    if comm is not None:
        from pycaffe_lite.parallel import DataParallel

        class Timed(DataParallel):
            def _reduce(self, blobs):
                t = time.perf_counter()
                DataParallel._reduce(self, blobs)
                reduce_time[0] += time.perf_counter() - t
        dp = Timed(solver, comm)
        dp.bcast()
        solver.add_callback(dp)
    solver.step(1)                     # warm up
    reduce_time[0] = 0.0
    t = time.perf_counter()
    solver.step(iters)
    seconds = time.perf_counter() - t
    if comm is None or comm.rank == 0:
        ranks = comm.size if comm is not None else 1
        print(json.dumps({"images_per_s": iters * batch * ranks / seconds, "ms_per_iter": 1e3 * seconds / iters,
                          "allreduce_share": reduce_time[0] / seconds}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rank-run", action="store_true")
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    if args.rank_run:
        return rank_run(args.iters, args.batch)
    base = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    me = [sys.executable, os.path.abspath(__file__), "--rank-run", "--iters", str(args.iters),
          "--batch", str(args.batch)]
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or "mpiexec"
    runs = [("1 process, 2 threads", me, dict(base, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")),
            ("1 process, 1 thread", me, dict(base, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")),
            ("2 MPI ranks, 1 thread each", [mpiexec, "-n", "2"] + me,
             dict(base, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1"))]
    for name, cmd, env in runs:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode or not lines:
            print("%-28s failed: %s" % (name, out.stderr[-500:]))
            continue
        r = json.loads(lines[-1])
        print("%-28s %6.1f images/s  %7.1f ms/iteration  allreduce %4.1f%% of an iteration"
              % (name, r["images_per_s"], r["ms_per_iter"], 100 * r["allreduce_share"]))


if __name__ == "__main__":
    main()

"""Caffe's command line:

    python -m pycaffe_lite.tools.caffe train --solver=solver.prototxt [--snapshot=X.solverstate | --weights=a.caffemodel[,b]]
    python -m pycaffe_lite.tools.caffe test --model=net.prototxt --weights=w.caffemodel [--iterations=50]
    python -m pycaffe_lite.tools.caffe time --model=net.prototxt [--iterations=50]
    python -m pycaffe_lite.tools.caffe device_query"""
import argparse
import logging
import os
import platform
import signal
import sys
import time

import numpy as np

from .. import backend, glog
from ..errors import ConfigError, WriteError
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2 as pb
from ..solver import Solver, read_solver_param
from ._cli import run


def _parser():
    p = argparse.ArgumentParser(prog="caffe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("command", choices=["train", "test", "time", "device_query"])
    p.add_argument("--solver", default="", help="the solver definition (train)")
    p.add_argument("--model", default="", help="the net definition (test, time)")
    p.add_argument("--snapshot", default="", help="a .solverstate to resume training from")
    p.add_argument("--weights", default="", help="comma-separated .caffemodel files to start from (not with "
                                                  "--snapshot)")
    p.add_argument("--iterations", type=int, default=50, help="iterations for test and time")
    p.add_argument("--gpu", default="", help="GPU id(s); empty: CPU (or the solver's solver_mode)")
    p.add_argument("--phase", default="", help="TRAIN or TEST, for test/time")
    p.add_argument("--level", type=int, default=0)
    p.add_argument("--stage", default="", help="comma-separated stages")
    p.add_argument("--sigint_effect", default="stop", choices=["stop", "snapshot", "none"],
                   help="what SIGINT (Ctrl-C) and SIGTERM (a scheduler ending the job) do")
    p.add_argument("--sighup_effect", default="snapshot", choices=["stop", "snapshot", "none"])
    return p


def _stages(args):
    return [s for s in args.stage.split(",") if s]


def _set_mode(args, solver_param=None):
    gpu = args.gpu
    if not gpu and solver_param is not None and solver_param.solver_mode == pb.SolverParameter.GPU:
        try:
            backend.set_mode_gpu()
            backend.set_device(solver_param.device_id)
            glog.info("Use GPU with device ID %d", solver_param.device_id)
            return
        except RuntimeError as e:
            glog.warning("solver_mode is GPU but %s; training on the CPU", str(e).split(":")[0].lower())
    if gpu:
        backend.set_mode_gpu()
        backend.set_device(int(gpu.split(",")[0]))
        glog.info("Use GPU with device ID %s", gpu.split(",")[0])
    else:
        backend.set_mode_cpu()
        glog.info("Use CPU.")


def _phase(args, default):
    if not args.phase:
        return default
    if args.phase.upper() not in ("TRAIN", "TEST"):
        raise ConfigError("--phase must be TRAIN or TEST, got %s" % args.phase)
    return TRAIN if args.phase.upper() == "TRAIN" else TEST


def _device_count():
    try:
        import cupy
    except ImportError:
        raise ConfigError("--gpu needs CuPy, which is not installed (pip install -e '.[gpu]'); leave --gpu out to "
                          "train on the CPU") from None
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception as e:           # CUDARuntimeError without a driver or device
        raise ConfigError("--gpu: no usable CUDA device here (%s); leave --gpu out to train on the CPU" % e) from None


def gpu_list(spec):
    """--gpu=0,1 or --gpu=all as a list of device ids, each once and present."""
    if not spec:
        return []
    if spec == "all":
        return list(range(_device_count()))
    ids = []
    for part in spec.split(","):
        try:
            device = int(part)
        except ValueError:
            raise ConfigError("--gpu takes device ids separated by commas, or all; got '%s'" % spec) from None
        if device < 0:
            raise ConfigError("--gpu=%s: device ids are 0 or more" % spec)
        if device in ids:
            raise ConfigError("--gpu=%s lists GPU %d twice; give each device once" % (spec, device))
        ids.append(device)
    count = _device_count()
    for device in ids:
        if device >= count:
            raise ConfigError("--gpu=%s: there is no GPU %d (this machine has %d: 0..%d)"
                              % (spec, device, count, count - 1))
    return ids


def _local_rank():
    for var in ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return backend.solver_rank()


def _check_snapshot_folder(param, comm):
    """Rank 0 must be able to write its snapshots; every rank learns it before
    any builds its solver, so none waits for a rank that already gave up."""
    problem = None
    if comm.rank == 0:
        folder = os.path.dirname(os.path.abspath(param.snapshot_prefix + "_iter_0.caffemodel"))
        try:
            import tempfile
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as e:
            problem = "rank 0 cannot write snapshots to %s (snapshot_prefix: %s): %s" % (
                folder, param.snapshot_prefix, e.strerror or e)
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise ConfigError(problems[0])


def train(args):
    if not args.solver:
        raise ConfigError("train needs --solver=<solver.prototxt>")
    if args.snapshot and args.weights:
        raise ConfigError("give --snapshot to resume training or --weights to finetune, not both")
    if args.snapshot.endswith(".caffemodel"):
        raise ConfigError("--snapshot=%s is a model; --snapshot wants the .solverstate written beside it "
                          "(to start from a .caffemodel use --weights)" % args.snapshot)
    if args.snapshot and not os.path.exists(args.snapshot):
        raise ConfigError("--snapshot: %s does not exist" % args.snapshot)
    from ..comm import launched_by_mpi
    gpus = gpu_list(args.gpu)
    mpi = launched_by_mpi()
    if len(gpus) > 1 and not mpi:
        return _spawn_gpus(args, gpus)
    param = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args))
    side = None
    if mpi:
        from ..comm import MPIComm
        side = MPIComm()
        backend.set_solver_count(side.size)
        backend.set_solver_rank(side.rank)
        backend.set_multiprocess(True)
        if side.rank:
            glog.logger.setLevel(logging.WARNING)        # rank 0 speaks for the run
        if gpus:
            args.gpu = str(gpus[_local_rank() % len(gpus)])
    _set_mode(args, param)
    return _train(args, param, side)


def resume_hint(args, snapshot):
    """What is safe after a failed write, and the command that goes on."""
    if not snapshot:
        return ". No snapshot was written yet; free some space and start again"
    return (". The last whole snapshot is %s; free some space and resume with: python -m pycaffe_lite.tools.caffe "
            "train --solver=%s --snapshot=%s" % (snapshot, args.solver, snapshot))


def _train(args, param, side=None, uid=None):
    """The training run of one solver (one of several in a data-parallel run)."""
    comm = None
    if backend.solver_count() > 1:
        from ..parallel import communicator
        comm = communicator(uid, side)
        _check_snapshot_folder(param, comm)
    solver = Solver(param, source=args.solver)
    for w in [w for w in args.weights.split(",") if w]:
        glog.info("Finetuning from %s", w)
        solver.net.copy_from(w)
        for t in solver.test_nets:
            t.copy_from(w)
    parallel = None
    if comm is not None:
        from ..comm import peer_watch
        from ..parallel import DataParallel
        if side is not None:
            peer_watch(side)
        parallel = DataParallel(solver, comm)
        glog.info("Training on %d solvers (%s)", comm.size, type(comm).__name__)
    if args.snapshot:
        glog.info("Restoring previous solver status from %s", args.snapshot)
        solver.restore(args.snapshot)
    if parallel is not None:
        parallel.bcast()
        solver.add_callback(parallel)
        if backend.mode() == backend.GPU and param.layer_wise_reduce:
            solver.net.after_backward(parallel)
    effects = {"stop": "stop", "snapshot": "snapshot", "none": None}

    def handler(effect):
        def on_signal(signum, frame):
            if effect:
                solver.request(effect)
        return on_signal
    old_int = signal.signal(signal.SIGINT, handler(effects[args.sigint_effect]))
    old_hup = signal.signal(signal.SIGHUP, handler(effects[args.sighup_effect]))
    # a cluster scheduler's SIGTERM (time limit, preemption) does what SIGINT does
    old_term = signal.signal(signal.SIGTERM, handler(effects[args.sigint_effect]))
    bar = None
    try:
        if sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=param.max_iter, unit="iter", dynamic_ncols=True, leave=False)
            solver.progress = bar
            glog.set_progress_bar(bar)
        glog.info("Starting Optimization")
        try:
            solver.solve()
        except WriteError as e:
            e.args = (e.args[0], e.args[1] + resume_hint(args, e.last_snapshot))
            raise
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGHUP, old_hup)
        signal.signal(signal.SIGTERM, old_term)
        if bar is not None:
            bar.close()
            glog.set_progress_bar(None)
    glog.info("Optimization Done.")
    return 0


def _gpu_worker(argv, gpus, rank, uid):
    """One process of `caffe train --gpu=a,b,...`: its own device, NCCL with the others."""
    args = _parser().parse_args(argv)
    backend.set_solver_count(len(gpus))
    backend.set_solver_rank(rank)
    backend.set_multiprocess(True)
    if rank:
        glog.logger.setLevel(logging.WARNING)
    args.gpu = str(gpus[rank])
    param = read_solver_param(args.solver)
    param.train_state.level = args.level
    param.train_state.stage.extend(_stages(args))
    _set_mode(args, param)
    sys.exit(_train(args, param, None, uid))


def _spawn_gpus(args, gpus):
    """One process per device, as pycaffe's train.py; a process that dies
    ends the others, with an error that names it."""
    import multiprocessing
    from ..parallel import NCCL
    glog.info("Using devices %s", gpus)
    uid = NCCL.new_uid()
    ctx = multiprocessing.get_context("spawn")
    argv = [a for a in sys.argv[1:] if a != "--debug"]
    procs = [ctx.Process(target=_gpu_worker, args=(argv, gpus, r, uid), name="rank %d" % r)
             for r in range(len(gpus))]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            for r, p in enumerate(procs):
                if p.exitcode not in (None, 0):
                    for q in procs:
                        if q.is_alive():
                            q.terminate()
                    raise ConfigError("rank %d (GPU %d) ended with status %s; the other ranks were stopped"
                                      % (r, gpus[r], p.exitcode))
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:          # each took the signal too; let rank 0 finish its snapshot
            p.join(60)
        raise
    bad = [(r, p.exitcode) for r, p in enumerate(procs) if p.exitcode]
    if bad:
        raise ConfigError("rank %d (GPU %d) ended with status %s" % (bad[0][0], gpus[bad[0][0]], bad[0][1]))
    return 0


def test(args):
    if not args.model or not args.weights:
        raise ConfigError("test needs --model and --weights")
    _set_mode(args)
    net = Net(args.model, _phase(args, TEST), level=args.level, stages=_stages(args))
    for w in args.weights.split(","):
        net.copy_from(w)
    glog.info("Running for %d iterations.", args.iterations)
    scores, names, loss = None, [], 0.0
    for i in range(args.iterations):
        loss += net.forward_from_to(0, len(net.layers) - 1)
        values = []
        for name in net.outputs:
            for v in net.blobs[name].data.ravel():
                values.append(np.float32(v))
                names.append(name) if i == 0 else None
                glog.info("Batch %d, %s = %g", i, name, v)
        scores = values if scores is None else [a + b for a, b in zip(scores, values)]
    glog.info("Loss: %g", loss / args.iterations)
    for name, s in zip(names, scores or []):
        mean = np.float32(s) / np.float32(args.iterations)
        w = net.blob_loss_weights[name]
        extra = " (* %g = %g loss)" % (w, w * mean) if w else ""
        glog.info("%s = %g%s", name, mean, extra)
    return 0


def time_net(args):
    if not args.model:
        raise ConfigError("time needs --model")
    _set_mode(args)
    net = Net(args.model, _phase(args, TRAIN), level=args.level, stages=_stages(args))
    # Every layer's backward is timed, so every layer runs as in training.
    for layer in net.layers:
        layer.need_backward = True
    glog.info("Performing Forward")
    loss = net.forward_from_to(0, len(net.layers) - 1)
    glog.info("Initial loss: %g", loss)
    glog.info("Performing Backward")
    net.backward_from_to(len(net.layers) - 1, 0)
    n = len(net.layers)
    fwd, bwd = [0.0] * n, [0.0] * n
    fwd_engine, bwd_engine = [""] * n, [""] * n
    total_f = total_b = 0.0
    glog.info("*** Benchmark begins ***")
    glog.info("Testing for %d iterations.", args.iterations)
    start = time.perf_counter()
    for j in range(args.iterations):
        t_iter = time.perf_counter()
        for i, layer in enumerate(net.layers):
            t = time.perf_counter()
            layer.run_forward(net._bottom(i), net._top(i))
            fwd[i] += time.perf_counter() - t
            fwd_engine[i] = layer.engine
        total_f += time.perf_counter() - t_iter
        t_back = time.perf_counter()
        for i in range(n - 1, -1, -1):
            # Like Caffe's time: every layer's backward runs, needed or not
            # (parameter gradients included), with the net's propagate_down.
            t = time.perf_counter()
            net.layers[i].backward(net._top(i), net._bottom_need_backward[i], net._bottom(i))
            bwd[i] += time.perf_counter() - t
            bwd_engine[i] = net.layers[i].engine
        total_b += time.perf_counter() - t_back
        glog.info("Iteration: %d forward-backward time: %g ms.", j + 1, (time.perf_counter() - t_iter) * 1e3)
    total = time.perf_counter() - start
    k = float(args.iterations)
    glog.info("Average time per layer: ")
    for i, name in enumerate(net._layer_names):
        glog.info("%10s\tforward: %g ms.\t(%s)", name, fwd[i] * 1e3 / k, fwd_engine[i])
        glog.info("%10s\tbackward: %g ms.\t(%s)", name, bwd[i] * 1e3 / k, bwd_engine[i])
    glog.info("Average Forward pass: %g ms.", total_f * 1e3 / k)
    glog.info("Average Backward pass: %g ms.", total_b * 1e3 / k)
    glog.info("Average Forward-Backward: %g ms.", total * 1e3 / k)
    glog.info("Total Time: %g ms.", total * 1e3)
    glog.info("*** Benchmark ends ***")
    return 0


def device_query(args):
    glog.info("Querying devices")
    try:
        backend.set_mode_gpu()
    except RuntimeError as e:
        glog.info("No GPU: %s", e)
        glog.info("CPU: %s, %d cores, numpy %s", platform.processor() or platform.machine(), os.cpu_count(),
                 np.__version__)
        backend.set_mode_cpu()
        return 0
    return 0


COMMANDS = {"train": train, "test": test, "time": time_net, "device_query": device_query}


def main(argv=None):
    return run(lambda a: COMMANDS[_parser().parse_args(a).command](_parser().parse_args(a)), argv, "caffe")


if __name__ == "__main__":
    raise SystemExit(main())

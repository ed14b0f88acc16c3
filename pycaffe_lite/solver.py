"""Solver: builds the train and test nets from a SolverParameter and runs
Caffe's loop (test, forward/backward, display, update, snapshot), with the
same log lines, snapshots and resume."""
import json
import math
import os
import time

import numpy as np

from . import backend, detection_eval, glog, protoio
from .blob import Blob
from .errors import CaffeError, ConfigError, FormatError, WriteError
from .net import Net
from .proto import caffe_pb2 as pb
from .solvers import RULES, learning_rate
from .upgrade import upgrade_snapshot_prefix, upgrade_solver

f32 = np.float32


class DivergenceError(CaffeError):
    """The loss became NaN or infinite."""


def _fmt(x):
    return "%g" % float(x)


def read_solver_param(path):
    param = protoio.read_text(str(path), pb.SolverParameter())
    return upgrade_snapshot_prefix(upgrade_solver(param, str(path)), str(path))


class Solver:
    """pycaffe's solver API: step(n), solve(), net, test_nets, iter,
    snapshot(), restore(path)."""

    rule_type = None      # set by SGDSolver and the other typed solvers

    def __init__(self, solver, source=None):
        """`solver`: a solver.prototxt path or a SolverParameter (then `source`
        names it in messages)."""
        if isinstance(solver, pb.SolverParameter):
            self.param, self._source = solver, source or "SolverParameter"
        else:
            self._source = str(solver)
            self.param = read_solver_param(solver)
        p = self.param
        if self.rule_type and not p.HasField("type"):
            p.type = self.rule_type
        rule = RULES.get(p.type)
        if rule is None:
            raise ConfigError("%s: unknown solver type '%s' (one of %s)" % (self._source, p.type, ", ".join(RULES)))
        if self.rule_type and self.rule_type != p.type:
            raise ConfigError("%s: solver type is '%s' but %s was asked for"
                              % (self._source, p.type, type(self).__name__))
        self.rule = rule(p)
        if p.regularization_type not in ("L1", "L2"):
            raise ConfigError("%s: unknown regularization_type '%s' (L1 or L2)" % (self._source, p.regularization_type))
        if p.eval_type not in ("classification", "detection"):
            raise ConfigError("%s: unknown eval_type '%s' (classification or detection)" % (self._source, p.eval_type))
        if p.eval_type == "detection" and p.ap_version not in detection_eval.AP_VERSIONS:
            raise ConfigError("%s: unknown ap_version '%s' (one of %s)"
                              % (self._source, p.ap_version, ", ".join(detection_eval.AP_VERSIONS)))
        if p.solver_mode == pb.SolverParameter.GPU and backend.mode() == backend.GPU:
            backend.set_device(p.device_id)
        if p.random_seed >= 0:
            # Each solver of a data-parallel run gets its own stream, as in Caffe.
            backend.set_random_seed(p.random_seed + backend.solver_rank())
        glog.info("Initializing solver from parameters: \n%s", str(p))
        self.iter = 0
        self._check_values()
        self._check_snapshot_prefix()
        self.net = self._train_net()
        self.test_nets = self._test_nets()
        for t in self.test_nets:
            t.share_with(self.net)
        self.iter = 0
        self.current_step = 0
        xp = backend.xp()
        self.history = [xp.zeros(b.shape, dtype=b.data.dtype)
                        for _ in range(self.rule.histories) for b in self.net.learnable_params]
        self._losses, self.smoothed_loss = [], 0.0
        self._requested = None        # "snapshot" or "stop", set by signal handlers
        self.last_snapshot = None     # the newest whole .solverstate of this run (or the one it resumed)
        self.early_exit = False
        self.progress = None          # a tqdm bar, when the caller wants one
        self._callbacks = []          # objects with on_start() and on_gradients_ready()
        self.comm = None              # the communicator of a data-parallel run (parallel.DataParallel sets it)
        glog.info("Solver scaffolding done.")

    # Caffe's CHECKs on solver values, made here at construction (Caffe makes
    # some of them only at the first update)
    _GAMMA_POLICIES = ("step", "exp", "inv", "multistep", "sigmoid")
    _POLICIES = ("fixed",) + _GAMMA_POLICIES + ("poly",)

    def _check_values(self):
        p = self.param

        def refuse(field, why):
            raise ConfigError("%s: %s %s" % (self._source, field, why))
        if p.average_loss < 1:
            refuse("average_loss", "must be at least 1 (the number of losses averaged for display), got %d"
                   % p.average_loss)
        if p.iter_size < 1:
            refuse("iter_size", "must be at least 1 (forward/backward passes per update), got %d" % p.iter_size)
        if p.lr_policy not in self._POLICIES:
            refuse("lr_policy", "'%s' is not a learning rate policy (%s)" % (p.lr_policy, ", ".join(self._POLICIES)))
        if p.lr_policy in ("step", "sigmoid") and p.stepsize <= 0:
            refuse("stepsize", "must be positive with lr_policy \"%s\", got %d" % (p.lr_policy, p.stepsize))
        if p.lr_policy in self._GAMMA_POLICIES and p.gamma < 0:
            refuse("gamma", "must not be negative with lr_policy \"%s\", got %g" % (p.lr_policy, p.gamma))
        if p.type in ("AdaGrad", "RMSProp") and p.momentum != 0:
            refuse("momentum", "cannot be used with %s (got %g); remove it" % (p.type, p.momentum))
        if p.type == "RMSProp" and not 0 <= p.rms_decay < 1:
            refuse("rms_decay", "should lie between 0 and 1 (0 included), got %g" % p.rms_decay)
        if p.test_interval < 0:
            refuse("test_interval", "must not be negative, got %d" % p.test_interval)

    # -- nets --------------------------------------------------------------
    def _train_net(self):
        p = self.param
        fields = [f for f in ("net", "net_param", "train_net", "train_net_param") if p.HasField(f)]
        if len(fields) != 1:
            raise ConfigError("%s: give exactly one of net, net_param, train_net, train_net_param (got %s)"
                              % (self._source, fields or "none"))
        field = fields[0]
        if field in ("net", "train_net"):
            path = getattr(p, field)
            net_param, where = protoio.read_net_text(self._existing(path, "net")), "net file: " + path
        else:
            net_param, where = pb.NetParameter(), field
            net_param.CopyFrom(getattr(p, field))
        glog.info("Creating training net from %s", where)
        state = pb.NetState(phase=pb.TRAIN)
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        return Net._from_param(net_param, state, where)

    def _existing(self, path, what):
        if not os.path.exists(path):
            raise ConfigError("%s: the %s file %s does not exist (paths are relative to the directory you "
                              "run from: %s)" % (self._source, what, path, os.getcwd()))
        return path

    def _test_nets(self):
        p = self.param
        sources = [(protoio.read_net_text(self._existing(f, "test net")), f) for f in p.test_net]
        sources += [(n, "test_net_param") for n in p.test_net_param]
        generic = p.HasField("net") or p.HasField("net_param")
        if (len(p.test_iter) < len(sources)) if generic else (len(p.test_iter) != len(sources)):
            raise ConfigError("%s: test_iter must be given once per test net (%d test net%s, %d test_iter)"
                              % (self._source, len(sources), "" if len(sources) == 1 else "s", len(p.test_iter)))
        n_generic = len(p.test_iter) - len(sources) if generic else 0
        if any(t < 0 for t in p.test_iter):
            raise ConfigError("%s: test_iter must not be negative, got %s" % (self._source, list(p.test_iter)))
        if len(p.test_state) not in (0, len(sources) + n_generic):
            raise ConfigError("%s: test_state must be given once per test net, or not at all" % self._source)
        if generic and n_generic:
            base = pb.NetParameter()
            if p.HasField("net_param"):
                base.CopyFrom(p.net_param)
                where = "net_param"
            else:
                base, where = protoio.read_net_text(self._existing(p.net, "net")), p.net
            sources += [(base, where)] * n_generic
        nets = []
        for i, (net_param, where) in enumerate(sources):
            glog.info("Creating test net (#%d) specified by %s", i, where)
            state = pb.NetState(phase=pb.TEST)
            state.MergeFrom(net_param.state)
            if len(p.test_state):
                state.MergeFrom(p.test_state[i])
            nets.append(Net._from_param(net_param, state, where))
        if p.test_interval and not nets and len(p.test_iter):
            raise ConfigError("%s: test_iter given but no test net" % self._source)
        if nets and p.test_interval <= 0:
            raise ConfigError("%s: test_interval must be positive when there are test nets (%d), got %d"
                              % (self._source, len(nets), p.test_interval))
        return nets

    # -- the loop ----------------------------------------------------------
    def request(self, action):
        """Ask the loop to 'snapshot' or 'stop' at the next safe point (signals)."""
        self._requested = action

    def _take_request(self):
        action, self._requested = self._requested, None
        return action

    def _update_smoothed_loss(self, loss, start_iter):
        n = max(1, self.param.average_loss)
        if len(self._losses) < n:
            self._losses.append(loss)
            k = len(self._losses)
            self.smoothed_loss = (self.smoothed_loss * (k - 1) + loss) / k
        else:
            idx = (self.iter - start_iter) % n
            self.smoothed_loss += (loss - self._losses[idx]) / n
            self._losses[idx] = loss

    def step(self, iters):
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + int(iters)
        if stop_iter > 2 ** 31 - 1:
            raise ConfigError("%d step(s) from iteration %d would go past iteration 2147483647, the largest a "
                              ".solverstate holds" % (iters, self.iter))
        self._losses, self.smoothed_loss = [], 0.0
        timer, last_iter = time.time(), self.iter
        while self.iter < stop_iter:
            if self._callbacks:       # a callback may look at the diffs: clear them for real
                self.net.clear_param_diffs()
            else:
                self.net._mark_param_diffs_clear()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization) \
                    and self._root():
                self.test_all()
                if self.early_exit:
                    break
            for cb in self._callbacks:
                cb.on_start()
            display = p.display and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                loss += float(f32(self.net.forward_backward()))
            loss = float(f32(loss / p.iter_size))
            if not math.isfinite(loss):
                self._diverged(loss)
            self._update_smoothed_loss(loss, start_iter)
            if display:
                lapse = time.time() - timer
                per_s = (self.iter - last_iter) / (lapse or 1)
                glog.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _fmt(per_s),
                         _fmt(lapse), p.display, _fmt(self.smoothed_loss))
                timer, last_iter = time.time(), self.iter
                self._log_outputs(self.net, "Train", lambda v: v)
            for cb in self._callbacks:
                cb.on_gradients_ready()
            self.apply_update()
            self.iter += 1
            if self.progress is not None:
                self.progress.update(1)
            action = self._agreed(self._take_request())
            if (p.snapshot and self.iter % p.snapshot == 0) or action == "snapshot":
                self.snapshot()
            if action == "stop":
                self.early_exit = True
                break

    def _root(self):
        return backend.solver_rank() == 0

    _ACTIONS = [None, "snapshot", "stop"]

    def _agreed(self, action):
        """Every solver of a run takes the same action (a signal may reach them
        at different iterations); stop outranks snapshot."""
        if self.comm is None or self.comm.size == 1:
            return action
        return self._ACTIONS[self.comm.agree(self._ACTIONS.index(action))]

    def add_callback(self, on_start, on_gradients_ready=None):
        """pycaffe's Solver.add_callback: two callables, run at the start of
        each iteration and once its gradients are ready (before the update),
        or one object with on_start() and on_gradients_ready() (caffe.NCCL)."""
        if on_gradients_ready is None:
            if not (hasattr(on_start, "on_start") and hasattr(on_start, "on_gradients_ready")):
                raise TypeError("add_callback takes (on_start, on_gradients_ready) callables, or an object with "
                                "on_start() and on_gradients_ready() such as caffe.NCCL")
            self._callbacks.append(on_start)
            return
        self._callbacks.append(_Callback(on_start, on_gradients_ready))

    def share_weights(self, net):
        """Make `net` use this solver's train-net weights (pycaffe's share_weights)."""
        net.share_with(self.net)

    def _log_outputs(self, net, kind, scale, values=None):
        k = 0
        for j, name in enumerate(net.outputs):
            blob = net.blobs[name]
            weight = net.blob_loss_weights[name]
            vals = values[j] if values is not None else blob.data.ravel()
            for v in np.atleast_1d(vals):
                v = f32(scale(v))
                extra = " (* %s = %s loss)" % (_fmt(weight), _fmt(f32(weight) * v)) if weight else ""
                glog.info("    %s net output #%d: %s = %s%s", kind, k, name, _fmt(v), extra)
                k += 1

    def _diverged(self, loss):
        where = "iteration %d" % self.iter
        if self.param.snapshot and all(np.isfinite(b.data).all() for b in self.net.learnable_params):
            self.snapshot()
            where += "; the weights it started from are in %s" % self._filename(".caffemodel")
        raise DivergenceError("the loss became %s at %s. Lower base_lr, or clip gradients (clip_gradients)"
                              % (loss, where))

    def solve(self, resume_file=None):
        p = self.param
        glog.info("Solving %s", self.net.name)
        glog.info("Learning Rate Policy: %s", p.lr_policy)
        self.early_exit = False
        if resume_file:
            glog.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()                   # which checks the weights first
        else:
            self._check_weights()             # the last update's result, which no loss has seen
        if self.early_exit:
            glog.info("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:
            loss = float(f32(self.net.forward_from_to(0, len(self.net.layers) - 1)))
            self._update_smoothed_loss(loss, start_iter)
            glog.info("Iteration %d, loss = %s", self.iter, _fmt(self.smoothed_loss))
        if p.test_interval and self.iter % p.test_interval == 0 and self._root():
            self.test_all()
        glog.info("Optimization Done.")

    def test_all(self):
        for i in range(len(self.test_nets)):
            self.test(i)

    def test(self, i):
        p = self.param
        glog.info("Iteration %d, Testing net (#%d)", self.iter, i)
        net = self.test_nets[i]
        scores, loss = None, 0.0
        detection = p.eval_type == "detection"
        found = [detection_eval.Accumulator() for _ in net.outputs] if detection else None
        for _ in range(p.test_iter[i]):
            action = self._take_request()
            if action == "snapshot":
                self.snapshot()
            elif action == "stop":
                self.early_exit = True
                break
            iter_loss = net.forward_from_to(0, len(net.layers) - 1)
            if p.test_compute_loss:
                loss += iter_loss
            if detection:
                for acc, name in zip(found, net.outputs):
                    acc.add(net.blobs[name].data, name)
                continue
            result = [net.blobs[name].data.astype(np.float32).ravel().copy() for name in net.outputs]
            scores = result if scores is None else [s + r for s, r in zip(scores, result)]
        if self.early_exit:
            glog.info("Test interrupted.")
            return
        if p.test_compute_loss:
            glog.info("Test loss: %s", _fmt(loss / p.test_iter[i]))
        if detection:
            self._log_detection(net, found)
            return
        n = f32(p.test_iter[i])
        self.last_test_scores = {name: s / n for name, s in zip(net.outputs, scores or [])}
        if scores is not None:         # test_iter 0: Caffe averages nothing and prints nothing
            self._log_outputs(net, "Test", lambda v: v / n, scores)

    def _log_detection(self, net, found):
        """mAP per output (the fork's TestDetection), each after its classes' APs when asked."""
        self.last_test_scores = {}
        for k, (name, acc) in enumerate(zip(net.outputs, found)):
            aps = acc.average_precisions(self.param.ap_version)
            if self.param.show_per_class_result:
                for label, ap in aps.items():
                    glog.info("class%d: %s", label, _fmt(ap))
            value = detection_eval.mean_ap(aps)
            self.last_test_scores[name] = np.array([value], np.float32)
            glog.info("    Test net output #%d: %s = %s", k, name, _fmt(value))

    # -- the update ----------------------------------------------------------
    def apply_update(self):
        p = self.param
        rate, self.current_step = learning_rate(p, self.iter, self.current_step)
        if p.lr_policy == "multistep" and self._last_step_logged != self.current_step and self.current_step:
            glog.info("MultiStep Status: Iteration %d, step = %d", self.iter, self.current_step)
        self._last_step_logged = self.current_step
        self.last_lr = rate
        if p.display and self.iter % p.display == 0:
            glog.info("Iteration %d, lr = %s", self.iter, _fmt(rate))
        params = self.net.learnable_params
        self._clip_gradients(params)
        decay = f32(p.weight_decay)
        n = len(params)
        for i, blob in enumerate(params):
            local_decay = decay * f32(self.net.params_weight_decay[i])
            local_rate = rate * f32(self.net.params_lr[i])
            w, g = blob.dev_data.reshape(-1), blob.dev_diff.reshape(-1)
            hists = [self.history[k * n + i].reshape(-1) for k in range(self.rule.histories)]
            backend.ops().chunked(self._update_chunk(w, g, hists, local_decay, local_rate), w.size)

    def _update_chunk(self, w, g, hists, local_decay, local_rate):
        """Normalize, regularize, compute the step and apply it, for one slice:
        Caffe's order of operations, one pass over memory."""
        p = self.param
        l2 = p.regularization_type == "L2"
        scale = f32(1) / f32(p.iter_size) if p.iter_size > 1 else None

        def run(a, b):
            gs, ws = g[a:b], w[a:b]
            if scale is not None:
                gs *= scale
            if local_decay:
                gs += local_decay * (ws if l2 else backend.xp().sign(ws))
            self.rule.compute(gs, [h[a:b] for h in hists], local_rate, self.iter)
            ws -= gs
        return run

    _last_step_logged = 0

    def _clip_gradients(self, params):
        clip = f32(self.param.clip_gradients)
        if clip < 0:
            return
        xp = backend.xp()
        sumsq = f32(0)
        for b in params:
            d = b.dev_diff.ravel()
            sumsq += f32(xp.dot(d, d))
        norm = f32(np.sqrt(sumsq))
        if norm > clip:
            factor = clip / norm
            glog.info("Gradient clipping: scaling down gradients (L2 norm %s > %s) by scale factor %s",
                     _fmt(norm), _fmt(clip), _fmt(factor))
            for b in params:
                b.dev_diff[...] *= factor

    # -- snapshots -------------------------------------------------------------
    def _filename(self, ext):
        return "%s_iter_%d%s" % (self.param.snapshot_prefix, self.iter, ext)

    def _check_snapshot_prefix(self):
        """Caffe's start-up check (root solver, snapshots asked for): a
        prefix is given, and a file can be written there."""
        p = self.param
        if not p.snapshot or backend.solver_rank() != 0:
            return
        if not p.HasField("snapshot_prefix"):
            raise ConfigError("%s: snapshot is specified (every %d iterations) but snapshot_prefix is not"
                              % (self._source, p.snapshot))
        probe = self._filename(".tempfile")
        if "\0" in probe:
            raise ConfigError("%s: snapshot_prefix holds a NUL byte; give a file path" % self._source)
        try:
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as e:
            raise ConfigError("%s: Cannot write to snapshot prefix '%s' (%s). Make sure that the directory "
                              "exists and is writable." % (self._source, p.snapshot_prefix, e.strerror or e)) \
                from None

    def _snapshot_hdf5(self):
        """Caffe's HDF5 layout: model datasets data/<layer>/<i>; state attributes
        iter, current_step, learned_net and datasets history/<i>."""
        try:
            import h5py
        except ImportError:
            raise ConfigError("snapshot_format: HDF5 needs h5py (pip install h5py), or use BINARYPROTO") from None
        model = self._filename(".caffemodel.h5")
        glog.info("Snapshotting to HDF5 file %s", model)
        self.net.save_hdf5(model, self.param.snapshot_diff)
        path = self._filename(".solverstate.h5")
        glog.info("Snapshotting solver state to HDF5 file %s", path)
        with h5py.File(path + ".tmp", "w") as f:
            f.attrs["iter"] = self.iter
            f.attrs["current_step"] = self.current_step
            f.attrs["learned_net"] = model
            for i, h in enumerate(self.history):
                f.create_dataset("history/%d" % i, data=backend.to_host(h))
        os.replace(path + ".tmp", path)
        return path

    def _restore_hdf5(self, path):
        import h5py
        with h5py.File(path, "r") as f:
            self.iter = int(f.attrs["iter"])
            self.current_step = int(f.attrs["current_step"])
            model = f.attrs["learned_net"]
            model = model.decode() if isinstance(model, bytes) else str(model)
            if len(f["history"]) != len(self.history):
                raise FormatError("%s holds %d history blobs; this net and solver need %d"
                                  % (path, len(f["history"]), len(self.history)))
            for i, h in enumerate(self.history):
                h[...] = backend.xp().asarray(f["history/%d" % i][...])
        self.net.load_hdf5(model)

    def _check_weights(self):
        """A snapshot of NaN weights is never written: say why instead."""
        names = {id(b): "%s[%d]" % (layer, i) for layer, blobs in self.net.params.items() for i, b in enumerate(blobs)}
        bad = [names.get(id(b), "?") for b in self.net.learnable_params
               if not np.isfinite(b.engine_data().read()).all()]
        if bad:
            raise DivergenceError("the weights became NaN or infinite (%s) in the update of iteration %d; no "
                                  "snapshot of them is written. Lower base_lr, or clip gradients (clip_gradients)"
                                  % (", ".join(bad[:4]) + (", ..." if len(bad) > 4 else ""), self.iter - 1))

    def snapshot(self):
        """Write the weights and the solver state; in a data-parallel run every
        solver takes part (their data positions are gathered) and rank 0
        writes. Returns the .solverstate path (None on the other ranks). A
        write that fails raises WriteError carrying the last whole snapshot."""
        try:
            path = self._snapshot()
        except WriteError as e:
            e.last_snapshot = self.last_snapshot
            raise
        if path is not None:
            self.last_snapshot = path
        return path

    def _snapshot(self):
        self._check_weights()
        streams = self._streams()
        if self.comm is not None and self.comm.size > 1:
            streams = self.comm.allgather(streams)
            if not self._root():
                return None
        else:
            streams = [streams]
        if self.param.snapshot_format == pb.SolverParameter.HDF5:
            try:
                return self._snapshot_hdf5()
            except WriteError:
                raise
            except OSError as e:
                raise WriteError(getattr(e, "filename", None) or self._filename(".solverstate.h5"), e) from None
        model = self._filename(".caffemodel")
        folder = os.path.dirname(model)
        if folder and not os.path.isdir(folder):
            raise ConfigError("cannot snapshot to %s: the folder %s does not exist" % (model, folder))
        glog.info("Snapshotting to binary proto file %s", model)
        protoio.write_binary(model, self.net.to_proto(self.param.snapshot_diff))
        state = pb.SolverState(iter=self.iter, learned_net=model, current_step=self.current_step)
        for h in self.history:
            blob = Blob(h.shape)
            blob.data[...] = backend.to_host(h)
            blob.to_proto(state.history.add())
        self._save_streams(state, streams)
        path = self._filename(".solverstate")
        glog.info("Snapshotting solver state to binary proto file %s", path)
        protoio.write_binary(path, state)
        return path

    def _layers_with(self, method):
        """(train/NAME or testI/NAME, layer) for every layer that has `method`."""
        nets = [("train", self.net)] + [("test%d" % i, n) for i, n in enumerate(self.test_nets)]
        for tag, net in nets:
            for name, layer in zip(net._layer_names, net.layers):
                if hasattr(layer, method):
                    yield "%s/%s" % (tag, name), layer

    def _streams(self):
        """Where this solver's data layers stand and its random stream."""
        data = [(name,) + tuple(layer.get_state()) for name, layer in self._layers_with("get_state")]
        return data, json.dumps(backend.rng().bit_generator.state).encode()

    def _save_streams(self, state, streams):
        """Our fields of the .solverstate: every solver's data positions and
        random stream (rank r > 0 under the prefix "rank<r>/")."""
        for rank, (data, rng_state) in enumerate(streams):
            prefix = "rank%d/" % rank if rank else ""
            for name, read, rnd in data:
                state.data_state.add(layer=prefix + name, records_read=read, random_state=rnd)
            if rank:
                state.data_state.add(layer=prefix + "random_state", random_state=rng_state)
            else:
                state.random_state = rng_state
        for name, layer in self._layers_with("carried_state"):
            entry = state.layer_state.add(layer=name)
            for blob in layer.carried_state():
                blob.to_proto(entry.blobs.add())
        state.smoothed_loss = self.smoothed_loss

    def restore(self, path):
        path = str(path)
        if path.endswith(".h5"):
            self._restore_hdf5(path)
            self.last_snapshot = path
            return
        if path.endswith(".caffemodel"):
            raise ConfigError("%s is a model; --snapshot wants the .solverstate written beside it (use --weights "
                              "to start from a .caffemodel)" % path)
        state = protoio.read_binary(path, pb.SolverState())
        self.last_snapshot = path
        if not state.HasField("iter"):
            raise FormatError("%s: not a solver state (no iteration recorded)" % path)
        if len(state.history) != len(self.history):
            raise FormatError("%s holds %d history blobs; this net and solver type (%s) need %d. Was it written "
                              "for another net or solver type?" % (path, len(state.history), self.param.type,
                                                                    len(self.history)))
        for i, (proto, h) in enumerate(zip(state.history, self.history)):
            blob = Blob(h.shape)
            if not blob.shape_matches_proto(proto):
                from .blob import proto_shape
                raise FormatError("%s: history blob %d is %s but the parameter is %s; the state was written for "
                                  "another net" % (path, i, proto_shape(proto), h.shape))
        # Every field is checked before anything is set: a damaged state leaves the solver as it was.
        if state.iter < 0:
            raise FormatError("%s: iter is %d; a solver state starts at iteration 0 or later" % (path, state.iter))
        if self.param.lr_policy == "multistep" and not 0 <= state.current_step <= len(self.param.stepvalue):
            raise FormatError("%s: current_step is %d, but this solver's multistep policy has steps 0 to %d "
                              "(stepvalue given %d times)" % (path, state.current_step, len(self.param.stepvalue),
                                                             len(self.param.stepvalue)))
        rank = backend.solver_rank()
        prefix = "rank%d/" % rank if rank else ""
        layers = dict((prefix + name, layer) for name, layer in self._layers_with("get_state"))
        positions, rng_state = [], state.random_state
        for entry in state.data_state:
            if entry.layer in layers:
                if entry.records_read < 0:
                    raise FormatError("%s: data_state of layer '%s': records_read is %d; it counts records "
                                      "read, 0 or more" % (path, entry.layer, entry.records_read))
                if entry.random_state:
                    _random_state(entry.random_state, "data_state of layer '%s'" % entry.layer, path,
                                  layers[entry.layer].rng)
                positions.append((layers[entry.layer], entry.records_read, entry.random_state))
            elif rank and entry.layer == prefix + "random_state":
                rng_state = entry.random_state
        rng = rng_state and _random_state(rng_state, "random_state", path, backend.rng())
        if state.learned_net:
            try:
                self.net.copy_from(state.learned_net)
            except FormatError as e:
                raise FormatError("%s: its learned_net, the weights it resumes from: %s" % (path, e)) from None
        for proto, h in zip(state.history, self.history):
            blob = Blob(h.shape)
            blob.from_proto(proto, reshape=False)
            h[...] = backend.xp().asarray(blob.data)
        self.iter = state.iter
        self.current_step = state.current_step
        self._last_step_logged = self.current_step
        for layer, records_read, random_state in positions:
            layer.set_state(records_read, random_state)
        if rng:
            backend.rng().bit_generator.state = rng
        if len(state.layer_state) and self._root():       # rank 0's recurrent state only
            layers = dict(self._layers_with("carried_state"))
            for entry in state.layer_state:
                if entry.layer in layers:
                    for proto, blob in zip(entry.blobs, layers[entry.layer].carried_state()):
                        blob.from_proto(proto)


def _random_state(raw, field, path, generator):
    """Our .solverstate's random stream `raw` as the state `generator` takes,
    checked to be one; a clear error naming the field if not."""
    try:
        state = json.loads(raw.decode("utf-8"))
        if not isinstance(state, dict) or state.get("bit_generator") != generator.bit_generator.state["bit_generator"]:
            raise ValueError("not a %s state" % generator.bit_generator.state["bit_generator"])
        probe = type(generator.bit_generator)()
        probe.state = state
    except (UnicodeDecodeError, ValueError, TypeError, KeyError) as e:
        raise FormatError("%s: %s is not a random stream this solver can resume (%s); the file is damaged, or "
                          "was not written by pycaffe_lite" % (path, field, e)) from None
    return state


class _Callback:
    def __init__(self, on_start, on_gradients_ready):
        self.on_start, self.on_gradients_ready = on_start, on_gradients_ready


def _typed(name):
    return type(name + "Solver", (Solver,), {"rule_type": name, "__doc__": "pycaffe's %sSolver." % name})


SGDSolver = _typed("SGD")
NesterovSolver = _typed("Nesterov")
AdaGradSolver = _typed("AdaGrad")
RMSPropSolver = _typed("RMSProp")
AdaDeltaSolver = _typed("AdaDelta")
AdamSolver = _typed("Adam")


def get_solver(path):
    """The solver of the type the solver file names (pycaffe's caffe.get_solver)."""
    return Solver(path)

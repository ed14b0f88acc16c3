"""Net: a NetParameter built into layers and blobs, run forward and backward.

The steps follow Caffe's Net::Init: upgrade old formats, keep the layers whose
include/exclude rules meet the NetState, insert Split layers where one top
feeds several bottoms, set up each layer in order, then work out which layers
and blobs need backward."""
import contextlib
import functools
import os
from collections import OrderedDict

import numpy as np

from . import activations, backend, caffemodel, fusion, glog, plan as prepared, protoio
from .blob import Blob
from .errors import CaffeError, ConfigError, FormatError, ShapeError
from .layer import create_layer
from .proto import caffe_pb2 as pb
from .upgrade import upgrade_net

TRAIN, TEST = pb.TRAIN, pb.TEST


# ---------------------------------------------------------------- NetState rules

def state_meets_rule(state, rule):
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    stages = set(state.stage)
    if any(s not in stages for s in rule.stage):
        return False
    if any(s in stages for s in rule.not_stage):
        return False
    return True


def filter_net(param, state, source="net"):
    """The layers of `param` that the NetState includes (Caffe's FilterNet)."""
    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    for layer in param.layer:
        if len(layer.include) and len(layer.exclude):
            raise ConfigError("%s: layer '%s' has both include and exclude rules; give one kind only"
                              % (source, layer.name))
        if len(layer.include):
            keep = any(state_meets_rule(state, r) for r in layer.include)
        else:
            keep = not any(state_meets_rule(state, r) for r in layer.exclude)
        if keep:
            out.layer.add().CopyFrom(layer)
    return out


# ---------------------------------------------------------------- split insertion

def split_layer_name(layer_name, blob_name, top_index):
    return "%s_%s_%d_split" % (blob_name, layer_name, top_index)


def split_blob_name(layer_name, blob_name, top_index, k):
    return "%s_%s_%d_split_%d" % (blob_name, layer_name, top_index, k)


def insert_splits(param, source="net"):
    """Give each consumer of a multiply-used top its own copy (Caffe's names)."""
    last_top = {}           # blob name -> (layer index, top index) that last wrote it
    source_of = {}          # (layer, bottom index) -> (layer, top index)
    uses = {}               # (layer, top index) -> number of consumers (+1 if a loss)
    loss_weight = {}
    for i, layer in enumerate(param.layer):
        for j, name in enumerate(layer.bottom):
            if name not in last_top:
                raise ConfigError("%s: layer '%s' (%s) wants bottom blob '%s', which no earlier layer "
                                  "produces; add a layer (or an Input) with top: \"%s\" before it"
                                  % (source, layer.name, layer.type, name, name))
            src = last_top[name]
            source_of[(i, j)] = src
            uses[src] = uses.get(src, 0) + 1
        for j, name in enumerate(layer.top):
            last_top[name] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            loss_weight[(i, j)] = layer.loss_weight[j]
            if layer.loss_weight[j]:
                uses[(i, j)] = uses.get((i, j), 0) + 1
    out = pb.NetParameter()
    out.CopyFrom(param)
    del out.layer[:]
    next_split = {}
    for i, layer in enumerate(param.layer):
        copy = out.layer.add()
        copy.CopyFrom(layer)
        for j, name in enumerate(layer.bottom):
            src = source_of[(i, j)]
            if uses.get(src, 0) > 1:
                k = next_split.get(src, 0)
                next_split[src] = k + 1
                copy.bottom[j] = split_blob_name(param.layer[src[0]].name, name, src[1], k)
        for j, name in enumerate(layer.top):
            count = uses.get((i, j), 0)
            if count <= 1:
                continue
            weight = loss_weight.get((i, j), 0.0)
            split = out.layer.add(name=split_layer_name(layer.name, name, j), type="Split")
            split.bottom.append(name)
            for k in range(count):
                split.top.append(split_blob_name(layer.name, name, j, k))
                if weight:
                    split.loss_weight.append(weight if k == 0 else 0.0)
            if weight:
                copy.ClearField("loss_weight")
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out


# ---------------------------------------------------------------- the net

def _path(name):
    """A file name given as str, bytes or os.PathLike, as a str."""
    if isinstance(name, (bytes, os.PathLike)):
        return os.fsdecode(name)
    return str(name)


def _phase_value(phase):
    if phase in (TRAIN, TEST):
        return phase
    if isinstance(phase, str) and phase.upper() in ("TRAIN", "TEST"):
        return TRAIN if phase.upper() == "TRAIN" else TEST
    raise ConfigError("phase must be caffe.TRAIN or caffe.TEST, got %r" % (phase,))


class Net:
    """pycaffe's Net. Both of pycaffe's signatures work:

        Net(model_file, phase, level=0, stages=None, weights=None)
        Net(model_file, weights_file, phase)

    `model_file` may also be a NetParameter message."""

    def __init__(self, model, *args, **kwargs):
        phase, weights, level, stages = self._parse_args(args, kwargs)
        if isinstance(model, pb.NetParameter):
            param, source = pb.NetParameter(), "NetParameter"
            param.CopyFrom(model)
        else:
            source = _path(model)
            param = protoio.read_net_text(source)
        state = pb.NetState(phase=phase, level=level)
        state.stage.extend(stages or [])
        self._source = source
        self._init(param, state)
        if weights is not None:
            self.copy_from(weights)

    @classmethod
    def _from_param(cls, param, state, source):
        """A net from a NetParameter and a complete NetState (the solver's way)."""
        net = cls.__new__(cls)
        net._source = source
        copy = pb.NetParameter()
        copy.CopyFrom(param)
        copy.ClearField("state")
        net._init(copy, state)
        return net

    @staticmethod
    def _parse_args(args, kwargs):
        args = list(args)
        weights = kwargs.pop("weights", None)
        level = kwargs.pop("level", 0)
        stages = kwargs.pop("stages", None)
        phase = kwargs.pop("phase", None)
        if kwargs:
            raise TypeError("Net() got unexpected arguments: %s" % ", ".join(sorted(kwargs)))
        if args and (isinstance(args[0], (bytes, os.PathLike)) or
                     (isinstance(args[0], str) and args[0].upper() not in ("TRAIN", "TEST"))):
            weights = _path(args.pop(0))   # the older Net(model, weights, phase)
        if args:
            phase = args.pop(0)
        if args:
            level = args.pop(0)
        if args:
            stages = args.pop(0)
        if args and weights is None:
            weights = args.pop(0)
        if args:
            raise TypeError("Net() takes at most 4 positional arguments after the model")
        if phase is None:
            raise TypeError("Net() needs a phase: caffe.Net(model, caffe.TEST) or caffe.TRAIN")
        return _phase_value(phase), (None if weights is None else _path(weights)), int(level), list(stages or [])

    # -- building --------------------------------------------------------
    def _init(self, param, state):
        src = self._source
        upgrade_net(param, src)
        if param.HasField("state"):
            merged = pb.NetState()
            merged.CopyFrom(param.state)
            merged.MergeFrom(state)
            merged.phase = state.phase
            state = merged
        self.phase = state.phase
        if backend.mode() == backend.CPU:
            glog.info("Initializing net '%s' (%s): %s", param.name or src, pb.Phase.Name(state.phase),
                      backend.cpu_engine_note())
        filtered = filter_net(param, state, src)
        if not len(filtered.layer):
            raise ConfigError("%s: no layer is left in phase %s (level %d, stages %s): every layer's "
                              "include/exclude rules leave it out; check the rules or the phase"
                              % (src, pb.Phase.Name(state.phase), state.level, list(state.stage)))
        for layer in filtered.layer:
            if not layer.HasField("phase"):
                layer.phase = state.phase
        self._param = insert_splits(filtered, src)
        self.name = self._param.name

        self.layers, self._layer_names = [], []
        self._blobs, self._blob_names, self._blob_index = [], [], {}
        self._layer_bottoms, self._layer_tops = [], []
        self._bottom_need_backward, self._blob_need_backward = [], []
        self._input_index = []
        self._params, self._param_owner = [], []
        self._param_layer_indices = []
        self._param_names_index = {}
        self._learnable_params = []
        self._params_lr, self._params_weight_decay = [], []
        self._layer_need_backward = []
        self._callbacks = {k: [] for k in ("before_forward", "after_forward", "before_backward", "after_backward")}
        available = OrderedDict()

        for li, lp in enumerate(self._param.layer):
            layer = create_layer(lp, src)
            self.layers.append(layer)
            self._layer_names.append(lp.name)
            if len(lp.propagate_down) and len(lp.propagate_down) != len(lp.bottom):
                raise ConfigError("%s: layer '%s' gives propagate_down %d times; give it once per bottom (%d)"
                                  % (src, lp.name, len(lp.propagate_down), len(lp.bottom)))
            need_backward = False
            bottoms, bottom_nb = [], []
            for j, name in enumerate(lp.bottom):
                if name not in available:
                    raise ConfigError("%s: layer '%s' (%s) wants bottom blob '%s', which is not available "
                                      "at that point (already consumed, or produced later)"
                                      % (src, lp.name, lp.type, name))
                bid = self._blob_index[name]
                del available[name]
                need_backward = need_backward or self._blob_need_backward[bid]
                bottoms.append(bid)
                bottom_nb.append(bool(lp.propagate_down[j]) if len(lp.propagate_down)
                                 else self._blob_need_backward[bid])
            self._layer_bottoms.append(bottoms)
            self._bottom_need_backward.append(bottom_nb)
            tops = []
            for j, name in enumerate(lp.top):
                if name in self._blob_index and j < len(lp.bottom) and lp.bottom[j] == name:
                    bid = self._blob_index[name]           # in place
                elif name in self._blob_index:
                    raise ConfigError("%s: layer '%s' writes top '%s', which an earlier layer already "
                                      "produced; only in-place use (the same name as the bottom at that "
                                      "position) is allowed" % (src, lp.name, name))
                else:
                    bid = len(self._blobs)
                    self._blobs.append(Blob())
                    self._blobs[-1].name = name
                    self._blob_names.append(name)
                    self._blob_index[name] = bid
                    self._blob_need_backward.append(False)
                    if lp.type == "Input":
                        self._input_index.append(bid)
                tops.append(bid)
                available[name] = bid
            self._layer_tops.append(tops)

            bottom_blobs = [self._blobs[b] for b in bottoms]
            top_blobs = [self._blobs[t] for t in tops]
            try:
                layer.setup(bottom_blobs, top_blobs)
            except CaffeError as e:
                if "layer '%s'" % lp.name in str(e):
                    raise
                raise type(e)("%s: layer '%s' (%s): %s" % (src, lp.name, lp.type, e)) from None
            except MemoryError:
                raise ShapeError("%s: layer '%s' (%s): not enough memory to set it up (tops %s); check its "
                                 "parameters and the shapes of its bottoms %s"
                                 % (src, lp.name, lp.type, list(lp.top), [b.shape for b in bottom_blobs])) from None

            # Parameters: owned here, or shared by ParamSpec name.
            nparams = len(layer.blobs)
            if len(lp.param) > nparams:
                raise ConfigError("%s: layer '%s' gives %d param specs but has only %d parameter blobs"
                                  % (src, lp.name, len(lp.param), nparams))
            layer.param_propagate_down = []
            for p in range(nparams):
                spec = lp.param[p] if p < len(lp.param) else pb.ParamSpec()
                lr = spec.lr_mult
                layer.param_propagate_down.append(lr != 0)
                need_backward = need_backward or lr != 0
                self._append_param(li, p, spec)
            self._layer_need_backward.append(need_backward)
            for t in tops:
                self._blob_need_backward[t] = self._blob_need_backward[t] or need_backward

        self._analyse_backward(param.force_backward)
        for layer, need in zip(self.layers, self._layer_need_backward):
            layer.need_backward = need
        self._output_index = sorted(available.values(), key=lambda b: self._blob_names[b])
        self._build_dicts()
        self._chains, self._fused = None, []
        self._forget_plan()

    def _forget_plan(self):
        self._plan, self._plan_misses, self._signature = None, 0, None
        if not hasattr(self, "_activations"):
            self._activations = activations.Activations(self)
        self._activations.forget()

    def _append_param(self, li, p, spec):
        layer = self.layers[li]
        pid = len(self._params)
        self._params.append(layer.blobs[p])
        self._param_layer_indices.append((li, p))
        name = spec.name if spec.HasField("name") else ""
        if not name or name not in self._param_names_index:
            if name:
                self._param_names_index[name] = pid
            self._param_owner.append(-1)
            self._learnable_params.append(layer.blobs[p])
            self._params_lr.append(spec.lr_mult)
            self._params_weight_decay.append(spec.decay_mult)
            return
        owner = self._param_names_index[name]
        self._param_owner.append(owner)
        owner_li, owner_p = self._param_layer_indices[owner]
        owner_blob = self.layers[owner_li].blobs[owner_p]
        mine = layer.blobs[p]
        mode = spec.share_mode
        if mode == pb.ParamSpec.PERMISSIVE:
            if owner_blob.count != mine.count:
                raise ShapeError("%s: layer '%s' shares param '%s' with layer '%s' but their counts differ "
                                 "(%d vs %d)" % (self._source, layer.name, name, self._layer_names[owner_li],
                                                 mine.count, owner_blob.count))
        elif owner_blob.shape != mine.shape:
            raise ShapeError("%s: layer '%s' shares param '%s' with layer '%s' but the shapes differ (%s vs %s); "
                             "use share_mode: PERMISSIVE to share by count"
                             % (self._source, layer.name, name, self._layer_names[owner_li],
                                mine.shape, owner_blob.shape))
        # One Blob object: both layers read and accumulate into the same memory.
        layer.blobs[p] = owner_blob
        self._params[pid] = owner_blob
        learnable = self._learnable_params.index(owner_blob)
        if spec.HasField("lr_mult"):
            self._params_lr[learnable] = spec.lr_mult
        if spec.HasField("decay_mult"):
            self._params_weight_decay[learnable] = spec.decay_mult

    def _analyse_backward(self, force_backward):
        """Skip backward for layers that do not lead to a loss (Caffe's pruning)."""
        under_loss, skip = set(), set()
        for li in reversed(range(len(self.layers))):
            layer = self.layers[li]
            contributes, skip_down = False, True
            for j, t in enumerate(self._layer_tops[li]):
                if layer.loss_weights[j] or t in under_loss:
                    contributes = True
                if t not in skip:
                    skip_down = False
                if contributes and not skip_down:
                    break
            if self._layer_need_backward[li] and skip_down:
                self._layer_need_backward[li] = False
                self._bottom_need_backward[li] = [False] * len(self._layer_bottoms[li])
            if not contributes:
                self._layer_need_backward[li] = False
            for j, b in enumerate(self._layer_bottoms[li]):
                if contributes:
                    under_loss.add(b)
                else:
                    self._bottom_need_backward[li][j] = False
                if not self._bottom_need_backward[li][j]:
                    skip.add(b)
        if force_backward:
            for li, layer in enumerate(self.layers):
                self._layer_need_backward[li] = True
                for j, b in enumerate(self._layer_bottoms[li]):
                    nb = self._bottom_need_backward[li][j] or layer.allow_force_backward(j)
                    self._bottom_need_backward[li][j] = nb
                    self._blob_need_backward[b] = self._blob_need_backward[b] or nb
                layer.param_propagate_down = [True] * len(layer.blobs)

    def _build_dicts(self):
        self._blobs_dict = OrderedDict(zip(self._blob_names, self._blobs))
        self._layer_dict = OrderedDict(zip(self._layer_names, self.layers))
        self._blob_loss_weights = [0.0] * len(self._blobs)
        for li, layer in enumerate(self.layers):
            for j, t in enumerate(self._layer_tops[li]):
                if layer.loss_weights[j]:
                    self._blob_loss_weights[t] = layer.loss_weights[j]

    # -- pycaffe's read-only views ----------------------------------------
    @property
    def blobs(self):
        return self._blobs_dict

    @property
    def params(self):
        return OrderedDict((n, l.blobs) for n, l in zip(self._layer_names, self.layers) if l.blobs)

    @property
    def layer_dict(self):
        return self._layer_dict

    @property
    def blob_loss_weights(self):
        return OrderedDict(zip(self._blob_names, self._blob_loss_weights))

    @property
    def inputs(self):
        return [self._blob_names[i] for i in self._input_index]

    @property
    def outputs(self):
        return [self._blob_names[i] for i in self._output_index]

    @property
    def top_names(self):
        return OrderedDict((n, [self._blob_names[t] for t in ids])
                           for n, ids in zip(self._layer_names, self._layer_tops))

    @property
    def bottom_names(self):
        return OrderedDict((n, [self._blob_names[b] for b in ids])
                           for n, ids in zip(self._layer_names, self._layer_bottoms))

    @property
    def learnable_params(self):
        return list(self._learnable_params)

    @property
    def params_lr(self):
        return list(self._params_lr)

    @property
    def params_weight_decay(self):
        return list(self._params_weight_decay)

    def _bottom(self, li):
        return [self._blobs[b] for b in self._layer_bottoms[li]]

    def _top(self, li):
        return [self._blobs[t] for t in self._layer_tops[li]]

    # -- running ---------------------------------------------------------
    def _layer_index(self, name, what):
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise ConfigError("%s: no layer named '%s' in the net" % (what, name)) from None

    def _out_of_memory(self, li, what):
        layer = self.layers[li]
        return ShapeError("layer '%s' (%s): not enough memory for its %s (bottoms %s, tops %s)"
                          % (layer.name, layer.param.type, what, [b.shape for b in self._bottom(li)],
                             [t.shape for t in self._top(li)]))

    def _named(self, layer, error):
        """`error` with the layer's name in front, unless it names it already."""
        if "layer '%s'" % layer.name in str(error):
            return error
        return type(error)("layer '%s' (%s): %s" % (layer.name, layer.param.type, error))

    def forward_from_to(self, start, end):
        acts = self._activations
        inference = fusion.applies(self) == "inference"
        acts.begin(start, end, inference)
        recorder, releases = None, None
        if start == 0 and end == len(self.layers) - 1 and inference:
            plan = self._plan
            if plan is not None:
                if plan.valid():             # the same shapes and buffers as recorded
                    releases = acts.releases(plan.signature)
                    self._forward_end = end
                    acts.released = list(plan.released)
                    try:
                        return acts.offering(releases, plan.replay)
                    except BaseException:
                        self._plan = None
                        raise
                self._plan = None
                if not plan.replayed:
                    self._plan_misses += 1
            signature = tuple((b._shape, id(b._data_buf)) for b in self._blobs)
            releases = acts.releases(signature)
            # record the second forward at one shape: the first lays out the
            # weights and the activations
            if signature == self._signature and self._plan_misses < prepared.MAX_MISSES:
                recorder = prepared.Recorder(self)
            self._signature = signature
        try:
            loss = acts.offering(releases, functools.partial(self._forward_layers, start, end, recorder, releases))
        except BaseException:
            if recorder is not None:
                recorder.abandon()
            raise
        if recorder is not None:
            self._plan = recorder.finish(self._fused)
            if self._plan is None:
                self._plan_misses += 1
        return loss

    def _forward_layers(self, start, end, recorder, releases=None):
        loss = 0.0
        free = 0
        before, after = self._callbacks["before_forward"], self._callbacks["after_forward"]
        chains = self._fusion_chains()
        self._fused, self._forward_end = [], end
        li = start
        while li <= end:
            chain = chains.get(li)
            if chain is not None and chain.last <= end:
                if recorder is not None:
                    lazy = [self.blobs[name] for name, _ in getattr(chain, "skipped", ())]
                    recorder.begin(range(chain.head, chain.last + 1), lazy)
                try:
                    fused = chain.forward()
                except CaffeError as e:
                    raise self._named(self.layers[li], e) from None
                if fused:
                    free, released = self._activations.release(releases or (), free, chain.last)
                    if recorder is not None:
                        recorder.end(chain.replayable(), released=released)
                    self._fused.append(chain)
                    li = chain.last + 1
                    continue
                if recorder is not None:
                    recorder.cancel()
            if recorder is not None:
                recorder.begin((li,))
            for fn in before:
                fn(li)
            loss += self._run_layer(li)
            for fn in after:
                fn(li)
            free, released = self._activations.release(releases or (), free, li)
            if recorder is not None:
                layer = self.layers[li]
                recorder.end(layer.replayable(self._bottom(li), self._top(li)) and not any(layer.loss_weights),
                             functools.partial(self._run_layer, li), released)
            li += 1
        return loss

    def _run_layer(self, li):
        layer = self.layers[li]
        try:
            return layer.run_forward(self._bottom(li), self._top(li))
        except CaffeError as e:
            raise self._named(layer, e) from None
        except MemoryError:
            raise self._out_of_memory(li, "forward") from None

    def _fusion_chains(self):
        """The chains the oneDNN engine may run fused in this forward (see
        fusion.py); {} when it may not."""
        kind = fusion.applies(self)
        if kind is None:
            return {}
        if self._chains is None:
            self._chains = {}
        if kind not in self._chains:
            self._chains[kind] = fusion.plan(self, kind == "inference")
        return self._chains[kind]

    def _unfuse(self, start, end):
        """Before a backward over [end, start]: the chains of the last forward
        whose backward cannot run fused here leave what their layers' own
        forwards would have: inference chains by running those layers again
        one by one, training chains cut by the range from what they kept.
        Returns {index of a chain's last layer: chain} for those that run
        their backward fused."""
        inference = [c for c in self._fused if not isinstance(c, fusion.NormChain)]
        norms = [c for c in self._fused if isinstance(c, fusion.NormChain) and c.state is not None]
        whole = {}
        for chain in norms:
            if inference or not (end <= chain.head and chain.last <= start):
                chain.unfuse()
            else:
                whole[chain.last] = chain
        if inference:
            saved, self._chains = self._chains, {"inference": {}, "training": {}}
            try:
                self.forward_from_to(min(c.head for c in inference), self._forward_end)
            finally:
                self._chains = saved
        return whole

    def backward_from_to(self, start, end):
        fused = self._unfuse(start, end) if self._fused else {}
        before, after = self._callbacks["before_backward"], self._callbacks["after_backward"]
        li = start
        while li >= end:
            chain = fused.get(li)
            if chain is not None:
                indices = range(chain.last, chain.head - 1, -1)
                for i in indices:
                    for fn in before:
                        fn(i)
                try:
                    done = chain.backward()
                except CaffeError as e:
                    raise self._named(self.layers[li], e) from None
                if done:
                    for i in indices:
                        for fn in after:
                            fn(i)
                    li = chain.head - 1
                    continue
            for fn in before:
                fn(li)
            if self._layer_need_backward[li] and not self.layers[li].idle(self._bottom(li), self._top(li)):
                layer = self.layers[li]
                try:
                    layer.backward(self._top(li), self._bottom_need_backward[li], self._bottom(li))
                except CaffeError as e:
                    raise self._named(layer, e) from None
                except MemoryError:
                    raise self._out_of_memory(li, "backward") from None
            for fn in after:
                fn(li)
            li -= 1

    # pycaffe's index-based entry points and callbacks (python/train.py times
    # layers with them; data-parallel training reduces gradients in them).
    _forward = forward_from_to
    _backward = backward_from_to

    def before_forward(self, callback):
        """callback(layer index) before each layer's forward."""
        self._callbacks["before_forward"].append(callback)

    def after_forward(self, callback):
        self._callbacks["after_forward"].append(callback)

    def before_backward(self, callback):
        self._callbacks["before_backward"].append(callback)

    def after_backward(self, callback):
        self._callbacks["after_backward"].append(callback)

    @property
    def _inputs(self):
        return list(self._input_index)

    @property
    def _outputs(self):
        return list(self._output_index)

    def _top_ids(self, i):
        return list(self._layer_tops[i])

    def _bottom_ids(self, i):
        return list(self._layer_bottoms[i])

    def _set_arrays(self, arrays, expected, field, what):
        """Write pycaffe-style keyword arrays into the named blobs' data or diff."""
        if not arrays:
            return
        if set(arrays) != set(expected):
            kind = "inputs" if field == "data" else "outputs"
            raise ConfigError("%s arguments %s do not match the net %s %s" % (what, sorted(arrays), kind, expected))
        for name, value in arrays.items():
            value = np.asarray(value)
            blob = self.blobs[name]
            if value.shape[:1] != blob.shape[:1]:
                raise ShapeError("%s '%s' has batch size %s, the blob has %s; reshape the blob first"
                                 % (what, name, value.shape[:1], blob.shape[:1]))
            getattr(blob, field)[...] = value

    def forward(self, blobs=None, start=None, end=None, **kwargs):
        """Run forward; return {output blob name: its data} (pycaffe's Net.forward)."""
        blobs = list(blobs or [])
        if blobs:
            self._activations.keep = True        # blobs are read: keep them
        start_i = 0 if start is None else self._layer_index(start, "forward(start=...)")
        if end is None:
            end_i = len(self.layers) - 1
            outputs = set(self.outputs + blobs)
        else:
            end_i = self._layer_index(end, "forward(end=...)")
            outputs = set(self.top_names[end] + blobs)
        self._set_arrays(kwargs, self.inputs, "data", "forward(): input")
        self._last_loss = self.forward_from_to(start_i, end_i)
        return {name: self.blobs[name].data for name in outputs}

    def backward(self, diffs=None, start=None, end=None, **kwargs):
        """Run backward; return {input blob name: its diff} (pycaffe's Net.backward)."""
        diffs = list(diffs or [])
        start_i = len(self.layers) - 1 if start is None else self._layer_index(start, "backward(start=...)")
        if end is None:
            end_i = 0
            outputs = set(self.inputs + diffs)
        else:
            end_i = self._layer_index(end, "backward(end=...)")
            outputs = set(self.bottom_names[end] + diffs)
        self._set_arrays(kwargs, self.outputs, "diff", "backward(): top diff")
        self.backward_from_to(start_i, end_i)
        return {name: self.blobs[name].diff for name in outputs}

    def _batch(self, blobs):
        """Batches of the first blob's batch size from {name: array}; the last
        one padded with zeros (pycaffe's Net._batch)."""
        if not blobs:
            return
        num = len(next(iter(blobs.values())))
        batch = self._blobs[0].shape[0]
        for start in range(0, num - num % batch, batch):
            yield {name: np.asarray(v[start:start + batch]) for name, v in blobs.items()}
        rest = num % batch
        if rest:
            yield {name: np.concatenate([np.asarray(v[num - rest:]),
                                         np.zeros((batch - rest,) + np.asarray(v).shape[1:])])
                   for name, v in blobs.items()}

    def forward_all(self, blobs=None, **kwargs):
        """Forward any number of inputs a batch at a time (the last batch
        padded); returns {output: all of its rows}."""
        outputs = set(self.outputs + list(blobs or []))
        if not kwargs:
            out = self.forward(blobs=blobs)
            return {name: out[name].copy() for name in outputs}
        collected = {name: [] for name in outputs}
        for batch in self._batch(kwargs):
            out = self.forward(blobs=blobs, **batch)
            for name in outputs:
                collected[name].extend(out[name].copy())
        n = len(next(iter(kwargs.values())))
        return {name: np.asarray(rows[:n]) for name, rows in collected.items()}

    def forward_backward_all(self, blobs=None, diffs=None, **kwargs):
        """forward_all and backward together: inputs and output diffs by name,
        a batch at a time; returns ({output: rows}, {input diff: rows})."""
        outs = {name: [] for name in set(self.outputs + list(blobs or []))}
        grads = {name: [] for name in set(self.inputs + list(diffs or []))}
        forward = list(self._batch({k: v for k, v in kwargs.items() if k in self.inputs}))
        backward = list(self._batch({k: v for k, v in kwargs.items() if k in self.outputs}))
        for i in range(max(len(forward), len(backward), 1)):
            out = self.forward(blobs=blobs, **(forward[i] if i < len(forward) else {}))
            grad = self.backward(diffs=diffs, **(backward[i] if i < len(backward) else {}))
            for name, rows in out.items():
                outs[name].extend(rows.copy())
            for name, rows in grad.items():
                grads[name].extend(rows.copy())
        n = len(next(iter(kwargs.values()))) if kwargs else None
        return ({k: np.asarray(v[:n]) for k, v in outs.items()}, {k: np.asarray(v[:n]) for k, v in grads.items()})

    def forward_backward(self):
        loss = self.forward_from_to(0, len(self.layers) - 1)
        self.backward_from_to(len(self.layers) - 1, 0)
        return loss

    def reshape(self):
        self._forget_plan()
        for li, layer in enumerate(self.layers):
            layer.reshape(self._bottom(li), self._top(li))

    def update(self):
        """data -= diff for every parameter this net owns (shared ones once)."""
        for blob in self._learnable_params:
            blob.dev_data[...] -= blob.dev_diff

    def clear_param_diffs(self):
        """Zero every parameter diff now (the arrays a user holds included)."""
        for blob in self._learnable_params:
            blob.dev_diff[...] = 0

    def _mark_param_diffs_clear(self):
        """The solver's clear: the memory is zeroed when a layer first touches
        it, and a layer that overwrites the whole diff never pays for it."""
        for blob in self._learnable_params:
            blob.zero_diff()

    # -- weights ---------------------------------------------------------
    def copy_from(self, weights):
        """Load weights by layer name from a .caffemodel (path or NetParameter).
        Layers the net lacks are ignored; a shape that does not fit is an error.
        A file is read layer by layer, its values straight into the blobs
        (caffemodel.py), when its layout allows."""
        places = None
        if isinstance(weights, pb.NetParameter):
            source, where = weights, "NetParameter"
        else:
            where = _path(weights)
            skeleton = caffemodel.read_skeleton(where)
            if skeleton is not None and len(skeleton[0].layer):
                source, places = skeleton
            else:
                source = protoio.read_net_binary(where)
        n = len(source.layer)
        upgrade_net(source, where)
        # a V2 net's upgrade only puts an Input layer (no blobs) in front
        skipped = len(source.layer) - n
        with (open(where, "rb") if places is not None else contextlib.nullcontext()) as f:
            for li, sl in enumerate(source.layer):
                if sl.name not in self._layer_dict:
                    continue
                target = self._layer_dict[sl.name]
                if not len(sl.blobs) and not target.blobs:
                    continue
                if len(sl.blobs) != len(target.blobs):
                    raise ShapeError("%s: layer '%s' holds %d parameter blobs but the net's layer '%s' has %d"
                                     % (where, sl.name, len(sl.blobs), sl.name, len(target.blobs)))
                for i, (proto, blob) in enumerate(zip(sl.blobs, target.blobs)):
                    if not blob.shape_matches_proto(proto):
                        from .blob import proto_shape
                        raise ShapeError(
                            "%s: cannot copy param %d of layer '%s': shape mismatch. The weights file has "
                            "%s, the net wants %s. Does the prototxt match the weights?"
                            % (where, i, sl.name, "x".join(map(str, proto_shape(proto))) or "a scalar",
                               "x".join(map(str, blob.shape))))
                    if places is None:
                        blob.from_proto(proto, reshape=False)
                        continue
                    chunks = places[li - skipped][i]
                    if caffemodel.count(chunks) != blob.count:
                        raise ShapeError("%s: param %d of layer '%s' holds %d values but the blob has %d (shape %s)"
                                         % (where, i, sl.name, caffemodel.count(chunks), blob.count, blob.shape))
                    try:
                        caffemodel.fill(f, blob, chunks)
                    except OSError as e:
                        raise FormatError("%s: layer '%s': %s" % (where, sl.name, e)) from None

    copy_trained_layers_from = copy_from

    def save_hdf5(self, path, write_diff=False):
        """The weights as Caffe's HDF5 layout: data/<layer>/<i> (and diff/...)."""
        from .hdf5_weights import save_net
        save_net(self, str(path), write_diff)

    def load_hdf5(self, path):
        """Weights by layer name from save_hdf5's (or Caffe's) HDF5 layout."""
        from .hdf5_weights import load_net
        load_net(self, str(path))

    def _set_input_arrays(self, data, labels):
        self.set_input_arrays(data, labels)

    def set_input_arrays(self, data, labels):
        """Hand arrays to the MemoryData layer that starts the net (pycaffe)."""
        from .layers.data import MemoryDataLayer
        if not self.layers or not isinstance(self.layers[0], MemoryDataLayer):
            raise ConfigError("set_input_arrays needs a net whose first layer is a MemoryData layer")
        self.layers[0].reset(data, labels)

    def share_with(self, other):
        """Use `other`'s parameter blobs (by layer name), as Caffe's ShareTrainedLayersWith."""
        for name, layer in zip(other._layer_names, other.layers):
            if name not in self._layer_dict or not layer.blobs:
                continue
            mine = self._layer_dict[name]
            if len(mine.blobs) != len(layer.blobs):
                raise ShapeError("share_with: layer '%s' has %d parameter blobs here and %d in the other net"
                                 % (name, len(mine.blobs), len(layer.blobs)))
            for i, blob in enumerate(layer.blobs):
                if mine.blobs[i].shape != blob.shape:
                    raise ShapeError("share_with: param %d of layer '%s' is %s here and %s in the other net"
                                     % (i, name, mine.blobs[i].shape, blob.shape))
                mine.blobs[i] = blob
        self._relink_params()

    def _relink_params(self):
        for pid, (li, p) in enumerate(self._param_layer_indices):
            self._params[pid] = self.layers[li].blobs[p]
        self._learnable_params = [self._params[pid] for pid, owner in enumerate(self._param_owner) if owner < 0]

    def to_proto(self, write_diff=False):
        out = pb.NetParameter()
        out.CopyFrom(self._param)
        del out.layer[:]
        for lp, layer in zip(self._param.layer, self.layers):
            entry = out.layer.add()
            entry.CopyFrom(layer.param)
            del entry.blobs[:]
            for blob in layer.blobs:
                blob.to_proto(entry.blobs.add(), write_diff)
        return out

    def save(self, path):
        """Write the weights as a binary .caffemodel (atomically)."""
        protoio.write_binary(_path(path), self.to_proto())

"""The prepared forward of an inference net on the oneDNN engine.

Once a TEST-phase net has run a whole forward twice at the same shapes, the
second run is recorded: for each layer (or fused chain) the primitives it ran,
bound for good to the arrays they ran on (dnnl.Bound), and what it left in its
blobs' buffers (layouts, versions, the blobs a chain made lazy). The next
forwards replay that: one library call per primitive, Python per net rather
than per layer. Layers that do more than run primitives (numpy layers, loss
layers, InnerProduct's GEMM, Python layers) are recorded as themselves and run
as they always do, in their place.

A replay happens only where it is the forward that would have run: the same
blobs, shapes, buffers and engine settings, every parameter untouched since
(its buffer's stamp), every activation where the recorded forward found it.
An input written from Python is read afresh (its host array is what the
primitives read); anything else -- a reshape, a parameter written, a blob
read in another layout, a callback, a thread count -- makes the forward run
layer by layer and be recorded again.
Every blob ends up holding, and saying it holds, what the layer-by-layer
forward leaves in it."""
import functools
import operator
import weakref

import numpy as np

from . import backend, fusion
from .blob import BLOCKED
from .kernels import dnnl

# a net whose recordings keep failing to be replayed stops recording
MAX_MISSES = 3


def _ref(obj):
    return None if obj is None else weakref.ref(obj)


def _state(buf):
    """What a buffer holds: its layout and arrays by weak reference (a
    reference of ours to its host array would count as a view held)."""
    return (buf.head, _ref(buf.blocked_desc), _ref(buf.blocked), _ref(buf.host), buf.version, buf.zero_pending)


def _holds(buf, state):
    """Whether `buf` is in `state` (a _state of it) but for the version."""
    head, desc, blocked, host, _, zero = state
    return (buf.head == head and buf.zero_pending == zero and _is(buf.blocked_desc, desc)
            and _is(buf.blocked, blocked) and _is(buf.host, host))


def _is(obj, ref):
    return obj is None if ref is None else (obj is not None and obj is ref())


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


_BUFFER, _SHAPE, _STAMP = operator.attrgetter("_data_buf"), operator.attrgetter("_shape"), \
    operator.attrgetter("stamp")


def _config(net):
    return (backend.mode(), backend.cpu_engine(), backend.float_type(), backend.threads_generation(),
            backend.numpy_layers())


def _then_release(net, call, blobs):
    """A layer run as itself, then the memory the recorded forward let go of
    after it."""
    loss = call()
    for b in blobs:
        b._data_buf.release()
    net._activations.mark(blobs)
    return loss


class Recorder:
    """Watches one layer-by-layer forward of `net` unit by unit."""

    def __init__(self, net):
        self.net = net
        self.units = []
        self.start = {}                       # id(buf) -> (buf, state before the forward)
        self.config = _config(net)
        self.signature = net._signature
        self.shapes = [(b, b._data_buf, b._shape) for b in net._blobs]
        self.params = {id(b._data_buf): b._data_buf for layer in net.layers for b in layer.blobs}
        for buf in [b._data_buf for b in net._blobs] + list(self.params.values()):
            if id(buf) not in self.start:
                self.start[id(buf)] = (buf, _state(buf))
        self.replayed_params = set()
        # where the activations' arrays were when the forward began: a
        # replay begins from there too
        self.managed_start = [(b._data_buf, b._data_buf.head, b._data_buf.blocked_desc, b._data_buf.blocked)
                              for b in net._blobs]
        self.free_start = list(net._activations.free)
        self.ok = True

    def begin(self, indices, extra_blobs=()):
        net = self.net
        blobs = list(extra_blobs)
        for i in indices:
            blobs += net._bottom(i) + net._top(i) + list(net.layers[i].blobs)
        self._blobs = list({id(b): b for b in blobs}.values())
        self._bufs = list({id(b._data_buf): b._data_buf for b in self._blobs}.values())
        self._before = [_state(buf) for buf in self._bufs]
        self._stale = [b._stale for b in self._blobs]
        self._params = [id(b._data_buf) for i in indices for b in net.layers[i].blobs]
        self._runs = []
        dnnl.record_into(self._runs)

    def end(self, replayable, call=None, released=()):
        """`replayable`: the unit did nothing but run primitives; otherwise
        call() is how to run it again. `released`: blobs whose memory the net
        let go of after the unit (to be made again when read)."""
        dnnl.record_into(None)
        if replayable and all(r is not None for r in self._runs):
            effects = []
            for buf, before in zip(self._bufs, self._before):
                if not _holds(buf, before) or buf.version != before[4]:
                    if not _is(buf.host, before[3]):
                        self.ok = False          # a host array made or dropped: not yet steady
                    effects.append((buf, buf.head, buf.blocked_desc, buf.blocked, buf.version - before[4],
                                    buf.zero_pending))
            stale = {id(b): (b, b._stale) for b, s in zip(self._blobs, self._stale) if b._stale is not s}
            stale.update((id(b), (b, b._stale)) for b in released)
            self.units.append((tuple(self._runs), tuple(effects), tuple(stale.values())))
            self.replayed_params.update(self._params)
        elif released:
            self.units.append(functools.partial(_then_release, self.net, call, tuple(released)))
        else:
            self.units.append(call)

    def cancel(self):
        """Forget the unit begun (a chain that did not run fused)."""
        dnnl.record_into(None)

    def abandon(self):
        dnnl.record_into(None)
        self.ok = False

    def finish(self, fused):
        dnnl.record_into(None)
        if not self.ok:
            return None
        # the blobs' own arrays stay alive with them (a replay first checks
        # they are the same): the runs keep only the others they ran on
        owned = set()
        for buf, _ in self.start.values():
            owned.update(id(_root(a)) for a in (buf.host, buf.blocked) if a is not None)
        for unit in self.units:
            if not callable(unit):
                for run in unit[0]:
                    run.arrays = tuple(a for a in run.arrays if a is not None and id(_root(a)) not in owned)
        for key, buf in self.params.items():
            start = self.start[key][1]
            if buf.held():
                return None
            if (not _holds(buf, start) or buf.version != start[4]) and key in self.replayed_params:
                return None                   # primitives read it as it was
        return Plan(self, fused)


def _merged(units):
    """Runs of replayed units as one: their primitives in order, then what
    they left in each buffer and blob (nothing between them reads that)."""
    out = []
    for unit in units:
        if callable(unit) or not out or callable(out[-1]):
            out.append(unit)
            continue
        runs, effects, stale = out[-1]
        out[-1] = (runs + unit[0], effects + unit[1], stale + unit[2])
    merged = []
    for unit in out:
        if callable(unit):
            merged.append(unit)
            continue
        runs, effects, stale = unit
        last, versions = {}, {}
        for buf, head, desc, blocked, dv, zero in effects:
            last[id(buf)] = (buf, head, desc, blocked, zero)
            versions[id(buf)] = versions.get(id(buf), 0) + dv
        effects = tuple((buf, head, desc, blocked, versions[key], zero)
                        for key, (buf, head, desc, blocked, zero) in last.items())
        stale = tuple({id(b): (b, s) for b, s in stale}.values())
        merged.append((runs, effects, stale))
    return merged


class Plan:
    def __init__(self, rec, fused):
        self.net = rec.net
        self.units = _merged(rec.units)
        self.signature = rec.signature
        self.config = rec.config
        self.shapes = rec.shapes
        self.fused = list(fused)
        # the activations the net lets go of and hands on (activations.py) are
        # written before they are read: whatever arrays they hold now, the
        # replay leaves them, and the net's free arrays, as recorded
        managed = set(self.net._activations.releasable)
        self.managed_start = [entry for entry in rec.managed_start if id(entry[0]) in managed]
        self.free_start = rec.free_start
        others = [(buf, state) for key, (buf, state) in rec.start.items()
                  if key not in rec.params and key not in managed]
        # Nothing may have touched the parameters, nor the buffers the forward
        # finds in a blocked layout (their values may be read): their stamps
        # (blob.py) are as this plan left them. Inputs, and outputs read
        # through their host arrays, may have been written and read: the same
        # arrays in the same layout suffice there (primitives read them afresh).
        self.strict = list(rec.params.values()) + [buf for buf, state in others if state[0] == BLOCKED]
        self.loose = [(buf, state) for buf, state in others if state[0] != BLOCKED]
        self.blobs = [blob for blob, _, _ in self.shapes]
        self.buffers = [buf for _, buf, _ in self.shapes]
        self.blob_shapes = [shape for _, _, shape in self.shapes]
        self._stamps()
        self.free_end = list(self.net._activations.free)
        self.released = [b for unit in self.units if not callable(unit) for b, s in unit[2]
                         if s is not None and s == self.net._activations.remake]
        self.replayed = False

    def valid(self):
        if _config(self.net) != self.config or fusion.applies(self.net) != "inference":
            return False
        if list(map(_BUFFER, self.blobs)) != self.buffers or list(map(_SHAPE, self.blobs)) != self.blob_shapes:
            return False
        if list(map(_STAMP, self.strict)) != self.stamps:
            return False
        return all(_holds(buf, state) for buf, state in self.loose)

    def _stamps(self):
        self.stamps = list(map(_STAMP, self.strict))

    def replay(self):
        net, loss = self.net, 0.0
        for buf, head, desc, blocked in self.managed_start:
            buf.head, buf.blocked_desc, buf.blocked = head, desc, blocked
        net._activations.free[:] = self.free_start
        for unit in self.units:
            if callable(unit):
                loss += unit()
                continue
            runs, effects, stale = unit
            dnnl.replay(runs)
            for buf, head, desc, blocked, dv, zero in effects:
                buf.head, buf.blocked_desc, buf.blocked, buf.zero_pending = head, desc, blocked, zero
                buf.version += dv
            for blob, s in stale:
                blob._stale = s
        net._fused = list(self.fused)
        net._activations.free[:] = self.free_end
        self._stamps()
        self.replayed = True
        return loss

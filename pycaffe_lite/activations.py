"""What an inference forward lets go of, and how it is made again.

In a whole-net inference forward on the oneDNN engine, an activation's
blocked array goes to the layers after it once its last reader has run
(blob._take hands it on), as ONNX Runtime and OpenCV reuse their buffers:
a net holds about its widest few activations instead of all of them. The
blobs are not lost to Caffe's semantics: each is marked (Blob._stale) and
the first read of one runs the forward again from the inputs that forward
saw, keeping everything, and the net keeps its activations from then on
(its blobs are read). Nets that would not give the same values again --
data and Python layers, BatchNorm updating its statistics, files written --
keep theirs, as do a net's inputs, outputs and parameters.

A fused ResNet block adds its convolution into the memory of the shortcut
it sums when that shortcut is let go of right after (take_over)."""
import contextlib

import numpy as np

from . import blob as blob_module


def remakeable(lp, layer):
    """Whether running this layer again gives what it gave."""
    if lp.type in ("Python", "HDF5Output") or (not len(lp.bottom) and lp.type != "Input"):
        return False
    if lp.type == "BatchNorm" and not layer.use_global:
        return False
    return not (lp.type == "DetectionOutput" and lp.detection_output_param.save_output_param.output_directory)


class Activations:
    """One net's: its free arrays, the blobs it let go of, its inputs as the
    last inference forward saw them."""

    def __init__(self, net):
        self.net = net
        self.keep = False            # the blobs are read: let go of nothing
        self.released = []           # blobs marked to be made again
        self.seen = []               # (input blob, its values at the last inference forward)
        self.forget()

    def forget(self):
        """After a reshape: what was planned for the old shapes goes (the
        blobs let go of stay marked; the next forward clears them)."""
        self.free = []               # arrays no blob holds, for the next claims
        self.releasable = {}         # id(buffer) -> its blobs, what this forward lets go of
        self._list = None            # (signature, releases, releasable)

    # -- one forward ---------------------------------------------------------
    def begin(self, start, end, inference):
        """Before a forward over layers [start, end]: the marks of what it
        writes cleared, the inputs seen."""
        net = self.net
        if self.released:
            whole = start == 0 and end == len(net.layers) - 1
            written = None if whole else {id(b) for li in range(start, end + 1) for b in net._top(li)}
            for b in self.released:
                if (whole or id(b) in written) and b._stale == self.remake:
                    b._stale = None
            self.released = [] if whole else [b for b in self.released if id(b) not in written]
        self.releasable = {}
        if inference:
            self._see_inputs()

    def releases(self, signature):
        """[(index of the last layer that reads or writes it, buffer, its
        blobs)] for what this whole-net forward lets go of ([] where it may
        not), `signature` the net's shapes and buffers."""
        net = self.net
        self.releasable = {}
        if self.keep:
            return []
        if self._list is None or self._list[0] != signature:
            releases = []
            if all(remakeable(lp, layer) for lp, layer in zip(net._param.layer, net.layers)):
                kept = {id(net._blobs[i]._data_buf) for i in net._input_index}
                kept.update(id(net.blobs[name]._data_buf) for name in net.outputs)
                kept.update(id(b._data_buf) for layer in net.layers for b in layer.blobs)
                last, blobs_of = {}, {}
                for li in range(len(net.layers)):
                    for b in net._bottom(li) + net._top(li):
                        key = id(b._data_buf)
                        last[key] = li
                        entry = blobs_of.setdefault(key, (b._data_buf, []))
                        if all(b is not other for other in entry[1]):
                            entry[1].append(b)
                releases = sorted(((last[key], buf, tuple(blobs)) for key, (buf, blobs) in blobs_of.items()
                                   if key not in kept), key=lambda e: e[0])
            self._list = (signature, releases, {id(buf): blobs for _, buf, blobs in releases})
        self.releasable = self._list[2]
        return self._list[1]

    def offering(self, releases, run):
        """run() with this net's free arrays on offer to its layers' claims."""
        if not releases:
            return run()
        outer = blob_module.free_arrays()          # a remake inside another forward
        blob_module.set_free_arrays(self.free)
        try:
            return run()
        finally:
            blob_module.set_free_arrays(outer)

    def release(self, releases, k, done):
        """Let go of what no layer after `done` uses; releases[k] is the next
        to look at. Returns the next k and the blobs let go of."""
        released = []
        while k < len(releases) and releases[k][0] <= done:
            _, buf, blobs = releases[k]
            if buf.release():
                self.mark(blobs)
                released.extend(blobs)
            k += 1
        return k, released

    def mark(self, blobs):
        for b in blobs:
            b._stale = self.remake
        self.released.extend(blobs)

    def take_over(self, other, out, desc):
        """The memory for a convolution to add its result to `other`'s values
        in, laid out as `desc`, as `out`'s blocked copy: `other`'s own array
        where this forward lets go of it right after, else a copy; None when
        `out`'s host array is held."""
        from .kernels import dnnl
        ob, tb = other._data_buf, out._data_buf
        if tb.held() or ob is tb:
            return None
        blobs = self.releasable.get(id(ob))
        if blobs is not None and ob.head == blob_module.BLOCKED and ob.blocked_desc == desc and not ob.held():
            if tb.blocked is not None:
                self.free.append(tb.blocked)
            tb.blocked, tb.blocked_desc, tb.head = ob.blocked, desc, blob_module.BLOCKED
            tb.version += 1
            tb.zero_pending = False
            ob.blocked = ob.blocked_desc = None
            ob.head = blob_module.HOST
            self.mark(blobs)
            return tb.blocked
        held = tb.claim_blocked(desc)
        if held is not None:
            dnnl.copy_into(other.engine_data(), desc, held)
        return held

    # -- made again ----------------------------------------------------------
    def remake(self):
        """Make the blobs the last inference forward let go of: run it again,
        from the inputs it ran on, keeping them (and keep them from now on:
        this net's blobs are read)."""
        net = self.net
        self.keep = True
        net._plan = None
        for b in net._blobs:
            if b._stale == self.remake:
                b._stale = None
        with self.as_seen():
            net.forward_from_to(0, net._forward_end)

    def _see_inputs(self):
        """Keep the inputs' values as this forward reads them (into the same
        arrays from one forward to the next: a fresh 10 MB array each time
        costs its page faults)."""
        net = self.net
        old = {id(b): seen for b, seen in self.seen}
        kept = []
        for b in (net._blobs[i] for i in net._input_index):
            now = b.engine_data().read()
            seen = old.get(id(b))
            if seen is None or seen.shape != now.shape or seen.dtype != now.dtype:
                seen = now.copy()
            else:
                np.copyto(seen, now)
            kept.append((b, seen))
        self.seen = kept

    @contextlib.contextmanager
    def as_seen(self):
        """The net's inputs as the last inference forward saw them, for the
        time of making a blob it left to be made on reading: what a user
        wrote into them since must not change what that forward left."""
        changed = [(b, seen) for b, seen in self.seen if not np.array_equal(b.engine_data().read(), seen)]
        now = [(b, b.engine_data().read().copy()) for b, _ in changed]
        for b, seen in changed:
            b.data[...] = seen
        try:
            yield
        finally:
            for b, values in now:
                b.data[...] = values

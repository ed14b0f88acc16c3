"""Layers that pick, repeat or reduce entries by index: ArgMax, Reduction,
Tile, BatchReindex, Filter, Embed and Parameter."""
import numpy as np

from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


def _axis(layer, blob, axis, field):
    n = blob.num_axes
    if not -n <= axis < max(n, 1):
        raise layer.error("%s %d is out of range for the bottom %s (%d axes): use an axis in [%d, %d]"
                          % (field, axis, blob.shape, n, -n, n - 1), ShapeError)
    return axis + n if axis < 0 else axis


@register("ArgMax")
class ArgMaxLayer(Layer):
    """Indices (or values) of the top_k largest entries, per item or along an axis."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.argmax_param
        self.top_k, self.out_max_val = int(p.top_k), p.out_max_val
        if self.top_k < 1:
            raise self.error("argmax_param top_k must be at least 1")
        self.has_axis = p.HasField("axis")
        if self.has_axis:
            self.axis_ = _axis(self, bottom[0], p.axis, "argmax_param axis")
            limit = bottom[0].shape[self.axis_]
        else:
            limit = bottom[0].count_range(1)
        if self.top_k > limit:
            raise self.error("top_k (%d) is larger than the %d values it ranks" % (self.top_k, limit), ShapeError)

    def reshape(self, bottom, top):
        b = bottom[0]
        if self.has_axis:
            shape = list(b.shape)
            shape[self.axis_] = self.top_k
        else:
            shape = [1] * max(3, b.num_axes)
            shape[0] = b.shape[0]
            shape[2] = self.top_k
            if self.out_max_val:
                shape[1] = 2
        top[0].reshape(shape)

    def forward(self, bottom, top):
        b = bottom[0]
        if self.has_axis:
            x = b.dev_data.reshape(b.count_range(0, self.axis_), b.shape[self.axis_], b.count_range(self.axis_ + 1))
        else:
            x = b.dev_data.reshape(b.shape[0], -1, 1)
        index, value = self.ops.argmax_topk(x, self.top_k)
        if self.has_axis:
            out = value if self.out_max_val else index
        elif self.out_max_val:
            out = self.xp.concatenate([index.reshape(-1, 1, self.top_k), value.reshape(-1, 1, self.top_k)], axis=1)
        else:
            out = index
        top[0].dev_data[...] = out.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("ArgMax has no gradient; set propagate_down: false or remove force_backward")


@register("Reduction")
class ReductionLayer(Layer):
    """SUM, ASUM, SUMSQ or MEAN over every axis from `axis` on, times coeff."""
    exact_bottoms = 1
    exact_tops = 1
    R = pb.ReductionParameter

    def reshape(self, bottom, top):
        p = self.param.reduction_param
        b = bottom[0]
        self.axis = _axis(self, b, p.axis, "reduction_param axis") if b.num_axes else 0
        self.outer, self.dim = b.count_range(0, self.axis), b.count_range(self.axis)
        top[0].reshape(b.shape[:self.axis])
        self.op = p.operation
        self.coeff = np.float32(p.coeff / self.dim if p.operation == self.R.MEAN else p.coeff)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].dev_data.reshape(self.outer, self.dim)
        if self.op == self.R.ASUM:
            r = xp.abs(x).sum(axis=1)
        elif self.op == self.R.SUMSQ:
            r = (x * x).sum(axis=1)
        else:
            r = x.sum(axis=1)
        top[0].dev_data[...] = (r * self.coeff).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = top[0].dev_diff.reshape(self.outer, 1) * self.coeff
        x = bottom[0].dev_data.reshape(self.outer, self.dim)
        if self.op == self.R.ASUM:
            dx = xp.sign(x) * dy
        elif self.op == self.R.SUMSQ:
            dx = (np.float32(2) * x) * dy
        else:
            dx = xp.broadcast_to(dy, x.shape)
        bottom[0].dev_diff[...] = dx.reshape(bottom[0].shape)


@register("Tile")
class TileLayer(Layer):
    """The block from `axis` on repeated `tiles` times (np.tile order)."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        p = self.param.tile_param
        if p.tiles < 1:
            raise self.error("tile_param tiles must be at least 1, got %d" % p.tiles)
        b = bottom[0]
        self.axis = _axis(self, b, p.axis, "tile_param axis")
        self.tiles = int(p.tiles)
        self.outer, self.inner = b.count_range(0, self.axis), b.count_range(self.axis)
        shape = list(b.shape)
        shape[self.axis] *= self.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        y = self.ops.tile_forward(bottom[0].dev_data, self.outer, self.inner, self.tiles)
        top[0].dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            dx = self.ops.tile_backward(top[0].dev_diff, self.outer, self.inner, self.tiles)
            bottom[0].dev_diff[...] = dx.reshape(bottom[0].shape)


def _integers(layer, values, limit, what):
    """Float-held indices, checked to be whole numbers in [0, limit) (host values)."""
    v = np.asarray(values).ravel()
    bad = (v < 0) | (v >= limit) | (v != np.floor(v))
    if bad.any():
        raise layer.error("%s must be whole numbers in [0, %d); got %g at position %d"
                          % (what, limit, v[bad][0], int(np.flatnonzero(bad)[0])), ShapeError)


def _no_backward_to(layer, propagate_down, index, what):
    if propagate_down[index]:
        raise layer.error("cannot backpropagate to the %s (bottom %d); set propagate_down: false for it"
                          % (what, index))


@register("BatchReindex")
class BatchReindexLayer(Layer):
    """top[i] = bottom[idx[i]] along the first axis."""
    exact_bottoms = 2
    exact_tops = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def reshape(self, bottom, top):
        if bottom[1].num_axes != 1:
            raise self.error("the index bottom must be 1-D, got shape %s" % (bottom[1].shape,), ShapeError)
        top[0].reshape((bottom[1].shape[0],) + bottom[0].shape[1:])

    def forward(self, bottom, top):
        _integers(self, bottom[1].data, bottom[0].shape[0], "indices")
        x = bottom[0].dev_data.reshape(bottom[0].shape[0], -1)
        top[0].dev_data[...] = self.ops.batch_reindex_forward(x, bottom[1].dev_data).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        _no_backward_to(self, propagate_down, 1, "indices")
        if propagate_down[0]:
            dy = top[0].dev_diff.reshape(top[0].shape[0], -1)
            dx = self.ops.batch_reindex_backward(dy, bottom[1].dev_data, bottom[0].shape[0])
            bottom[0].dev_diff[...] = dx.reshape(bottom[0].shape)


@register("Filter")
class FilterLayer(Layer):
    """Keeps the items whose selector (the last bottom) is non-zero."""
    min_bottoms = 2
    min_tops = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != self._selector

    def layer_setup(self, bottom, top):
        if len(top) != len(bottom) - 1:
            raise self.error("needs one top per filtered bottom (%d bottoms and a selector, %d tops)"
                             % (len(bottom) - 1, len(top)))
        self._selector = len(bottom) - 1
        self._first = True
        self._keep = None

    def reshape(self, bottom, top):
        sel = bottom[-1]
        if any(d != 1 for d in sel.shape[1:]):
            raise self.error("the selector must be (N) or (N, 1, ...), got %s" % (sel.shape,), ShapeError)
        for b in bottom[:-1]:
            if b.shape[0] != sel.shape[0]:
                raise self.error("the selector has %d entries but bottom %s has %d items; give one selector "
                                 "value per item" % (sel.shape[0], b.shape, b.shape[0]), ShapeError)
        # The kept count is known only from the selector's values: before the
        # first forward the tops keep the full batch, as in Caffe.
        keep = np.flatnonzero(sel.data.reshape(-1) != 0)
        self._keep = keep
        n = bottom[0].shape[0] if self._first else len(keep)
        self._first = False
        for b, t in zip(bottom, top):
            t.reshape((n,) + b.shape[1:])

    def forward(self, bottom, top):
        keep = self.xp.asarray(self._keep)
        for b, t in zip(bottom, top):
            t.dev_data[...] = b.dev_data[keep]

    def backward(self, top, propagate_down, bottom):
        _no_backward_to(self, propagate_down, self._selector, "selector")
        keep = self.xp.asarray(self._keep)
        for b, t, down in zip(bottom, top, propagate_down):
            if down:
                d = b.dev_diff
                d[...] = 0
                d[keep] = t.dev_diff


@register("Embed")
class EmbedLayer(Layer):
    """y = W[index] + b: a lookup table of num_output-vectors, one row per index."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.embed_param
        if not p.num_output or not p.input_dim:
            raise self.error("embed_param needs num_output > 0 and input_dim > 0")
        self.k, self.n = int(p.input_dim), int(p.num_output)
        self.blobs = [Blob((self.k, self.n))]
        fill(self.blobs[0], p.weight_filler)
        if p.bias_term:
            self.blobs.append(Blob((self.n,)))
            fill(self.blobs[1], p.bias_filler)

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape + (self.n,))

    def forward(self, bottom, top):
        if self.xp is np:      # on the device, an index out of range gives a NaN row instead of a host sync
            _integers(self, bottom[0].data, self.k, "indices (input_dim %d)" % self.k)
        bias = self.blobs[1].dev_data if len(self.blobs) > 1 else None
        y = self.ops.embed_forward(bottom[0].dev_data.reshape(-1), self.blobs[0].dev_data, bias)
        top[0].dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        _no_backward_to(self, propagate_down, 0, "indices")
        dy = top[0].dev_diff.reshape(-1, self.n)
        if self.param_propagate_down[0]:
            self.ops.embed_backward(dy, bottom[0].dev_data.reshape(-1), self.blobs[0].dev_diff)
        if len(self.blobs) > 1 and self.param_propagate_down[1]:
            self.blobs[1].dev_diff[...] += dy.sum(axis=0)


@register("Parameter")
class ParameterLayer(Layer):
    """Its one blob (zero unless loaded) is its top: data and diff shared."""
    exact_bottoms = 0
    exact_tops = 1

    def layer_setup(self, bottom, top):
        self.blobs = [Blob(tuple(self.param.parameter_param.shape.dim))]
        top[0].reshape(self.blobs[0].shape)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)
        top[0].share_data(self.blobs[0])
        top[0].share_diff(self.blobs[0])

"""Layers that move or reshape data without arithmetic of their own: Input,
DummyData, Split, Silence, Concat, Slice, Flatten, Reshape, Crop, and Eltwise."""
import numpy as np

from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("Input")
class InputLayer(Layer):
    replayable = Layer.no_compute
    exact_bottoms = 0
    min_tops = 1

    def layer_setup(self, bottom, top):
        shapes = self.param.input_param.shape
        if len(shapes) not in (0, 1, len(top)):
            raise self.error("input_param gives %d shapes for %d tops; give one, or one per top"
                             % (len(shapes), len(top)))
        for i, blob in enumerate(top):
            if len(shapes):
                blob.reshape(tuple(shapes[0 if len(shapes) == 1 else i].dim))

    def reshape(self, bottom, top):
        pass  # the user reshapes input blobs; forward must not undo that

    def forward(self, bottom, top):
        pass


@register("DummyData")
class DummyDataLayer(Layer):
    exact_bottoms = 0
    min_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.dummy_data_param
        n = len(top)
        legacy = len(p.num) or len(p.channels) or len(p.height) or len(p.width)
        if legacy:
            fields = [list(p.num), list(p.channels), list(p.height), list(p.width)]
            if any(len(f) not in (1, n) for f in fields):
                raise self.error("num/channels/height/width must each be given once or once per top")
            shapes = [tuple(f[0 if len(f) == 1 else i] for f in fields) for i in range(n)]
        else:
            if len(p.shape) not in (1, n):
                raise self.error("dummy_data_param needs one shape, or one per top (%d tops, %d shapes)"
                                 % (n, len(p.shape)))
            shapes = [tuple(p.shape[0 if len(p.shape) == 1 else i].dim) for i in range(n)]
        if len(p.data_filler) not in (0, 1, n):
            raise self.error("give no data_filler, one, or one per top")
        fillers = list(p.data_filler) or [pb.FillerParameter(type="constant", value=0)]
        self._fillers = [fillers[0 if len(fillers) == 1 else i] for i in range(n)]
        # Only tops with a non-constant filler are filled again on each forward
        # (Caffe's refill_): values a user writes into a constant top stay.
        self._refill = [f.type != "constant" for f in self._fillers]
        for blob, shape, f in zip(top, shapes, self._fillers):
            blob.reshape(shape)
            fill(blob, f)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        for blob, f, refill in zip(top, self._fillers, self._refill):
            if refill:
                fill(blob, f)


@register("Split")
class SplitLayer(Layer):
    replayable = Layer.no_compute
    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        for blob in top:
            blob.reshape_like(bottom[0])
            blob.share_data(bottom[0])

    def forward(self, bottom, top):
        pass  # the tops share the bottom's data

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if len(top) > 1:
            # the sum on oneDNN, in the layout the top diffs hold
            layouts = {self.blocked_layout(t, diff=True) for t in top} - {None}
            layout = layouts.pop() if len(layouts) == 1 else None
            shape = bottom[0].shape
            op = self.dnnl_op((shape, len(top), layout), lambda dnnl: dnnl.Eltwise2(
                shape, len(top), False, [1.0] * len(top), layout))
            if op is not None:
                op.forward([t.engine_diff() for t in top], bottom[0].engine_diff())
                return
        d = bottom[0].dev_diff
        d[...] = top[0].dev_diff
        for blob in top[1:]:
            d += blob.dev_diff


@register("Silence")
class SilenceLayer(Layer):
    replayable = Layer.no_compute
    min_bottoms = 1
    exact_tops = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.dev_diff[...] = 0


def _concat_axis(layer, blob, p):
    if p.HasField("concat_dim"):
        if p.HasField("axis"):
            raise layer.error("give either axis or the deprecated concat_dim, not both")
        return int(p.concat_dim)
    return blob.canonical_axis(p.axis)


@register("Concat")
class ConcatLayer(Layer):
    replayable = Layer.dnnl_only
    min_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        axis = self._axis = _concat_axis(self, bottom[0], self.param.concat_param)
        shape = list(bottom[0].shape)
        for blob in bottom[1:]:
            other = blob.shape
            if len(other) != len(shape) or any(a != b for i, (a, b) in enumerate(zip(other, shape)) if i != axis):
                raise self.error("bottoms must agree on every axis but %d: %s vs %s"
                                 % (axis, bottom[0].shape, other), ShapeError)
            shape[axis] += other[axis]
        top[0].reshape(shape)

    def _dnnl_forward(self, bottom, top):
        if len(bottom) > 64:
            return False
        layouts = {self.blocked_layout(b) for b in bottom}
        # one blocked layout shared by the bottoms stays blocked; else plain
        layout = layouts.pop() if len(layouts) == 1 else None
        shapes = tuple(b.shape for b in bottom)
        op = self.dnnl_op((shapes, self._axis, layout), lambda dnnl: dnnl.Concat(shapes, self._axis, layout))
        if op is None:
            return False
        op.forward([b.engine_data() for b in bottom], top[0].engine_data())
        return True

    def forward(self, bottom, top):
        if len(bottom) == 1:
            top[0].dev_data[...] = bottom[0].dev_data
            return
        if self._dnnl_forward(bottom, top):
            return
        self.xp.concatenate([b.dev_data for b in bottom], axis=self._axis, out=top[0].dev_data)

    def backward(self, top, propagate_down, bottom):
        offset = 0
        d = top[0].dev_diff
        for blob, down in zip(bottom, propagate_down):
            n = blob.shape[self._axis]
            if down:
                idx = (slice(None),) * self._axis + (slice(offset, offset + n),)
                blob.dev_diff[...] = d[idx]
            offset += n


@register("Slice")
class SliceLayer(Layer):
    exact_bottoms = 1
    min_tops = 1

    def reshape(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("slice_dim"):
            if p.HasField("axis"):
                raise self.error("give either axis or the deprecated slice_dim, not both")
            axis = int(p.slice_dim)
        else:
            axis = bottom[0].canonical_axis(p.axis)
        self._axis = axis
        total = bottom[0].shape[axis]
        points = list(p.slice_point)
        if points:
            if len(points) != len(top) - 1:
                raise self.error("%d tops need %d slice_point values, got %d"
                                 % (len(top), len(top) - 1, len(points)))
            bounds = [0] + points + [total]
            if any(b >= a for a, b in zip(bounds[1:], bounds[:-1])):
                raise self.error("slice points %s must increase strictly inside (0, %d)" % (points, total))
        else:
            if total % len(top):
                raise self.error("axis %d of size %d does not divide into %d equal slices"
                                 % (axis, total, len(top)), ShapeError)
            step = total // len(top)
            bounds = [i * step for i in range(len(top) + 1)]
        self._bounds = bounds
        for i, blob in enumerate(top):
            shape = list(bottom[0].shape)
            shape[axis] = bounds[i + 1] - bounds[i]
            blob.reshape(shape)

    def _index(self, i):
        return (slice(None),) * self._axis + (slice(self._bounds[i], self._bounds[i + 1]),)

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        for i, blob in enumerate(top):
            blob.dev_data[...] = x[self._index(i)]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = bottom[0].dev_diff
            for i, blob in enumerate(top):
                d[self._index(i)] = blob.dev_diff


class _ShareLayer(Layer):
    """A top that is the bottom's memory under another shape."""
    replayable = Layer.no_compute
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        shape = self.top_shape(bottom[0])
        if int(np.prod(shape, dtype=np.int64)) != bottom[0].count:
            raise self.error("output shape %s does not hold the %d values of the bottom %s"
                             % (tuple(shape), bottom[0].count, bottom[0].shape), ShapeError)
        top[0].reshape(shape)
        top[0].share_data(bottom[0])
        top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass


@register("Flatten")
class FlattenLayer(_ShareLayer):
    def top_shape(self, b):
        p = self.param.flatten_param
        start, end = b.canonical_axis(p.axis), b.canonical_axis(p.end_axis)
        return b.shape[:start] + (b.count_range(start, end + 1),) + b.shape[end + 1:]


@register("Reshape")
class ReshapeLayer(_ShareLayer):
    def top_shape(self, b):
        p = self.param.reshape_param
        spec = list(p.shape.dim)
        n = b.num_axes
        start = p.axis + n + 1 if p.axis < 0 else p.axis
        if not 0 <= start <= n:
            raise self.error("reshape_param axis %d is out of range for a %d-axis bottom" % (p.axis, n))
        end = n if p.num_axes == -1 else start + p.num_axes
        if p.num_axes < -1 or end > n:
            raise self.error("reshape_param num_axes %d does not fit a %d-axis bottom" % (p.num_axes, n))
        if spec.count(-1) > 1:
            raise self.error("reshape_param shape may infer (-1) at most one dimension")
        new = []
        for j, d in enumerate(spec):
            if d == 0:
                if start + j >= n:
                    raise self.error("dim %d is 0 (copy) but the bottom has no axis %d" % (j, start + j))
                new.append(b.shape[start + j])
            else:
                new.append(d)
        shape = list(b.shape[:start]) + new + list(b.shape[end:])
        if -1 in shape:
            known = int(np.prod([d for d in shape if d != -1], dtype=np.int64))
            if known == 0 or b.count % known:
                raise self.error("cannot infer the -1 dimension: %d values do not divide by %d"
                                 % (b.count, known), ShapeError)
            shape[shape.index(-1)] = b.count // known
        return tuple(shape)


@register("Crop")
class CropLayer(Layer):
    exact_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        p = self.param.crop_param
        a, ref = bottom[0], bottom[1]
        axis = a.canonical_axis(p.axis)
        if ref.num_axes != a.num_axes:
            raise self.error("both bottoms need the same number of axes (%s vs %s)" % (a.shape, ref.shape),
                             ShapeError)
        offsets = list(p.offset)
        n_crop = a.num_axes - axis
        if len(offsets) not in (0, 1, n_crop):
            raise self.error("give one offset, or one per cropped axis (%d)" % n_crop)
        index, shape = [], []
        for i in range(a.num_axes):
            if i < axis:
                index.append(slice(None))
                shape.append(a.shape[i])
                continue
            off = offsets[0] if len(offsets) == 1 else (offsets[i - axis] if offsets else 0)
            size = ref.shape[i]
            if off + size > a.shape[i]:
                raise self.error("crop of axis %d (offset %d, size %d) runs past the bottom's size %d"
                                 % (i, off, size, a.shape[i]), ShapeError)
            index.append(slice(off, off + size))
            shape.append(size)
        self._index = tuple(index)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        top[0].dev_data[...] = bottom[0].dev_data[self._index]

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            d = bottom[0].dev_diff
            d[...] = 0
            d[self._index] = top[0].dev_diff


@register("Eltwise")
class EltwiseLayer(Layer):
    replayable = Layer.dnnl_only
    min_bottoms = 2
    exact_tops = 1
    PROD, SUM, MAX = pb.EltwiseParameter.PROD, pb.EltwiseParameter.SUM, pb.EltwiseParameter.MAX

    def layer_setup(self, bottom, top):
        p = self.param.eltwise_param
        self._op = p.operation
        if len(p.coeff) and self._op != self.SUM:
            raise self.error("coeff is only allowed with operation SUM")
        if len(p.coeff) not in (0, len(bottom)):
            raise self.error("give one coeff per bottom (%d bottoms, %d coeffs)" % (len(bottom), len(p.coeff)))
        self._coeff = [float(c) for c in p.coeff] or [1.0] * len(bottom)
        self._stable = p.stable_prod_grad

    def reshape(self, bottom, top):
        for blob in bottom[1:]:
            if blob.shape != bottom[0].shape:
                raise self.error("every bottom must have the same shape: %s vs %s"
                                 % (bottom[0].shape, blob.shape), ShapeError)
        top[0].reshape_like(bottom[0])

    def dnnl_forward(self, bottom, top, relu=None):
        """SUM, or PROD of two bottoms, on oneDNN (with a ReLU of that slope
        after it when fused); False when the numpy engine runs it."""
        if self._op == self.MAX or (self._op == self.PROD and len(bottom) != 2):
            return False
        # the blocked layout of the bottoms that hold one (the others are
        # reordered into it), so the sum stays blocked for the next layer
        layouts = {self.blocked_layout(b) for b in bottom} - {None}
        layout = layouts.pop() if len(layouts) == 1 else None
        shape = bottom[0].shape
        op = self.dnnl_op((shape, layout, relu), lambda dnnl: dnnl.Eltwise2(
            shape, len(bottom), self._op == self.PROD, self._coeff, layout, relu))
        if op is None:
            return False
        op.forward([b.engine_data() for b in bottom], top[0].engine_data())
        return True

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        xp = self.xp
        y = top[0].dev_data
        xs = [b.dev_data for b in bottom]
        if self._op == self.PROD:
            xp.multiply(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y *= x
        elif self._op == self.SUM and all(c == 1.0 for c in self._coeff):
            # Caffe's axpy with coefficient 1 is a plain add: no products to round
            xp.add(xs[0], xs[1], out=y)
            for x in xs[2:]:
                y += x
        elif self._op == self.SUM:
            xp.multiply(xs[0], self._coeff[0], out=y)
            for c, x in zip(self._coeff[1:], xs[1:]):
                y += c * x
        else:
            # Bottom 1 wins ties with bottom 0; later bottoms must be strictly greater.
            first = xs[0] > xs[1]
            xp.copyto(y, xp.where(first, xs[0], xs[1]))
            idx = xp.where(first, 0, 1).astype(np.int32)
            for i, x in enumerate(xs[2:], start=2):
                better = x > y
                xp.copyto(y, x, where=better)
                idx[better] = i
            self._argmax = idx

    def _dnnl_backward(self, top, propagate_down, bottom):
        """SUM's bottom diffs, coeff * top diff, on oneDNN."""
        layout = self.blocked_layout(top[0], diff=True)
        shape = top[0].shape
        for blob, down, coeff in zip(bottom, propagate_down, self._coeff):
            if not down:
                continue
            op = self.dnnl_op(("backward", shape, layout, coeff), lambda dnnl: dnnl.Eltwise(
                shape, "linear", coeff, 0.0, training=False, layout=layout))
            if op is None:
                return False
            op.forward(top[0].engine_diff(), blob.engine_diff())
        return True

    def backward(self, top, propagate_down, bottom):
        if self._op == self.SUM and self._dnnl_backward(top, propagate_down, bottom):
            return
        xp = self.xp
        dy = top[0].dev_diff
        xs = [b.dev_data for b in bottom] if self._op == self.PROD else None
        for i, (blob, down) in enumerate(zip(bottom, propagate_down)):
            if not down:
                continue
            d = blob.dev_diff
            if self._op == self.PROD:
                if self._stable:
                    others = [x for j, x in enumerate(xs) if j != i]
                    prod = others[0].copy()
                    for x in others[1:]:
                        prod *= x
                    xp.multiply(prod, dy, out=d)
                else:
                    xp.multiply(top[0].dev_data / xs[i], dy, out=d)
            elif self._op == self.SUM:
                xp.multiply(dy, self._coeff[i], out=d)
            else:
                xp.multiply(dy, self._argmax == i, out=d)


@register("ShuffleChannel")
class ShuffleChannelLayer(Layer):
    """ShuffleNet's channel shuffle: channels seen as (group, C / group) are
    read out as (C / group, group)."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        self.group = int(self.param.shuffle_channel_param.group)
        if self.group < 1:
            raise self.error("shuffle_channel_param group must be at least 1, got %d" % self.group)

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 2 or bottom[0].shape[1] % self.group:
            raise self.error("group %d must divide the channels of %s" % (self.group, bottom[0].shape), ShapeError)
        top[0].reshape_like(bottom[0])

    def _grouped(self, a, groups):
        n, c = a.shape[:2]
        return a.reshape((n, groups, c // groups, -1))

    def forward(self, bottom, top):
        x = self._grouped(bottom[0].dev_data, self.group)
        top[0].dev_data.reshape(x.shape[0], x.shape[2], x.shape[1], -1)[...] = \
            self.ops.permute(x, (0, 2, 1, 3))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            c = bottom[0].shape[1]
            dy = self._grouped(top[0].dev_diff, c // self.group)
            bottom[0].dev_diff.reshape(dy.shape[0], dy.shape[2], dy.shape[1], -1)[...] = \
                self.ops.permute(dy, (0, 2, 1, 3))

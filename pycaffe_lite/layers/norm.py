"""BatchNorm, Scale and Bias."""
import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("BatchNorm")
class BatchNormLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global = p.use_global_stats if p.HasField("use_global_stats") else self.phase == pb.TEST
        self.maf, self.eps = p.moving_average_fraction, p.eps
        c = bottom[0].shape[1] if bottom[0].num_axes > 1 else 1
        self.blobs = [Blob((c,)), Blob((c,)), Blob((1,))]
        # The statistics are not learned: pin their learning rate to 0.
        for i in range(3):
            if i == len(self.param.param):
                self.param.param.add(lr_mult=0)
            elif self.param.param[i].lr_mult != 0:
                raise self.error("its three blobs are statistics, not parameters: lr_mult must be 0")

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def _dnnl_forward(self, bottom, top, ncs):
        """oneDNN's batch normalization over (N, C, S) = ncs; False when the
        numpy engine runs this layer."""
        shape, training, layout = bottom[0].shape, self.need_backward, self.blocked_layout(bottom[0])
        flat = ncs if layout is None else shape
        op = self._engine_op = self.dnnl_op((flat, training, layout), lambda dnnl: dnnl.BatchNorm(
            flat, self.eps, self.use_global, training, layout))
        if op is None:
            return False
        c = ncs[1]
        if self.use_global:
            mean, var = self.statistics()
            op.forward(bottom[0].engine_data(flat), top[0].engine_data(flat), mean, var)
        else:
            mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
            op.forward(bottom[0].engine_data(flat), top[0].engine_data(flat), mean, var)
            self.update_statistics(mean, var, ncs[0] * ncs[2])
        self._std = np.sqrt(var + np.float32(self.eps)).reshape(1, c, 1)
        self._y = None
        if not self.use_global and self.need_backward:
            self._y = self._kept("normalized", top[0].count, np.float32).reshape(ncs)
            self._y[...] = top[0].dev_data.reshape(ncs)
        return True

    def statistics(self):
        """The mean and variance global statistics stand for (the blobs over
        their scale factor, Caffe's)."""
        f = float(self.blobs[2].engine_data().read()[0])
        f = np.float32(0.0 if f == 0 else 1.0 / f)
        return self.blobs[0].engine_data().read() * f, self.blobs[1].engine_data().read() * f

    def update_statistics(self, mean, var, m):
        """Caffe's moving averages, from a batch's mean and (biased) variance
        over m values per channel."""
        maf = np.float32(self.maf)
        self.blobs[2].dev_data[...] = self.blobs[2].dev_data * maf + 1
        self.blobs[0].dev_data[...] = self.blobs[0].dev_data * maf + mean
        self.blobs[1].dev_data[...] = self.blobs[1].dev_data * maf + np.float32(m / (m - 1.0) if m > 1 else 1.0) * var

    def forward(self, bottom, top):
        xp = self.xp
        shape = bottom[0].shape
        n, c = shape[0], (shape[1] if len(shape) > 1 else 1)
        ncs = (n, c, int(np.prod(shape[2:], dtype=np.int64)))     # explicit: an empty batch too
        if self._dnnl_forward(bottom, top, ncs):
            return
        x = bottom[0].dev_data
        xs = x.reshape(ncs)
        ys = top[0].dev_data.reshape(ncs)
        if self.use_global:
            f = float(self.blobs[2].dev_data[0])
            f = 0.0 if f == 0 else 1.0 / f
            mean = self.blobs[0].dev_data * np.float32(f)
            var = self.blobs[1].dev_data * np.float32(f)
            xp.subtract(xs, mean.reshape(1, c, 1), out=ys)
        else:
            # Caffe's order: per image and channel, the spatial sum times 1/m,
            # then summed over the batch; the same for the squared deviations.
            m = xs.shape[0] * xs.shape[2]
            inv_m = np.float32(1.0 / m if m else np.inf)      # an empty batch: NaN statistics, as in Caffe
            mean = (xs.sum(axis=2) * inv_m).sum(axis=0)
            xp.subtract(xs, mean.reshape(1, c, 1), out=ys)
            var = (xp.einsum("ncs,ncs->nc", ys, ys) * inv_m).sum(axis=0)     # no squares array
            corr = m / (m - 1.0) if m > 1 else 1.0
            maf = np.float32(self.maf)
            self.blobs[2].dev_data[...] = self.blobs[2].dev_data * maf + 1
            self.blobs[0].dev_data[...] = self.blobs[0].dev_data * maf + mean
            self.blobs[1].dev_data[...] = self.blobs[1].dev_data * maf + np.float32(corr) * var
        # Caffe subtracts the mean, then divides by the standard deviation
        self._std = xp.sqrt(var + np.float32(self.eps)).reshape(1, c, 1)
        ys /= self._std
        self._y = None
        if not self.use_global and self.need_backward:
            # the normalized input, which an in-place Scale will overwrite
            self._y = self._kept("normalized", ys.size, ys.dtype).reshape(ys.shape)
            self._y[...] = ys

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        xp = self.xp
        dy = top[0].dev_diff
        n = dy.shape[0]
        dys = dy.reshape(n, self._std.shape[1], int(np.prod(dy.shape[2:], dtype=np.int64)))
        dxs = bottom[0].dev_diff.reshape(dys.shape)
        if self.use_global:
            xp.divide(dys, self._std, out=dxs)
            return
        op = getattr(self, "_engine_op", None)
        if op is not None and op.bwd is not None and self._y is not None and self._y.shape == dys.shape:
            self.engine = "dnnl"
            # oneDNN's backward from the kept normalized input: its mean 0 and
            # variance 1 (less eps) leave (dy - mean(dy) - y mean(dy y)), which
            # is then divided by the batch's deviation
            c = dys.shape[1]
            zero, one = np.zeros(c, np.float32), np.full(c, 1.0 - self.eps, np.float32)
            op.backward(self._y, zero, one, dys, dxs)
            dxs /= self._std
            return
        # Caffe's order: dx = (dy - (y * sum(dy * y) + sum(dy)) / m) / std,
        # the sums per channel over batch and space
        y = self._y
        sum_dyy = xp.einsum("ncs,ncs->nc", dys, y).sum(axis=0)
        sum_dy = dys.sum(axis=2).sum(axis=0)
        t = backend.scratch("batchnorm", y.size, y.dtype).reshape(y.shape)
        xp.multiply(y, sum_dyy.reshape(1, -1, 1), out=t)
        t += sum_dy.reshape(1, -1, 1)
        t *= np.float32(-1.0 / (y.shape[0] * y.shape[2]))
        xp.add(dys, t, out=dxs)
        dxs /= self._std


def _broadcast_geometry(layer, x_shape, axis, shape):
    """Shape that lines a (scale_dim...) blob up with x starting at `axis`."""
    if tuple(x_shape[axis:axis + len(shape)]) != tuple(shape):
        raise layer.error("blob shape %s does not match bottom %s from axis %d"
                          % (tuple(shape), x_shape, axis), ShapeError)
    return (1,) * axis + tuple(shape) + (1,) * (len(x_shape) - axis - len(shape))


def _param_shape(layer, bottom, axis_field, num_axes):
    b = bottom[0]
    axis = b.canonical_axis(axis_field) if b.num_axes else 0
    if num_axes < -1:
        raise layer.error("num_axes must be -1 or more, got %d" % num_axes)
    end = b.num_axes if num_axes == -1 else axis + num_axes
    if end > b.num_axes:
        raise layer.error("axis %d + num_axes %d runs past the %d axes of the bottom" % (axis, num_axes, b.num_axes))
    return axis, b.shape[axis:end]


class _AffineLayer(Layer):
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def reshape(self, bottom, top):
        x = bottom[0]
        shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
        self._bshape = _broadcast_geometry(self, x.shape, self.axis, shape)
        top[0].reshape_like(x)

    def _setup_operand(self, bottom, p, default_filler):
        """The operand is the second bottom, or a learned blob shaped like the
        bottom's axes [axis, axis + num_axes)."""
        if len(bottom) > 1:
            self.axis = bottom[0].canonical_axis(p.axis)
            self.blobs = []
        else:
            self.axis, shape = _param_shape(self, bottom, p.axis, p.num_axes)
            self.blobs = [Blob(shape)]
            fill(self.blobs[0], p.filler if p.HasField("filler") else default_filler)

    def _blocks(self, a):
        """a (shaped like the bottom) as (outer, parameter, inner)."""
        shaped = [i for i, d in enumerate(self._bshape) if d != 1]
        first, last = (shaped[0], shaped[-1] + 1) if shaped else (0, 0)
        return a.reshape(int(np.prod(a.shape[:first])), -1, int(np.prod(a.shape[last:])))

    def _reduce(self, a):
        """Sum `a` (shaped like the bottom) down to the parameter's shape:
        over the axes after the parameter's (contiguous), then before them."""
        return self._blocks(a).sum(axis=2).sum(axis=0)

    def _reduce_product(self, a, b):
        """_reduce(a * b) without the product array."""
        return self.xp.einsum("opi,opi->op", self._blocks(a), self._blocks(b)).sum(axis=0)


@register("Scale")
class ScaleLayer(_AffineLayer):
    def layer_setup(self, bottom, top):
        p = self.param.scale_param
        self._setup_operand(bottom, p, pb.FillerParameter(type="constant", value=1))
        self.bias_index = None
        if p.bias_term:
            shape = bottom[1].shape if len(bottom) > 1 else self.blobs[0].shape
            self.bias_index = len(self.blobs)
            self.blobs.append(Blob(shape))
            fill(self.blobs[-1], p.bias_filler)

    def _scale(self, bottom):
        return (bottom[1] if len(bottom) > 1 else self.blobs[0]).dev_data.reshape(self._bshape)

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        # in place, backward needs the input, which the output overwrites
        self._x = None
        if bottom[0] is top[0] and self.need_backward:
            self._x = self._kept("input", x.size, x.dtype).reshape(x.shape)
            self._x[...] = x
        y = top[0].dev_data
        self.xp.multiply(x, self._scale(bottom), out=y)
        if self.bias_index is not None:
            y += self.blobs[self.bias_index].dev_data.reshape(self._bshape)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].dev_diff
        x = self._x if self._x is not None else bottom[0].dev_data
        if self.bias_index is not None and self.param_propagate_down[self.bias_index]:
            self.blobs[self.bias_index].dev_diff[...] += self._reduce(dy).reshape(
                self.blobs[self.bias_index].shape)
        want_scale = propagate_down[1] if len(bottom) > 1 else self.param_propagate_down[0]
        if want_scale:
            if len(bottom) > 1:
                bottom[1].dev_diff[...] = self._reduce_product(dy, x).reshape(bottom[1].shape)
            else:
                self.blobs[0].dev_diff[...] += self._reduce_product(dy, x).reshape(self.blobs[0].shape)
        if propagate_down[0]:
            self.xp.multiply(dy, self._scale(bottom), out=bottom[0].dev_diff)


@register("Bias")
class BiasLayer(_AffineLayer):
    def layer_setup(self, bottom, top):
        self._setup_operand(bottom, self.param.bias_param, pb.FillerParameter(type="constant", value=0))

    def forward(self, bottom, top):
        b = (bottom[1] if len(bottom) > 1 else self.blobs[0]).dev_data.reshape(self._bshape)
        top[0].dev_data[...] = bottom[0].dev_data + b

    def backward(self, top, propagate_down, bottom):
        dy = top[0].dev_diff
        if len(bottom) > 1:
            if propagate_down[1]:
                bottom[1].dev_diff[...] = self._reduce(dy).reshape(bottom[1].shape)
        elif self.param_propagate_down[0]:
            self.blobs[0].dev_diff[...] += self._reduce(dy).reshape(self.blobs[0].shape)
        if propagate_down[0]:
            bottom[0].dev_diff[...] = dy


@register("MVN")
class MVNLayer(Layer):
    """Mean (and variance) normalization per (n, c), or per n across channels:
    y = (x - mean) / (std + eps), eps added to the standard deviation."""
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes > 4:
            raise self.error("MVN handles at most 4 axes (N, C, H, W); got %s" % (b.shape,), ShapeError)
        p = self.param.mvn_param
        self.groups = b.num if p.across_channels else b.num * b.channels
        top[0].reshape_like(b)

    def forward(self, bottom, top):
        xp = self.xp
        p = self.param.mvn_param
        x = bottom[0].dev_data.reshape(self.groups, -1)
        y = x - x.mean(axis=1, keepdims=True)
        if p.normalize_variance:
            self._std = xp.sqrt((y * y).mean(axis=1, keepdims=True)) + np.float32(p.eps)
            y /= self._std
        top[0].dev_data[...] = y.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].dev_diff.reshape(self.groups, -1)
        dx = dy - dy.mean(axis=1, keepdims=True)
        if self.param.mvn_param.normalize_variance:
            # Caffe's closed form (exact only for eps = 0), which the fixtures follow.
            y = top[0].dev_data.reshape(self.groups, -1)
            dx -= y * (dy * y).mean(axis=1, keepdims=True)
            dx /= self._std
        bottom[0].dev_diff[...] = dx.reshape(bottom[0].shape)


@register("Axpy")
class AxpyLayer(Layer):
    """a * x + y with a per-channel a: bottoms (a (N, C[, 1, 1]), x, y), the
    SENet acceleration fork's layer. (OpenCV's importer wires a * y + x.)"""
    exact_bottoms = 3
    exact_tops = 1

    def reshape(self, bottom, top):
        a, x, y = bottom
        if a.shape[:2] != x.shape[:2] or a.count != a.shape[0] * a.shape[1] or x.shape != y.shape:
            raise self.error("needs a (N, C, 1, 1) scale and x, y of one shape (N, C, ...), got %s, %s, %s"
                             % (a.shape, x.shape, y.shape), ShapeError)
        top[0].reshape_like(x)

    def _a(self, a, x):
        return a.reshape(a.shape[:2] + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        a, x, y = (b.dev_data for b in bottom)
        out = top[0].dev_data
        self.xp.multiply(x, self._a(a, x), out=out)
        out += y

    def backward(self, top, propagate_down, bottom):
        dy = top[0].dev_diff
        a, x = bottom[0].dev_data, bottom[1].dev_data
        if propagate_down[0]:
            bottom[0].dev_diff[...] = (dy * x).reshape(x.shape[0], x.shape[1], -1).sum(axis=2).reshape(
                bottom[0].shape)
        if propagate_down[1]:
            self.xp.multiply(dy, self._a(a, x), out=bottom[1].dev_diff)
        if propagate_down[2]:
            bottom[2].dev_diff[...] = dy

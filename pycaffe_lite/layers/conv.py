"""Convolution and Deconvolution over any number of spatial axes: im2col (or
col2im) plus one GEMM per group; the 2-D case has tuned kernels of its own."""
import math

import numpy as np

from .. import backend
from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register


def _prod(values):
    return int(math.prod(values))


def _per_axis(layer, p, field, name, default, axes):
    """kernel/pad/stride/dilation as one value per spatial axis, from the
    repeated `field` (once, or once per axis) or, in 2-D, `name`_h/`name`_w."""
    values = [int(v) for v in getattr(p, field)]
    has_hw = field != "dilation" and (p.HasField(name + "_h") or p.HasField(name + "_w"))
    if has_hw:
        if axes != 2:
            raise layer.error("%s_h/%s_w can only be used for 2-D convolution; this bottom has %d spatial axes, "
                              "so give %s once or once per axis" % (name, name, axes, name))
        if values:
            raise layer.error("give either %s or %s_h/%s_w, not both" % (field, name, name))
        if name == "kernel" and not (p.HasField("kernel_h") and p.HasField("kernel_w")):
            raise layer.error("kernel_h and kernel_w must be given together")
        return (int(getattr(p, name + "_h")) if p.HasField(name + "_h") else default,
                int(getattr(p, name + "_w")) if p.HasField(name + "_w") else default)
    if not values:
        if default is None:
            raise layer.error("convolution_param needs kernel_size (or kernel_h and kernel_w)")
        return (default,) * axes
    if len(values) == 1:
        return (values[0],) * axes
    if len(values) != axes:
        raise layer.error("%s must be given once, or once per spatial axis: it is given %d times for a bottom "
                          "with %d spatial axes" % (field, len(values), axes))
    return tuple(values)


class _Geometry:
    """Kernel, pad, stride and dilation per spatial axis (Convolution,
    Deconvolution and Im2col read them from convolution_param alike)."""

    @property
    def conv_param(self):
        """The ConvolutionParameter this layer runs by."""
        return self.param.convolution_param

    def parse_geometry(self, bottom):
        p = self.conv_param
        self.axis = bottom[0].canonical_axis(p.axis)
        axes = bottom[0].num_axes - self.axis - 1
        if axes < 1:
            raise self.error("the bottom %s has no spatial axis after the channel axis %d"
                             % (bottom[0].shape, self.axis), ShapeError)
        self.kernel = _per_axis(self, p, "kernel_size", "kernel", None, axes)
        self.pad = _per_axis(self, p, "pad", "pad", 0, axes)
        self.stride = _per_axis(self, p, "stride", "stride", 1, axes)
        self.dilation = _per_axis(self, p, "dilation", "dilation", 1, axes)
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error("kernel, stride and dilation must be positive (kernel %s, stride %s, dilation %s)"
                             % (self.kernel, self.stride, self.dilation))

    def conv_out(self, size):
        out = tuple((s + 2 * p - (d * (k - 1) + 1)) // st + 1
                    for s, k, p, st, d in zip(size, self.kernel, self.pad, self.stride, self.dilation))
        if min(out) <= 0:
            raise self.error("input %s is too small for kernel %s, pad %s, stride %s, dilation %s"
                             % ("x".join(map(str, size)), self.kernel, self.pad, self.stride, self.dilation),
                             ShapeError)
        return out

    def spatial_size(self, blob):
        size = blob.shape[self.axis + 1:]
        if len(size) != len(self.kernel):
            raise self.error("the bottom %s has %d spatial axes, but the layer was set up for %d"
                             % (blob.shape, len(size), len(self.kernel)), ShapeError)
        return size

    def _geometry(self, out_shape):
        return self.kernel, self.pad, self.stride, self.dilation, out_shape

    def im2col(self, x, out_shape, out=None):
        """Columns of x (N, C, *spatial); the 2-D path is the tuned one."""
        if len(self.kernel) == 2:
            return self.ops.im2col(x, *self._geometry(out_shape), out=out)
        return self.ops.im2col_nd(x, *self._geometry(out_shape), out=out)

    def col2im(self, cols, x_shape, out_shape):
        if len(self.kernel) == 2:
            return self.ops.col2im(cols, x_shape, *self._geometry(out_shape))
        return self.ops.col2im_nd(cols, x_shape, *self._geometry(out_shape))


class _BaseConv(_Geometry, Layer):
    replayable = Layer.dnnl_only
    exact_bottoms = None
    min_bottoms = 1
    min_tops = 1
    transposed = False

    def layer_setup(self, bottom, top):
        p = self.conv_param
        if len(top) != len(bottom):
            raise self.error("needs as many tops as bottoms (%d vs %d)" % (len(top), len(bottom)))
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param needs num_output > 0")
        self.parse_geometry(bottom)
        self.group = int(p.group)
        if self.group < 1:
            raise self.error("group must be at least 1, got %d" % self.group)
        channels = bottom[0].shape[self.axis]
        self.num_output = int(p.num_output)
        if channels % self.group or self.num_output % self.group:
            raise self.error("group %d must divide both the input channels (%d) and num_output (%d)"
                             % (self.group, channels, self.num_output), ShapeError)
        self.channels = channels
        if self.transposed:
            wshape = (channels, self.num_output // self.group) + self.kernel
        else:
            wshape = (self.num_output, channels // self.group) + self.kernel
        self.bias_term = p.bias_term
        self.blobs = [Blob(wshape)]
        fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.append(Blob((self.num_output,)))
            fill(self.blobs[1], p.bias_filler)

    def _deconv_out(self, size):
        return tuple(st * (s - 1) + d * (k - 1) + 1 - 2 * p
                     for s, k, p, st, d in zip(size, self.kernel, self.pad, self.stride, self.dilation))

    def reshape(self, bottom, top):
        for b in bottom:
            if b.num_axes != bottom[0].num_axes or b.shape[self.axis] != self.channels:
                raise self.error("bottom %s does not have %d channels on axis %d"
                                 % (b.shape, self.channels, self.axis), ShapeError)
            if b.shape != bottom[0].shape:
                raise self.error("all bottoms must have the same shape (%s vs %s)"
                                 % (bottom[0].shape, b.shape), ShapeError)
        size = self.spatial_size(bottom[0])
        self.out_hw = self._deconv_out(size) if self.transposed else self.conv_out(size)
        lead = bottom[0].shape[:self.axis]
        for t in top:
            t.reshape(lead + (self.num_output,) + tuple(self.out_hw))
        self._cols = [None] * len(bottom)

    def _as_nchw(self, a):
        return a.reshape((int(np.prod(a.shape[:self.axis], dtype=np.int64)),) + a.shape[self.axis:])

    def _grouped_weight(self):
        w = self.blobs[0].dev_data
        return w.reshape(self.group, w.shape[0] // self.group, -1)

    # -- the oneDNN engine: one primitive per pass, whole batch -------------
    def engine_shapes(self, blob):
        """The (N, C, *spatial) shapes of this layer's input and output."""
        x_shape = (blob.count_range(0, self.axis),) + blob.shape[self.axis:]
        return x_shape, x_shape[:1] + (self.num_output,) + tuple(self.out_hw)

    def _dnnl(self, bottom):
        if len(self.kernel) > 3:
            return None
        x_shape, y_shape = self.engine_shapes(bottom[0])
        training = self.need_backward
        return self.dnnl_op((x_shape, training), lambda dnnl: dnnl.Convolution(
            x_shape, y_shape, self.blobs[0].shape, self.group, self.kernel, self.pad, self.stride,
            self.dilation, self.bias_term, self.transposed, training))

    def fused_op(self, bottom, relu, affine, residual=False):
        """An inference convolution with a bias, then (`affine`) a
        per-channel multiply and add, then (`residual`) what the destination
        held added, then, unless relu is None, a ReLU of that negative slope
        (fusion.ConvChain's)."""
        if len(self.kernel) > 3 or self.transposed:
            return None
        x_shape, y_shape = self.engine_shapes(bottom[0])
        return self.dnnl_op(("fused", x_shape, relu, affine, residual), lambda dnnl: dnnl.Convolution(
            x_shape, y_shape, self.blobs[0].shape, self.group, self.kernel, self.pad, self.stride,
            self.dilation, True, False, False, relu, affine, residual))

    def _dnnl_forward(self, bottom, top):
        op = self._dnnl(bottom)
        if op is None:
            return False
        w = self.blobs[0].engine_data()
        b = self.blobs[1].engine_data() if self.bias_term else None
        x_shape, y_shape = self.engine_shapes(bottom[0])
        for bb, t in zip(bottom, top):
            op.forward(bb.engine_data(x_shape), w, b, t.engine_data(y_shape))
        self._cols = [None] * len(bottom)
        return True

    def _dnnl_backward(self, top, propagate_down, bottom):
        op = self._dnnl(bottom)
        if op is None or op.bwd_data is None:
            return False
        want_w = self.param_propagate_down[0]
        want_b = self.bias_term and self.param_propagate_down[1]
        x_shape, y_shape = self.engine_shapes(bottom[0])
        for i, (b, t) in enumerate(zip(bottom, top)):
            dy = t.engine_diff(y_shape)
            if want_w:
                dw, fresh_w = self.blobs[0].host_diff_to_fill()
                db, fresh_b = None, True
                if want_b:
                    db, fresh_b = self.blobs[1].host_diff_to_fill()
                elif self.bias_term:      # computed alongside, not wanted
                    db = backend.scratch("conv_db", self.num_output, np.float32)
                op.backward_weights(b.engine_data(x_shape), dy, dw, db, not fresh_w, not fresh_b)
            elif want_b:
                d = dy.read()
                self.blobs[1].dev_diff[...] += d.sum(axis=(0,) + tuple(range(2, d.ndim)))
            if propagate_down[i]:
                op.backward_data(dy, self.blobs[0].engine_data(), b.engine_diff(x_shape))
        return True


@register("Convolution")
class ConvolutionLayer(_BaseConv):
    """im2col + GEMM. A layer that will run backward does the whole batch at
    once and keeps the columns for backward; an inference-only layer works in
    chunks of the batch whose columns stay in cache."""

    def _chunks(self, n, k_per_image):
        if self.need_backward:
            return [(0, n)]
        per = max(1, self.ops.CONV_CHUNK_BYTES // max(1, k_per_image * 4))
        return [(s, min(n, s + per)) for s in range(0, n, per)]

    def _im2col(self, x, key):
        size = x.shape[1] * _prod(self.kernel) * x.shape[0] * _prod(self.out_hw)
        return self.im2col(x, self.out_hw, out=self._kept(key, size, x.dtype))

    # A pointwise (1x1, stride 1, no pad) convolution's columns are the input
    # itself: one image, or images big enough for a GEMM each, skip im2col,
    # col2im and the transposes (the same products, bit for bit).
    DIRECT_MIN_AREA = 256

    def _direct(self, n, area):
        pointwise = all(v == 1 for v in self.kernel + self.stride) and not any(self.pad)
        return pointwise and (n == 1 or area >= self.DIRECT_MIN_AREA)

    def _depthwise(self):
        """One filter per channel (MobileNet's depthwise layers): the kernel
        table convolves tap by tap instead of C tiny GEMMs over im2col."""
        return len(self.kernel) == 2 and 1 < self.group == self.channels == self.num_output

    def forward(self, bottom, top):
        if self._dnnl_forward(bottom, top):
            return
        xp, g, m = self.xp, self.group, self.num_output
        wg = self._grouped_weight()                                   # (g, M/g, K/g)
        k = wg.shape[2] * g
        area = _prod(self.out_hw)
        for i, (b, t) in enumerate(zip(bottom, top)):
            x = self._as_nchw(b.dev_data)
            y_all = t.dev_data.reshape(x.shape[0], m, area)
            n = x.shape[0]
            if self._depthwise():
                y4 = y_all.reshape(x.shape[:2] + tuple(self.out_hw))
                self.ops.depthwise_conv_forward(x, self.blobs[0].dev_data, *self._geometry(self.out_hw), out=y4)
                if self.bias_term:
                    y_all += self.blobs[1].dev_data[:, None]
                self._cols[i] = None
                continue
            if self._direct(n, area):
                xp.matmul(wg, x.reshape(n, g, k // g, area), out=y_all.reshape(n, g, m // g, area))
                if self.bias_term:
                    y_all += self.blobs[1].dev_data[:, None]
                self._cols[i] = None
                continue
            chunks = self._chunks(x.shape[0], k * area)
            for s0, s1 in chunks:
                cols = self._im2col(x[s0:s1], ("cols", i))
                y = backend.scratch("conv_y", m * cols.shape[1], x.dtype).reshape(g, m // g, cols.shape[1])
                xp.matmul(wg, cols.reshape(g, k // g, cols.shape[1]), out=y)
                y = y.reshape(m, s1 - s0, area)
                if self.bias_term:
                    y += self.blobs[1].dev_data[:, None, None]
                y_all[s0:s1] = y.transpose(1, 0, 2)
            # With one chunk, backward can reuse these columns.
            self._cols[i] = cols if len(chunks) == 1 else None

    def backward(self, top, propagate_down, bottom):
        if self._dnnl_backward(top, propagate_down, bottom):
            return
        ops, xp, g, m = self.ops, self.xp, self.group, self.num_output
        wg = self._grouped_weight()
        k = wg.shape[2] * g
        area = _prod(self.out_hw)
        want_w = self.param_propagate_down[0]
        want_b = self.bias_term and self.param_propagate_down[1]
        for i, (b, t) in enumerate(zip(bottom, top)):
            x = self._as_nchw(b.dev_data)
            dy_all = self._as_nchw(t.dev_diff).reshape(x.shape[0], m, area)
            dx_all = self._as_nchw(b.dev_diff) if propagate_down[i] else None
            if self._depthwise():
                dy4 = dy_all.reshape(x.shape[:2] + tuple(self.out_hw))
                if want_b:
                    self.blobs[1].dev_diff[...] += dy4.sum(axis=(0, 2, 3))
                ops.depthwise_conv_backward(dy4, x, wg.reshape(self.blobs[0].shape), *self._geometry(self.out_hw),
                                            dx=dx_all, dw=self.blobs[0].dev_diff if want_w else None)
                continue
            n = x.shape[0]
            if self._direct(n, area):
                # image by image, as Caffe accumulates its weight gradient:
                # no columns and no transposed copy of the diff
                dy4 = dy_all.reshape(n, g, m // g, area)
                if want_b:
                    self.blobs[1].dev_diff[...] += dy_all.sum(axis=2).sum(axis=0)
                if want_w:
                    x4 = x.reshape(n, g, k // g, area)
                    for j in range(n):
                        self.blobs[0].add_matmul_to_diff(dy4[j], x4[j].transpose(0, 2, 1))
                if dx_all is not None:
                    xp.matmul(wg.transpose(0, 2, 1), dy4, out=dx_all.reshape(n, g, k // g, area))
                self._cols[i] = None
                continue
            for s0, s1 in self._chunks(x.shape[0], k * area):
                n = s1 - s0
                dyt = backend.scratch("conv_dyt", m * n * area, x.dtype).reshape(m, n, area)
                dyt[...] = dy_all[s0:s1].transpose(1, 0, 2)
                dyg = dyt.reshape(g, m // g, n * area)
                if want_b:
                    self.blobs[1].dev_diff[...] += dyt.sum(axis=(1, 2))
                if want_w:
                    cols = self._cols[i]
                    if cols is None:
                        cols = self._im2col(x[s0:s1], ("cols", i))
                    colsg = cols.reshape(g, k // g, cols.shape[1])
                    self.blobs[0].add_matmul_to_diff(dyg, colsg.transpose(0, 2, 1))
                if dx_all is not None:
                    dcols = backend.scratch("conv_dcols", k * n * area, x.dtype).reshape(g, k // g, n * area)
                    xp.matmul(wg.transpose(0, 2, 1), dyg, out=dcols)
                    dx_all[s0:s1] = self.col2im(dcols.reshape(k, n * area), x[s0:s1].shape, self.out_hw)
            self._cols[i] = None


@register("Deconvolution")
class DeconvolutionLayer(_BaseConv):
    transposed = True

    def forward(self, bottom, top):
        if self._dnnl_forward(bottom, top):
            return
        xp, g = self.xp, self.group
        w = self.blobs[0].dev_data.reshape(g, self.channels // g, -1)     # (g, C/g, M/g*prod(k))
        for b, t in zip(bottom, top):
            x = self._as_nchw(b.dev_data)
            n, c, size = x.shape[0], x.shape[1], x.shape[2:]
            xt = xp.ascontiguousarray(x.reshape(n, c, -1).transpose(1, 0, 2)).reshape(g, c // g, -1)
            cols = xp.matmul(w.transpose(0, 2, 1), xt).reshape(-1, n * _prod(size))
            y = self.col2im(cols, (n, self.num_output) + tuple(self.out_hw), size)
            if self.bias_term:
                y = y + self.blobs[1].dev_data.reshape((1, -1) + (1,) * len(size))
            t.dev_data[...] = y.reshape(t.shape)

    def backward(self, top, propagate_down, bottom):
        if self._dnnl_backward(top, propagate_down, bottom):
            return
        xp, g = self.xp, self.group
        w = self.blobs[0].dev_data.reshape(g, self.channels // g, -1)
        for i, (b, t) in enumerate(zip(bottom, top)):
            dy = self._as_nchw(t.dev_diff)
            x = self._as_nchw(b.dev_data)
            n, c, size = x.shape[0], x.shape[1], x.shape[2:]
            if self.bias_term and self.param_propagate_down[1]:
                self.blobs[1].dev_diff[...] += dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))
            cols = self.im2col(dy, size)
            colsg = cols.reshape(g, cols.shape[0] // g, -1)                  # (g, M/g*prod(k), N*prod(size))
            if self.param_propagate_down[0]:
                xt = xp.ascontiguousarray(x.reshape(n, c, -1).transpose(1, 0, 2)).reshape(g, c // g, -1)
                self.blobs[0].dev_diff[...] += xp.matmul(xt, colsg.transpose(0, 2, 1)).reshape(
                    self.blobs[0].shape)
            if propagate_down[i]:
                dx = xp.matmul(w, colsg).reshape((c, n) + tuple(size)).swapaxes(0, 1)
                b.dev_diff[...] = dx.reshape(b.shape)


@register("Im2col")
class Im2colLayer(_Geometry, Layer):
    """The columns convolution would multiply: top (N, C*prod(kernel), *out)."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        self.parse_geometry(bottom)

    def reshape(self, bottom, top):
        self.out_shape = self.conv_out(self.spatial_size(bottom[0]))
        b = bottom[0]
        lead = b.shape[:self.axis]
        top[0].reshape(lead + (b.shape[self.axis] * _prod(self.kernel),) + self.out_shape)

    def _nchw(self, blob, a):
        return a.reshape((-1,) + blob.shape[self.axis:])

    def forward(self, bottom, top):
        x = self._nchw(bottom[0], bottom[0].dev_data)
        cols = self.im2col(x, self.out_shape)                      # (C*K, N*area)
        cols = cols.reshape(cols.shape[0], x.shape[0], -1).swapaxes(0, 1)
        top[0].dev_data[...] = cols.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            x_shape = (bottom[0].count_range(0, self.axis + 1) // bottom[0].shape[self.axis],) + \
                bottom[0].shape[self.axis:]
            dy = top[0].dev_diff.reshape(x_shape[0], top[0].shape[self.axis], -1).swapaxes(0, 1)
            dx = self.col2im(self.xp.ascontiguousarray(dy).reshape(dy.shape[0], -1), x_shape, self.out_shape)
            bottom[0].dev_diff[...] = dx.reshape(bottom[0].shape)


@register("DepthwiseConvolution")
class DepthwiseConvolutionLayer(ConvolutionLayer):
    """The MobileNet forks' depthwise layer (yonghenglh6/DepthwiseConvolution):
    a Convolution as its convolution_param says, group included."""


@register("ConvolutionDepthwise")
class ConvolutionDepthwiseLayer(ConvolutionLayer):
    """The other MobileNet forks' depthwise layer: one filter per input
    channel whatever num_output and group say (weights (C, 1, kh, kw))."""

    @property
    def conv_param(self):
        p = self.__dict__.get("_conv_param")
        return self.param.convolution_param if p is None else p

    def layer_setup(self, bottom, top):
        if bottom and bottom[0].num_axes > 1:
            channels = bottom[0].shape[1]
            p = type(self.param.convolution_param)()
            p.CopyFrom(self.param.convolution_param)
            p.num_output = p.group = channels
            self._conv_param = p
        super().layer_setup(bottom, top)

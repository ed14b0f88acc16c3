"""Convolution and Deconvolution: im2col (or col2im) plus one GEMM per group."""
from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register


def _pair(layer, p, name, default):
    """kernel/pad/stride/dilation as (h, w) from `name` or `name_h`/`name_w`."""
    values = list(getattr(p, name))
    has_hw = name != "dilation" and (p.HasField(name + "_h") or p.HasField(name + "_w"))
    if has_hw:
        if values:
            raise layer.error("give either %s or %s_h/%s_w, not both" % (name, name, name))
        return (int(getattr(p, name + "_h")) if p.HasField(name + "_h") else default,
                int(getattr(p, name + "_w")) if p.HasField(name + "_w") else default)
    if not values:
        return (default, default)
    if len(values) == 1:
        return (int(values[0]),) * 2
    if len(values) == 2:
        return (int(values[0]), int(values[1]))
    raise layer.error("%s takes 1 or 2 values for 2-D convolution, got %d" % (name, len(values)))


class _BaseConv(Layer):
    exact_bottoms = None
    min_bottoms = 1
    min_tops = 1
    transposed = False

    def layer_setup(self, bottom, top):
        p = self.param.convolution_param
        if len(top) != len(bottom):
            raise self.error("needs as many tops as bottoms (%d vs %d)" % (len(top), len(bottom)))
        if not p.HasField("num_output") or p.num_output == 0:
            raise self.error("convolution_param needs num_output > 0")
        self.kernel = self._kernel(p)
        self.pad = _pair(self, p, "pad", 0)
        self.stride = _pair(self, p, "stride", 1)
        self.dilation = _pair(self, p, "dilation", 1)
        if min(self.kernel) <= 0 or min(self.stride) <= 0 or min(self.dilation) <= 0:
            raise self.error("kernel, stride and dilation must be positive (kernel %s, stride %s, dilation %s)"
                             % (self.kernel, self.stride, self.dilation))
        self.axis = bottom[0].canonical_axis(p.axis)
        if bottom[0].num_axes - self.axis - 1 != 2:
            raise self.error("only 2 spatial axes are supported: bottom %s with axis %d"
                             % (bottom[0].shape, self.axis), ShapeError)
        self.group = int(p.group)
        channels = bottom[0].shape[self.axis]
        self.num_output = int(p.num_output)
        if channels % self.group or self.num_output % self.group:
            raise self.error("group %d must divide both the input channels (%d) and num_output (%d)"
                             % (self.group, channels, self.num_output), ShapeError)
        self.channels = channels
        kh, kw = self.kernel
        if self.transposed:
            wshape = (channels, self.num_output // self.group, kh, kw)
        else:
            wshape = (self.num_output, channels // self.group, kh, kw)
        self.bias_term = p.bias_term
        self.blobs = [Blob(wshape)]
        fill(self.blobs[0], p.weight_filler)
        if self.bias_term:
            self.blobs.append(Blob((self.num_output,)))
            fill(self.blobs[1], p.bias_filler)

    def _kernel(self, p):
        if p.HasField("kernel_h") or p.HasField("kernel_w"):
            if len(p.kernel_size):
                raise self.error("give either kernel_size or kernel_h/kernel_w, not both")
            if not (p.HasField("kernel_h") and p.HasField("kernel_w")):
                raise self.error("kernel_h and kernel_w must be given together")
            return (int(p.kernel_h), int(p.kernel_w))
        k = list(p.kernel_size)
        if not k:
            raise self.error("convolution_param needs kernel_size (or kernel_h and kernel_w)")
        if len(k) > 2:
            raise self.error("kernel_size takes 1 or 2 values for 2-D convolution, got %d" % len(k))
        return (int(k[0]), int(k[-1]))

    def _conv_out(self, h, w):
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = self.kernel, self.pad, self.stride, self.dilation
        return ((h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1,
                (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1)

    def _deconv_out(self, h, w):
        (kh, kw), (ph, pw), (sh, sw), (dh, dw) = self.kernel, self.pad, self.stride, self.dilation
        return (sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph, sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw)

    def reshape(self, bottom, top):
        for b in bottom:
            if b.num_axes != bottom[0].num_axes or b.shape[self.axis] != self.channels:
                raise self.error("bottom %s does not have %d channels on axis %d"
                                 % (b.shape, self.channels, self.axis), ShapeError)
            if b.shape != bottom[0].shape:
                raise self.error("all bottoms must have the same shape (%s vs %s)"
                                 % (bottom[0].shape, b.shape), ShapeError)
        h, w = bottom[0].shape[-2:]
        self.out_hw = self._deconv_out(h, w) if self.transposed else self._conv_out(h, w)
        if min(self.out_hw) <= 0:
            raise self.error("input %dx%d is too small for kernel %s, pad %s, stride %s, dilation %s"
                             % (h, w, self.kernel, self.pad, self.stride, self.dilation), ShapeError)
        lead = bottom[0].shape[:self.axis]
        for t in top:
            t.reshape(lead + (self.num_output,) + tuple(self.out_hw))
        self._cols = [None] * len(bottom)

    def _buffer(self, key, size, dtype):
        """Scratch memory kept across iterations, so big buffers are not
        allocated (and page-faulted) again on every forward."""
        bufs = self.__dict__.setdefault("_bufs", {})
        buf = bufs.get(key)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = bufs[key] = self.xp.empty(size, dtype=dtype)
        return buf[:size]

    def _as_nchw(self, a):
        return a.reshape((-1,) + a.shape[self.axis:])

    def _grouped_weight(self):
        w = self.blobs[0].dev_data
        return w.reshape(self.group, w.shape[0] // self.group, -1)


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
        size = x.shape[1] * self.kernel[0] * self.kernel[1] * x.shape[0] * self.out_hw[0] * self.out_hw[1]
        return self.ops.im2col(x, self.kernel, self.pad, self.stride, self.dilation, self.out_hw,
                               out=self._buffer(key, size, x.dtype))

    def forward(self, bottom, top):
        xp, g, m = self.xp, self.group, self.num_output
        wg = self._grouped_weight()                                   # (g, M/g, K/g)
        k = wg.shape[2] * g
        area = self.out_hw[0] * self.out_hw[1]
        for i, (b, t) in enumerate(zip(bottom, top)):
            x = self._as_nchw(b.dev_data)
            y_all = t.dev_data.reshape(x.shape[0], m, area)
            chunks = self._chunks(x.shape[0], k * area)
            for s0, s1 in chunks:
                cols = self._im2col(x[s0:s1], ("cols", i))
                y = self._buffer("y", m * cols.shape[1], x.dtype).reshape(g, m // g, cols.shape[1])
                xp.matmul(wg, cols.reshape(g, k // g, -1), out=y)
                y = y.reshape(m, s1 - s0, area)
                if self.bias_term:
                    y += self.blobs[1].dev_data[:, None, None]
                y_all[s0:s1] = y.transpose(1, 0, 2)
            # With one chunk, backward can reuse these columns.
            self._cols[i] = cols if len(chunks) == 1 else None

    def backward(self, top, propagate_down, bottom):
        ops, xp, g, m = self.ops, self.xp, self.group, self.num_output
        wg = self._grouped_weight()
        k = wg.shape[2] * g
        area = self.out_hw[0] * self.out_hw[1]
        want_w = self.param_propagate_down[0]
        want_b = self.bias_term and self.param_propagate_down[1]
        for i, (b, t) in enumerate(zip(bottom, top)):
            x = self._as_nchw(b.dev_data)
            dy_all = self._as_nchw(t.dev_diff).reshape(x.shape[0], m, area)
            dx_all = self._as_nchw(b.dev_diff) if propagate_down[i] else None
            for s0, s1 in self._chunks(x.shape[0], k * area):
                n = s1 - s0
                dyt = self._buffer("dyt", m * n * area, x.dtype).reshape(m, n, area)
                dyt[...] = dy_all[s0:s1].transpose(1, 0, 2)
                dyg = dyt.reshape(g, m // g, n * area)
                if want_b:
                    self.blobs[1].dev_diff[...] += dyt.sum(axis=(1, 2))
                if want_w:
                    cols = self._cols[i]
                    if cols is None:
                        cols = self._im2col(x[s0:s1], ("cols", i))
                    colsg = cols.reshape(g, k // g, -1)
                    self.blobs[0].dev_diff[...] += xp.matmul(dyg, colsg.transpose(0, 2, 1)).reshape(
                        self.blobs[0].shape)
                if dx_all is not None:
                    dcols = self._buffer("dcols", k * n * area, x.dtype).reshape(g, k // g, n * area)
                    xp.matmul(wg.transpose(0, 2, 1), dyg, out=dcols)
                    dx_all[s0:s1] = ops.col2im(dcols.reshape(k, -1), x[s0:s1].shape, self.kernel, self.pad,
                                               self.stride, self.dilation, self.out_hw)
            self._cols[i] = None


@register("Deconvolution")
class DeconvolutionLayer(_BaseConv):
    transposed = True

    def forward(self, bottom, top):
        ops, xp, g = self.ops, self.xp, self.group
        w = self.blobs[0].dev_data.reshape(g, self.channels // g, -1)     # (g, C/g, M/g*k*k)
        for b, t in zip(bottom, top):
            x = self._as_nchw(b.dev_data)
            n, c, h, wd = x.shape
            xt = xp.ascontiguousarray(x.reshape(n, c, -1).transpose(1, 0, 2)).reshape(g, c // g, -1)
            cols = xp.matmul(w.transpose(0, 2, 1), xt).reshape(-1, n * h * wd)
            y = ops.col2im(cols, (n, self.num_output) + tuple(self.out_hw), self.kernel, self.pad,
                           self.stride, self.dilation, (h, wd))
            if self.bias_term:
                y = y + self.blobs[1].dev_data[None, :, None, None]
            t.dev_data[...] = y.reshape(t.shape)

    def backward(self, top, propagate_down, bottom):
        ops, xp, g = self.ops, self.xp, self.group
        w = self.blobs[0].dev_data.reshape(g, self.channels // g, -1)
        for i, (b, t) in enumerate(zip(bottom, top)):
            dy = self._as_nchw(t.dev_diff)
            x = self._as_nchw(b.dev_data)
            n, c, h, wd = x.shape
            if self.bias_term and self.param_propagate_down[1]:
                self.blobs[1].dev_diff[...] += dy.sum(axis=(0, 2, 3))
            cols = ops.im2col(dy, self.kernel, self.pad, self.stride, self.dilation, (h, wd))
            colsg = cols.reshape(g, cols.shape[0] // g, -1)                  # (g, M/g*k*k, N*H*W)
            if self.param_propagate_down[0]:
                xt = xp.ascontiguousarray(x.reshape(n, c, -1).transpose(1, 0, 2)).reshape(g, c // g, -1)
                self.blobs[0].dev_diff[...] += xp.matmul(xt, colsg.transpose(0, 2, 1)).reshape(
                    self.blobs[0].shape)
            if propagate_down[i]:
                dx = xp.matmul(w, colsg).reshape(c, n, h, wd).transpose(1, 0, 2, 3)
                b.dev_diff[...] = dx.reshape(b.shape)

"""The device math on the GPU: our CUDA kernels (kernels/cuda/*.cu) launched
through CuPy, GEMMs through cuBLAS (cupy.matmul). Every function has the
signature of its numpy twin in kernels/cpu.py.

CudaOps is written against an array module and a kernel loader, so the CPU
emulation harness in tests/ runs these very launchers, with numpy arrays and
the same .cu sources compiled by g++."""
import os

import numpy as np

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cuda")
SOURCES = ["im2col.cu", "im2col_nd.cu", "pooling.cu", "lrn.cu", "softmax_loss.cu", "indexing.cu", "lstm_unit.cu",
           "forks.cu"]
BLOCK = 256
MAX_BLOCKS = 65535


def read_source(name):
    with open(os.path.join(HERE, name)) as f:
        return f.read()


def _i(v):
    return np.int32(v)


def _n(v):
    return np.int64(v)


class CudaOps:
    """kernel(name) returns a callable kernel((grid,), (block,), args)."""

    CONV_CHUNK_BYTES = 1 << 62     # the device keeps the whole batch's columns

    def __init__(self, xp, kernel):
        self.xp = xp
        self._kernel = kernel

    def _launch(self, name, count, *args):
        grid = max(1, min(MAX_BLOCKS, (int(count) + BLOCK - 1) // BLOCK))
        self._kernel(name)((grid,), (BLOCK,), (_n(count),) + args)

    def _f32(self, a):
        return self.xp.ascontiguousarray(a, dtype=self.xp.float32)

    def _out(self, out, shape):
        """Where a kernel can write its result: `out` itself when it is a
        contiguous float32 array of that shape, else a new array."""
        shape = tuple(shape)
        if out is not None and out.dtype == self.xp.float32 and out.flags.c_contiguous and out.shape == shape:
            return out
        return self.xp.empty(shape, dtype=self.xp.float32)

    def _into(self, out, result):
        if out is None or out is result:
            return result
        out[...] = result
        return out

    # -- GEMM -----------------------------------------------------------------
    def add_matmul(self, a, b, out):
        out += self.xp.matmul(a, b)
        return out

    # -- convolution ----------------------------------------------------------
    def im2col(self, x, kernel, pad, stride, dilation, out_hw, out=None):
        x = self._f32(x)
        n, c, h, w = x.shape
        (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out_hw
        size = c * kh * kw * n * oh * ow
        cols = out[:size] if out is not None and out.size >= size and out.dtype == x.dtype else \
            self.xp.empty(size, dtype=x.dtype)
        self._launch("im2col", c * n * oh * ow, x, _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(ph), _i(pw),
                     _i(sh), _i(sw), _i(dh), _i(dw), _i(oh), _i(ow), cols)
        return cols.reshape(c * kh * kw, n * oh * ow)

    def col2im(self, cols, x_shape, kernel, pad, stride, dilation, out_hw):
        n, c, h, w = x_shape
        (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out_hw
        x = self.xp.empty(tuple(x_shape), dtype=self.xp.float32)
        self._launch("col2im", x.size, self._f32(cols), _i(n), _i(c), _i(h), _i(w), _i(kh), _i(kw), _i(ph),
                     _i(pw), _i(sh), _i(sw), _i(dh), _i(dw), _i(oh), _i(ow), x)
        return x

    def _ints(self, values):
        return self.xp.asarray(np.asarray(values, dtype=np.int32))

    def _nd_args(self, n, c, size, kernel, pad, stride, dilation, out_shape):
        return (_i(n), _i(c), _i(len(size))) + tuple(self._ints(v) for v in (size, kernel, pad, stride, dilation,
                                                                             out_shape))

    def im2col_nd(self, x, kernel, pad, stride, dilation, out_shape, out=None):
        x = self._f32(x)
        n, c, size = x.shape[0], x.shape[1], x.shape[2:]
        taps, area = int(np.prod(kernel)), int(np.prod(out_shape))
        total = c * taps * n * area
        cols = out[:total] if out is not None and out.size >= total and out.dtype == x.dtype else \
            self.xp.empty(total, dtype=x.dtype)
        self._launch("im2col_nd", c * n * area, x, *self._nd_args(n, c, size, kernel, pad, stride, dilation,
                                                                   out_shape), cols)
        return cols.reshape(c * taps, n * area)

    def col2im_nd(self, cols, x_shape, kernel, pad, stride, dilation, out_shape):
        x = self.xp.empty(tuple(x_shape), dtype=self.xp.float32)
        self._launch("col2im_nd", x.size, self._f32(cols), *self._nd_args(x_shape[0], x_shape[1], x_shape[2:],
                                                                          kernel, pad, stride, dilation,
                                                                          out_shape), x)
        return x

    # -- pooling ----------------------------------------------------------------
    def _pool_args(self, shape, kernel, pad, stride, out_hw):
        n, c, h, w = shape
        (kh, kw), (ph, pw), (sh, sw), (oh, ow) = kernel, pad, stride, out_hw
        return (_i(c), _i(h), _i(w), _i(kh), _i(kw), _i(ph), _i(pw), _i(sh), _i(sw), _i(oh), _i(ow))

    def depthwise_conv_forward(self, x, w, kernel, pad, stride, dilation, out_hw, out):
        """The same products through im2col and one small GEMM per channel."""
        n, c = x.shape[:2]
        k = kernel[0] * kernel[1]
        cols = self.im2col(x, kernel, pad, stride, dilation, out_hw).reshape(c, k, -1)
        y = self.xp.matmul(w.reshape(c, 1, k), cols).reshape(c, n, -1)
        out[...] = y.transpose(1, 0, 2).reshape(out.shape)
        return out

    def depthwise_conv_backward(self, dy, x, w, kernel, pad, stride, dilation, out_hw, dx=None, dw=None):
        n, c = x.shape[:2]
        k = kernel[0] * kernel[1]
        dyt = self.xp.ascontiguousarray(dy.reshape(n, c, -1).transpose(1, 0, 2)).reshape(c, 1, -1)
        if dw is not None:
            cols = self.im2col(x, kernel, pad, stride, dilation, out_hw).reshape(c, k, -1)
            dw += self.xp.matmul(dyt, cols.transpose(0, 2, 1)).reshape(dw.shape)
        if dx is not None:
            dcols = self.xp.matmul(w.reshape(c, k, 1), dyt).reshape(c * k, -1)
            dx[...] = self.col2im(dcols, x.shape, kernel, pad, stride, dilation, out_hw)
        return dx, dw

    def max_pool_forward(self, x, kernel, pad, stride, out_hw):
        x = self._f32(x)
        y = self.xp.empty(x.shape[:2] + tuple(out_hw), dtype=self.xp.float32)
        self._launch("max_pool_forward", y.size, x, *self._pool_args(x.shape, kernel, pad, stride, out_hw), y)
        return y

    def max_pool_argmax(self, x, y, kernel, pad, stride, out_hw):
        index = self.xp.empty(y.shape, dtype=self.xp.int32)
        self._launch("max_pool_argmax", y.size, self._f32(x), self._f32(y),
                     *self._pool_args(x.shape, kernel, pad, stride, out_hw), index)
        return index

    def max_pool_backward(self, dy, x, y, kernel, pad, stride, out_hw, out=None):
        index = self.max_pool_argmax(x, y, kernel, pad, stride, out_hw)
        dx = self._out(out, x.shape)
        self._launch("max_pool_backward", dx.size, self._f32(dy), index,
                     *self._pool_args(x.shape, kernel, pad, stride, out_hw), dx)
        return self._into(out, dx)

    def ave_pool_forward(self, x, kernel, pad, stride, out_hw):
        x = self._f32(x)
        y = self.xp.empty(x.shape[:2] + tuple(out_hw), dtype=self.xp.float32)
        self._launch("ave_pool_forward", y.size, x, *self._pool_args(x.shape, kernel, pad, stride, out_hw), y)
        return y

    def ave_pool_backward(self, dy, x_shape, kernel, pad, stride, out_hw, out=None):
        dx = self._out(out, x_shape)
        self._launch("ave_pool_backward", dx.size, self._f32(dy),
                     *self._pool_args(x_shape, kernel, pad, stride, out_hw), dx)
        return self._into(out, dx)

    # -- LRN ----------------------------------------------------------------------
    def lrn_across_forward(self, x, size, alpha, beta, k):
        x = self._f32(x)
        c, hw = x.shape[1], int(np.prod(x.shape[2:]))
        scale = self.xp.empty(x.shape, dtype=self.xp.float32)
        self._launch("lrn_scale", x.size, x, _i(c), _i(hw), _i(size), np.float32(alpha / size), np.float32(k),
                     scale)
        y = self.xp.empty(x.shape, dtype=self.xp.float32)
        self._launch("lrn_output", x.size, x, scale, np.float32(-beta), y)
        return y, scale

    def lrn_across_backward(self, dy, x, y, scale, size, alpha, beta):
        c, hw = x.shape[1], int(np.prod(x.shape[2:]))
        dx = self.xp.empty(x.shape, dtype=self.xp.float32)
        self._launch("lrn_diff", x.size, self._f32(dy), self._f32(x), self._f32(y), self._f32(scale), _i(c),
                     _i(hw), _i(size), np.float32(-beta), np.float32(2.0 * alpha * beta / size), dx)
        return dx

    # -- softmax loss -----------------------------------------------------------------
    def softmax_loss_forward(self, prob, label, ignore_label):
        outer, classes, inner = prob.shape
        loss = self.xp.empty((outer, inner), dtype=self.xp.float32)
        valid = self.xp.empty((outer, inner), dtype=self.xp.float32)
        self._launch("softmax_loss_forward", loss.size, self._f32(prob), self._f32(label), _i(classes), _i(inner),
                     _i(ignore_label is not None), _i(ignore_label or 0), loss, valid)
        # Device scalars: no copy to the host inside forward.
        return loss.sum(dtype=self.xp.float64), valid.sum(dtype=self.xp.float64)

    def softmax_loss_backward(self, prob, label, ignore_label):
        outer, classes, inner = prob.shape
        dx = self.xp.empty(prob.shape, dtype=self.xp.float32)
        self._launch("softmax_loss_backward", dx.size, self._f32(prob), self._f32(label), _i(classes), _i(inner),
                     _i(ignore_label is not None), _i(ignore_label or 0), dx)
        return dx

    # -- indexing layers -------------------------------------------------------------
    def tile_forward(self, x, outer, inner, tiles):
        y = self.xp.empty((outer, tiles * inner), dtype=self.xp.float32)
        self._launch("tile_forward", y.size, self._f32(x), _i(inner), _i(tiles), y)
        return y

    def tile_backward(self, dy, outer, inner, tiles):
        dx = self.xp.empty((outer, inner), dtype=self.xp.float32)
        self._launch("tile_backward", dx.size, self._f32(dy), _i(inner), _i(tiles), dx)
        return dx

    def batch_reindex_forward(self, x, index):
        y = self.xp.empty((index.size, x.shape[1]), dtype=self.xp.float32)
        self._launch("batch_reindex_forward", y.size, self._f32(x), self._f32(index), _i(x.shape[1]), y)
        return y

    def batch_reindex_backward(self, dy, index, n):
        dx = self.xp.empty((n, dy.shape[1]), dtype=self.xp.float32)
        self._launch("batch_reindex_backward", dx.size, self._f32(dy), self._f32(index), _i(index.size),
                     _i(dy.shape[1]), dx)
        return dx

    def embed_forward(self, index, weight, bias):
        rows, dim = weight.shape
        y = self.xp.empty((index.size, dim), dtype=self.xp.float32)
        bias = self.xp.zeros(dim, dtype=self.xp.float32) if bias is None else self._f32(bias)
        self._launch("embed_forward", y.size, self._f32(index), self._f32(weight), bias, _i(rows), _i(dim), y)
        return y

    def embed_backward(self, dy, index, weight_diff):
        rows, dim = weight_diff.shape
        self._launch("embed_backward", dy.size, self._f32(dy), self._f32(index), _i(rows), _i(dim), weight_diff)

    def argmax_topk(self, x, top_k):
        outer, dim, inner = x.shape
        index = self.xp.empty((outer, top_k, inner), dtype=self.xp.float32)
        value = self.xp.empty((outer, top_k, inner), dtype=self.xp.float32)
        self._launch("argmax_topk", outer * inner, self._f32(x), _i(dim), _i(inner), _i(top_k), index, value)
        return index, value

    # -- LSTM unit -----------------------------------------------------------------------
    def lstm_unit_forward(self, c_prev, x, cont):
        c = self.xp.empty(c_prev.shape, dtype=self.xp.float32)
        h = self.xp.empty(c_prev.shape, dtype=self.xp.float32)
        self._launch("lstm_unit_forward", c.size, self._f32(c_prev), self._f32(x), self._f32(cont),
                     _i(c_prev.shape[1]), c, h)
        return c, h

    def lstm_unit_backward(self, c_prev, x, cont, c, dc, dh):
        dc_prev = self.xp.empty(c_prev.shape, dtype=self.xp.float32)
        dx = self.xp.empty(x.shape, dtype=self.xp.float32)
        self._launch("lstm_unit_backward", c.size, self._f32(c_prev), self._f32(x), self._f32(cont), self._f32(c),
                     self._f32(dc), self._f32(dh), _i(c_prev.shape[1]), dc_prev, dx)
        return dc_prev, dx

    # -- the forks' layers --------------------------------------------------------------
    def _ints(self, values):
        return self.xp.asarray(np.asarray(values, np.int32))

    def permute(self, x, order):
        x = self._f32(x)
        shape = x.shape
        new_shape = tuple(shape[a] for a in order)
        steps = lambda s: [int(np.prod(s[i + 1:], dtype=np.int64)) for i in range(len(s))]
        y = self.xp.empty(new_shape, dtype=self.xp.float32)
        self._launch("permute", y.size, x, self._ints(order), self._ints(steps(shape)), self._ints(steps(new_shape)),
                     _i(len(shape)), y)
        return y

    def decode_bboxes(self, loc, prior, code_type, variance_in_target):
        loc, prior = self._f32(loc), self._f32(prior)
        out = self.xp.empty(loc.shape, dtype=self.xp.float32)
        self._launch("decode_bboxes", out.size, loc, prior, _i(code_type), _i(1 if variance_in_target else 0),
                     _i(loc.shape[1]), _i(loc.shape[2]), out)
        return out

    def mbox_conf_loss(self, conf, labels, softmax):
        conf = self._f32(conf)
        labels = self.xp.ascontiguousarray(self.xp.asarray(labels), dtype=self.xp.int32)
        loss = self.xp.empty(conf.shape[:-1], dtype=self.xp.float32)
        self._launch("mbox_conf_loss", loss.size, conf, labels, _i(conf.shape[-1]), _i(1 if softmax else 0), loss)
        return loss

    def roi_pool_forward(self, x, rois, scale, pooled):
        x, rois = self._f32(x), self._f32(rois)
        n, c, h, w = x.shape
        y = self.xp.empty((rois.shape[0], c) + tuple(pooled), dtype=self.xp.float32)
        arg = self.xp.empty(y.shape, dtype=self.xp.float32)
        self._launch("roi_pool_forward", y.size, x, np.float32(scale), _i(c), _i(h), _i(w), _i(pooled[0]),
                     _i(pooled[1]), rois, y, arg)
        return y, arg

    def roi_pool_backward(self, dy, argmax, rois, x_shape):
        n, c, h, w = x_shape
        dx = self.xp.empty(tuple(x_shape), dtype=self.xp.float32)
        self._launch("roi_pool_backward", dx.size, self._f32(dy), self._f32(argmax), _i(rois.shape[0]), _i(c), _i(h),
                     _i(w), _i(dy.shape[2]), _i(dy.shape[3]), self._f32(rois), dx)
        return dx

    def psroi_pool_forward(self, x, rois, scale, dim, group):
        x, rois = self._f32(x), self._f32(rois)
        n, c, h, w = x.shape
        y = self.xp.empty((rois.shape[0], dim, group, group), dtype=self.xp.float32)
        self._launch("psroi_pool_forward", y.size, x, np.float32(scale), _i(c), _i(h), _i(w), _i(group), _i(dim),
                     rois, y)
        return y

    def psroi_pool_backward(self, dy, rois, scale, dim, group, x_shape):
        n, c, h, w = x_shape
        dx = self.xp.zeros(tuple(x_shape), dtype=self.xp.float32)
        self._launch("psroi_pool_backward", dy.size, self._f32(dy), np.float32(scale), _i(c), _i(h), _i(w), _i(group),
                     _i(dim), self._f32(rois), dx)
        return dx

    def interp_forward(self, x, crop, out_hw):
        x = self._f32(x)
        n, c, h, w = x.shape
        off, eh, ew = crop
        y = self.xp.empty((n, c) + tuple(out_hw), dtype=self.xp.float32)
        self._launch("interp_forward", y.size, x, _i(h), _i(w), _i(off), _i(eh), _i(ew), _i(out_hw[0]), _i(out_hw[1]), y)
        return y

    def interp_backward(self, dy, x_shape, crop):
        n, c, h, w = x_shape
        off, eh, ew = crop
        dx = self.xp.zeros(tuple(x_shape), dtype=self.xp.float32)
        self._launch("interp_backward", dy.size, self._f32(dy), _i(h), _i(w), _i(off), _i(eh), _i(ew), _i(dy.shape[2]),
                     _i(dy.shape[3]), dx)
        return dx

    def upsample_forward(self, x, mask, out_hw):
        x, mask = self._f32(x), self._f32(mask)
        n, c, h, w = x.shape
        y = self.xp.zeros((n, c) + tuple(out_hw), dtype=self.xp.float32)
        bad = self.xp.zeros(1, dtype=self.xp.float32)
        self._launch("upsample_forward", x.size, x, mask, _i(h * w), _i(out_hw[0] * out_hw[1]), y, bad)
        return y, int(float(bad[0]))

    def upsample_backward(self, dy, mask):
        mask = self._f32(mask)
        n, c, h, w = mask.shape
        dx = self.xp.empty(mask.shape, dtype=self.xp.float32)
        self._launch("upsample_backward", dx.size, self._f32(dy), mask, _i(h * w), _i(dy.shape[2] * dy.shape[3]), dx)
        return dx

    # -- solver ----------------------------------------------------------------------
    @staticmethod
    def chunked(fn, n):
        fn(0, n)     # element-wise work on the device needs no blocking


def cupy_ops():
    """The kernel table for the current CUDA device."""
    import cupy
    common = read_source("common.cuh")
    code = common + "\n".join(read_source(s) for s in SOURCES)
    module = cupy.RawModule(code=code, options=("-std=c++14",))
    cache = {}

    def kernel(name):
        if name not in cache:
            cache[name] = module.get_function(name)
        return cache[name]
    return CudaOps(cupy, kernel)

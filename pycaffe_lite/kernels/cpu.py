"""The device math on the CPU, in numpy, vectorized over the batch.

Each function here has a twin of the same signature in the GPU kernel table.
Images are (N, C, H, W); `kernel`, `pad`, `stride`, `dilation` are (h, w) pairs
and `out_hw` is the output (height, width) the layer computed."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..scratch import Buffers

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


# ---------------------------------------------------------------- threads

# numpy releases the GIL inside its loops, so big element-wise work split into
# disjoint slices runs on every core (the BLAS already does for GEMM).
# OMP_NUM_THREADS caps them, as it does the BLAS (one thread per MPI rank).
_WORKERS = max(1, min(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1), os.cpu_count() or 1, 8))
_pool = ThreadPoolExecutor(_WORKERS) if _WORKERS > 1 else None
_MIN_PARALLEL = 1 << 18   # elements; below this, threads cost more than they save


def set_workers(n):
    """Split element-wise work over n threads from now on (caffe.set_num_threads)."""
    global _WORKERS, _pool
    old, _WORKERS = _pool, max(1, int(n))
    _pool = ThreadPoolExecutor(_WORKERS) if _WORKERS > 1 else None
    if old is not None:
        old.shutdown(wait=True)


def workers():
    return _WORKERS


def _run_split(fn, n, work):
    """fn(start, stop) over [0, n) in up to _WORKERS disjoint ranges."""
    parts = min(_WORKERS, n) if _pool is not None and work >= _MIN_PARALLEL else 1
    if parts <= 1:
        fn(0, n)
        return
    bounds = [n * k // parts for k in range(parts + 1)]
    futures = [_pool.submit(fn, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


CHUNK = 1 << 17   # elements per slice of element-wise solver work: a few arrays of it stay in L2,
                  # and slices this long keep the per-call cost of numpy small


def chunked(fn, n):
    """fn(start, stop) over [0, n) in cache-sized slices, split across threads."""
    def span(a, b):
        for s in range(a, b, CHUNK):
            fn(s, min(b, s + CHUNK))
    if n <= CHUNK:
        fn(0, n)
        return
    _run_split(lambda a, b: span(a * CHUNK, min(n, b * CHUNK)), (n + CHUNK - 1) // CHUNK, n)


_buffers = Buffers()


def _scratch(key, shape, dtype):
    """A buffer reused across calls; callers must not hold it across calls."""
    return _buffers.get(key, int(np.prod(shape)), np.dtype(dtype), np.empty).reshape(shape)


# ---------------------------------------------------------------- GEMM

ADD_MATMUL_BLOCK_BYTES = 8 << 20


def add_matmul(a, b, out):
    """out += a @ b (batched over leading axes, as matmul), a block of rows at
    a time through a small reused buffer, not a temporary of out's size (151 MB
    for CaffeNet's fc6). numpy's own BLAS does the products: a second BLAS
    (scipy's) would bring a second pool of threads to fight this one's."""
    rows = out.shape[-2]
    row_bytes = max(1, out.nbytes // max(1, rows))
    step = max(1, ADD_MATMUL_BLOCK_BYTES // row_bytes)
    if step >= rows:
        out += np.matmul(a, b)
        return out
    buf = _scratch("add_matmul", (step * (out.size // rows),), out.dtype)
    for r in range(0, rows, step):
        part = out[..., r:r + step, :]
        product = buf[:part.size].reshape(part.shape)
        np.matmul(a[..., r:r + step, :], b, out=product)
        part += product
    return out


# ---------------------------------------------------------------- convolution

# Convolution works through the batch in chunks whose im2col columns take about
# this many bytes, so that the GEMM reads them back from cache.
CONV_CHUNK_BYTES = 16 << 20


def _padded(x, pad, extra=(0, 0), fill=0.0):
    """x padded by `pad` on top/left and `pad + extra` on bottom/right."""
    (ph, pw), (eh, ew) = pad, extra
    if not (ph or pw or eh or ew):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + 2 * ph + eh, w + 2 * pw + ew), fill, dtype=x.dtype)
    out[:, :, ph:ph + h, pw:pw + w] = x
    return out


def im2col(x, kernel, pad, stride, dilation, out_hw, out=None):
    """Columns (C*kh*kw, N*oh*ow): row (c, i, j) holds, for every image and
    output position, the input value under kernel tap (i, j) of channel c.
    One matrix for the whole batch, so convolution is one GEMM per group.
    `out`, when given, is a buffer of that size to fill (saves page faults)."""
    n, c = x.shape[:2]
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, stride, dilation, out_hw
    xt = _padded(x, pad).transpose(1, 0, 2, 3)
    size = c * kh * kw * n * oh * ow
    cols = np.empty(size, x.dtype) if out is None or out.size < size or out.dtype != x.dtype else out[:size]
    cols = cols.reshape(c, kh, kw, n, oh, ow)

    def rows(start, stop):
        for i in range(start, stop):
            for j in range(kw):
                cols[:, i, j] = xt[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                                   j * dw:j * dw + sw * (ow - 1) + 1:sw]
    _run_split(rows, kh, size)
    return cols.reshape(c * kh * kw, n * oh * ow)


def col2im(cols, x_shape, kernel, pad, stride, dilation, out_hw):
    """The adjoint of im2col: sum every column entry back onto its input pixel."""
    n, c, h, w = x_shape
    (kh, kw), (ph, pw), (sh, sw), (dh, dw), (oh, ow) = kernel, pad, stride, dilation, out_hw
    cols = cols.reshape(c, kh, kw, n, oh, ow)
    acc = np.zeros((c, n, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)

    def channels(start, stop):
        for i in range(kh):
            for j in range(kw):
                acc[start:stop, :, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                    j * dw:j * dw + sw * (ow - 1) + 1:sw] += cols[start:stop, i, j]
    _run_split(channels, c, cols.size)
    return acc[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)


def _tap_view(a, i, j, kernel, stride, dilation, out_hw):
    (sh, sw), (dh, dw), (oh, ow) = stride, dilation, out_hw
    return a[..., i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]


def depthwise_conv_forward(x, w, kernel, pad, stride, dilation, out_hw, out):
    """Convolution with one filter per channel (group = channels =
    num_output): out[n, c] = sum over taps of w[c, tap] * x[n, c] under the
    tap, tap by tap over channel slices, without im2col. w is (C, 1, kh, kw)."""
    kh, kw = kernel
    c = x.shape[1]
    xp = _padded(x, pad)
    taps = w.reshape(c, kh * kw)

    def channels(a, b):
        y = out[:, a:b]
        product = np.empty(y.shape, dtype=out.dtype)
        for t in range(kh * kw):
            view = _tap_view(xp[:, a:b], t // kw, t % kw, kernel, stride, dilation, out_hw)
            weight = taps[a:b, t].reshape(1, b - a, 1, 1)
            if t == 0:
                np.multiply(view, weight, out=y)
            else:
                np.multiply(view, weight, out=product)
                y += product
    _run_split(channels, c, out.size * kh * kw)
    return out


def depthwise_conv_backward(dy, x, w, kernel, pad, stride, dilation, out_hw, dx=None, dw=None):
    """Diffs of depthwise_conv_forward: dw (C, 1, kh, kw) += the per-channel
    sums of dy times each tap's input, and dx (when given) = the taps' dy
    weighted back onto the input."""
    kh, kw = kernel
    (ph, pw) = pad
    n, c, h, wd = x.shape
    xp = _padded(x, pad)
    taps = w.reshape(c, kh * kw)
    grad = None if dw is None else dw.reshape(c, kh * kw)
    acc = None if dx is None else np.zeros(xp.shape, dtype=dy.dtype)

    def channels(a, b):
        product = np.empty((n, b - a) + tuple(out_hw), dtype=dy.dtype)
        for t in range(kh * kw):
            i, j = t // kw, t % kw
            if grad is not None:
                np.multiply(dy[:, a:b], _tap_view(xp[:, a:b], i, j, kernel, stride, dilation, out_hw), out=product)
                grad[a:b, t] += product.sum(axis=(0, 2, 3))
            if acc is not None:
                np.multiply(dy[:, a:b], taps[a:b, t].reshape(1, b - a, 1, 1), out=product)
                view = _tap_view(acc[:, a:b], i, j, kernel, stride, dilation, out_hw)
                view += product
    _run_split(channels, c, dy.size * kh * kw)
    if acc is not None:
        dx[...] = acc[:, :, ph:ph + h, pw:pw + wd]
    return dx, dw


# ---------------------------------------------------------------- pooling

def _window_extra(h, w, kernel, pad, stride, out_hw):
    """How far the last window reaches past the bottom/right padding."""
    (kh, kw), (ph, pw), (sh, sw), (oh, ow) = kernel, pad, stride, out_hw
    return (max(0, (oh - 1) * sh + kh - h - 2 * ph), max(0, (ow - 1) * sw + kw - w - 2 * pw))


def _taps(xp, kernel, stride, out_hw):
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]


POOL_STEP_BYTES = 4 << 20


def max_pool_forward(x, kernel, pad, stride, out_hw):
    """Max over each window; padding never wins. The max is taken down the
    window's rows first, then across its columns: (kh - 1) + (kw - 1) passes
    instead of kh * kw - 1, and the same values (a max does not round)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    xp = _padded(x, pad, _window_extra(h, w, kernel, pad, stride, out_hw), fill=-np.inf)
    y = np.empty((n, c) + tuple(out_hw), dtype=x.dtype)

    # the row maxima of a few images at a time: a small buffer, in cache
    per = max(1, POOL_STEP_BYTES // max(1, c * oh * xp.shape[3] * x.itemsize))

    def images(a, b):
        rows = np.empty((min(per, b - a), c, oh, xp.shape[3]), dtype=x.dtype)
        for s in range(a, b, per):
            e = min(b, s + per)
            part = rows[:e - s]
            part[...] = xp[s:e, :, 0:sh * (oh - 1) + 1:sh]
            for i in range(1, kh):
                np.maximum(part, xp[s:e, :, i:i + sh * (oh - 1) + 1:sh], out=part)
            out = y[s:e]
            out[...] = part[..., 0:sw * (ow - 1) + 1:sw]
            for j in range(1, kw):
                np.maximum(out, part[..., j:j + sw * (ow - 1) + 1:sw], out=out)
    _run_split(images, n, x.size)
    return y


def max_pool_argmax(x, y, kernel, pad, stride, out_hw):
    """Where each max came from, as h * W + w; on ties the first in row-major
    window order, as Caffe keeps it."""
    n, c, h, w = x.shape
    (ph, pw), (sh, sw), (oh, ow) = pad, stride, out_hw
    xp = _padded(x, pad, _window_extra(h, w, kernel, pad, stride, out_hw), fill=-np.inf)
    index = np.full(y.shape, -1, dtype=np.int64)
    base = ((np.arange(oh) * sh - ph)[:, None] * w + (np.arange(ow) * sw - pw)[None, :])
    for i, j, v in _taps(xp, kernel, stride, out_hw):
        hit = (v == y) & (index < 0)
        np.copyto(index, np.broadcast_to(base + (i * w + j), index.shape), where=hit)
    return index


def max_pool_backward(dy, x, y, kernel, pad, stride, out_hw, out=None):
    """Route each output's diff to the first input in its window that equals
    the max (the same element forward picked). `out`, when given, receives
    the result (the layer passes its bottom diff: no temporary, no copy)."""
    n, c, h, w = x.shape
    (ph, pw) = pad
    eh, ew = _window_extra(h, w, kernel, pad, stride, out_hw)
    xp = _padded(x, pad, (eh, ew), fill=-np.inf)
    dx = np.empty(x.shape, dtype=dy.dtype) if out is None else out
    acc = dx if xp is x else _scratch("pool_acc", xp.shape, dy.dtype)

    def images(s, e):
        ys, dys = y[s:e], dy[s:e]
        pending = np.ones(ys.shape, dtype=bool)
        hit = np.empty(ys.shape, dtype=bool)
        share = np.empty(ys.shape, dtype=dy.dtype)
        acc[s:e] = 0
        for (_, _, v), (_, _, a) in zip(_taps(xp[s:e], kernel, stride, out_hw),
                                        _taps(acc[s:e], kernel, stride, out_hw)):
            np.equal(v, ys, out=hit)
            hit &= pending
            pending ^= hit
            np.multiply(dys, hit, out=share)
            a += share
        if acc is not dx:
            dx[s:e] = acc[s:e, :, ph:ph + h, pw:pw + w]
    _run_split(images, n, x.size)
    return dx


def ave_pool_divisor(h, w, kernel, pad, stride, out_hw):
    """Caffe's AVE divisor: the window clipped to the padded extent."""
    (kh, kw), (ph, pw), (sh, sw), (oh, ow) = kernel, pad, stride, out_hw
    hs = np.arange(oh) * sh - ph
    ws = np.arange(ow) * sw - pw
    size_h = np.minimum(hs + kh, h + ph) - hs
    size_w = np.minimum(ws + kw, w + pw) - ws
    return (size_h[:, None] * size_w[None, :]).astype(np.float32)


def ave_pool_forward(x, kernel, pad, stride, out_hw):
    n, c, h, w = x.shape
    xp = _padded(x, pad, _window_extra(h, w, kernel, pad, stride, out_hw))
    acc = np.zeros((n, c) + tuple(out_hw), dtype=x.dtype)
    for _, _, v in _taps(xp, kernel, stride, out_hw):
        acc += v
    return acc / ave_pool_divisor(h, w, kernel, pad, stride, out_hw)


def ave_pool_backward(dy, x_shape, kernel, pad, stride, out_hw, out=None):
    n, c, h, w = x_shape
    (ph, pw) = pad
    eh, ew = _window_extra(h, w, kernel, pad, stride, out_hw)
    padded = (n, c, h + 2 * ph + eh, w + 2 * pw + ew)
    dx = np.empty(tuple(x_shape), dtype=dy.dtype) if out is None else out
    acc = dx if padded == tuple(x_shape) else _scratch("pool_acc", padded, dy.dtype)
    acc[...] = 0
    share = dy / ave_pool_divisor(h, w, kernel, pad, stride, out_hw)
    for _, _, v in _taps(acc, kernel, stride, out_hw):
        v += share
    if acc is not dx:
        dx[...] = acc[:, :, ph:ph + h, pw:pw + w]
    return dx


# ---------------------------------------------------------------- LRN

def _channel_window_sum(a, size):
    """Sum over the `size` channels centred on each channel (zero outside)."""
    pre = (size - 1) // 2
    c = a.shape[1]
    padded = np.zeros((a.shape[0], c + size - 1) + a.shape[2:], dtype=a.dtype)
    padded[:, pre:pre + c] = a
    out = padded[:, 0:c].copy()
    for j in range(1, size):
        out += padded[:, j:j + c]
    return out


def lrn_across_forward(x, size, alpha, beta, k):
    """Returns (y, scale) with scale = k + alpha/size * window sum of x^2."""
    scale = _channel_window_sum(x * x, size)
    scale *= np.float32(alpha / size)
    scale += np.float32(k)
    return x * np.power(scale, np.float32(-beta)), scale


def lrn_across_backward(dy, x, y, scale, size, alpha, beta):
    ratio = _channel_window_sum(dy * y / scale, size)
    return dy * np.power(scale, np.float32(-beta)) - np.float32(2.0 * alpha * beta / size) * x * ratio


# ---------------------------------------------------------------- softmax loss

def softmax_loss_forward(prob, label, ignore_label):
    """prob (outer, C, inner), label (outer, inner) -> (sum of -log p, valid count)."""
    lab = label.astype(np.int64)
    valid = np.ones(lab.shape, dtype=bool) if ignore_label is None else lab != ignore_label
    safe = np.where(valid, lab, 0)
    if safe.size and (safe.min() < 0 or safe.max() >= prob.shape[1]):
        raise ValueError("label values must lie in [0, %d)" % prob.shape[1])
    p = np.take_along_axis(prob, safe[:, None, :], axis=1)[:, 0, :]
    losses = -np.log(np.maximum(p, FLT_MIN))
    return float(losses[valid].sum(dtype=np.float64)), int(valid.sum())


def softmax_loss_backward(prob, label, ignore_label):
    """d(sum of -log p)/d(logits): prob - onehot(label), zero where ignored."""
    lab = label.astype(np.int64)
    valid = np.ones(lab.shape, dtype=bool) if ignore_label is None else lab != ignore_label
    safe = np.where(valid, lab, 0)
    dx = prob.copy()
    onehot = np.take_along_axis(dx, safe[:, None, :], axis=1)
    np.put_along_axis(dx, safe[:, None, :], onehot - 1, axis=1)
    dx *= valid[:, None, :]
    return dx


# ---------------------------------------------------------------- N-D convolution

def _nd_taps(kernel):
    """Every kernel tap (i0, i1, ...) in row-major order."""
    taps = [()]
    for k in kernel:
        taps = [t + (i,) for t in taps for i in range(k)]
    return taps


def _nd_window(tap, pad, stride, dilation, out_shape):
    """The strided slices of the padded input that kernel tap `tap` reads."""
    return tuple(slice(i * d, i * d + s * (o - 1) + 1, s)
                 for i, d, s, o in zip(tap, dilation, stride, out_shape))


def _pad_nd(x, pad):
    """x (N, C, *spatial) zero-padded by pad[i] on both sides of spatial axis i."""
    if not any(pad):
        return x
    widths = [(0, 0), (0, 0)] + [(p, p) for p in pad]
    return np.pad(x, widths)


def im2col_nd(x, kernel, pad, stride, dilation, out_shape, out=None):
    """im2col over any number of spatial axes: columns (C*prod(kernel),
    N*prod(out_shape)), row (c, tap) in Caffe's order (channel, then the taps
    row-major)."""
    n, c = x.shape[:2]
    taps = _nd_taps(kernel)
    area = int(np.prod(out_shape))
    size = c * len(taps) * n * area
    cols = np.empty(size, x.dtype) if out is None or out.size < size or out.dtype != x.dtype else out[:size]
    cols = cols.reshape((c, len(taps), n) + tuple(out_shape))
    xt = _pad_nd(x, pad).swapaxes(0, 1)
    for t, tap in enumerate(taps):
        cols[:, t] = xt[(slice(None), slice(None)) + _nd_window(tap, pad, stride, dilation, out_shape)]
    return cols.reshape(c * len(taps), n * area)


def col2im_nd(cols, x_shape, kernel, pad, stride, dilation, out_shape):
    """The adjoint of im2col_nd."""
    n, c = x_shape[:2]
    taps = _nd_taps(kernel)
    cols = cols.reshape((c, len(taps), n) + tuple(out_shape))
    acc = np.zeros((c, n) + tuple(s + 2 * p for s, p in zip(x_shape[2:], pad)), dtype=cols.dtype)
    for t, tap in enumerate(taps):
        acc[(slice(None), slice(None)) + _nd_window(tap, pad, stride, dilation, out_shape)] += cols[:, t]
    inner = tuple(slice(p, p + s) for p, s in zip(pad, x_shape[2:]))
    return acc[(slice(None), slice(None)) + inner].swapaxes(0, 1)


# ---------------------------------------------------------------- indexing layers

def tile_forward(x, outer, inner, tiles):
    """x viewed as (outer, inner): each row repeated `tiles` times -> (outer, tiles * inner)."""
    return np.tile(x.reshape(outer, 1, inner), (1, tiles, 1)).reshape(outer, tiles * inner)


def tile_backward(dy, outer, inner, tiles):
    return dy.reshape(outer, tiles, inner).sum(axis=1)


def batch_reindex_forward(x, index):
    """Rows of x (N, D) picked by the float indices: (len(index), D)."""
    return x[index.astype(np.int64)]


def batch_reindex_backward(dy, index, n):
    """Sum of the rows of dy (M, D) into the N rows they were picked from."""
    dx = np.zeros((n,) + dy.shape[1:], dtype=dy.dtype)
    np.add.at(dx, index.astype(np.int64), dy)
    return dx


def embed_forward(index, weight, bias):
    """weight (K, D) rows picked by the float indices (M,), plus bias (D,) when given."""
    y = weight[index.astype(np.int64)]
    if bias is not None:
        y += bias
    return y


def embed_backward(dy, index, weight_diff):
    """Adds each row of dy (M, D) into the weight-diff row its index names."""
    np.add.at(weight_diff, index.astype(np.int64), dy)


def argmax_topk(x, top_k):
    """x (outer, dim, inner) -> (indices, values), each (outer, top_k, inner):
    the top_k entries along dim by value, a tie going to the larger index."""
    dim = x.shape[1]
    flipped = x[:, ::-1, :]
    order = np.argsort(-flipped, axis=1, kind="stable")[:, :top_k, :]
    index = (dim - 1) - order
    return index.astype(x.dtype), np.take_along_axis(x, index, axis=1)


# ---------------------------------------------------------------- LSTM unit

def _sigmoid(a):
    return np.float32(1) / (np.float32(1) + np.exp(-a))


def _lstm_gates(x, cont, hidden):
    """x (N, 4H) gate inputs in the order i, f, o, g; f masked by cont (N,)."""
    i = _sigmoid(x[:, :hidden])
    f = _sigmoid(x[:, hidden:2 * hidden]) * cont[:, None]
    o = _sigmoid(x[:, 2 * hidden:3 * hidden])
    g = np.tanh(x[:, 3 * hidden:])
    return i, f, o, g


def lstm_unit_forward(c_prev, x, cont):
    """c_prev (N, H), x (N, 4H), cont (N,) -> c, h (N, H)."""
    i, f, o, g = _lstm_gates(x, cont, c_prev.shape[1])
    c = f * c_prev + i * g
    return c, o * np.tanh(c)


def lstm_unit_backward(c_prev, x, cont, c, dc, dh):
    """-> (d c_prev, d x) from the diffs of c and h."""
    i, f, o, g = _lstm_gates(x, cont, c_prev.shape[1])
    tanh_c = np.tanh(c)
    dc_term = dc + dh * o * (np.float32(1) - tanh_c * tanh_c)
    dx = np.empty_like(x)
    hdim = c_prev.shape[1]
    dx[:, :hdim] = dc_term * g * i * (np.float32(1) - i)
    dx[:, hdim:2 * hdim] = dc_term * c_prev * f * (np.float32(1) - f)
    dx[:, 2 * hdim:3 * hdim] = dh * tanh_c * o * (np.float32(1) - o)
    dx[:, 3 * hdim:] = dc_term * i * (np.float32(1) - g * g)
    return dc_term * f, dx


# ---------------------------------------------------------------- the forks' layers

def decode_bboxes(loc, prior, code_type, variance_in_target):
    """SSD's decoding of (N, P, C, 4) offsets against the PriorBox blob (2, P, 4)."""
    from .. import bbox
    loc = np.asarray(loc, np.float32)
    boxes = bbox.decode(prior[0], prior[1], np.swapaxes(loc, 1, 2), code_type, variance_in_target)
    return np.ascontiguousarray(np.swapaxes(boxes, 1, 2))


def mbox_conf_loss(conf, labels, softmax):
    """MultiBoxLoss's per-prior confidence loss: conf (N, P, C), labels (N, P) -> (N, P)."""
    x = np.asarray(conf, np.float32)
    labels = np.asarray(labels, np.int64)
    if softmax:
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        prob = np.take_along_axis(e, labels[..., None], axis=-1)[..., 0] / e.sum(axis=-1)
        return (-np.log(np.maximum(prob, np.finfo(np.float32).tiny))).astype(np.float32)
    target = np.zeros_like(x)
    np.put_along_axis(target, labels[..., None], 1, axis=-1)
    return logistic_loss(x, target).sum(axis=-1)


def logistic_loss(x, target):
    """Sigmoid cross-entropy, element by element, in Caffe's stable form."""
    pos = (x >= 0).astype(np.float32)
    return -(x * (target - pos) - np.log1p(np.exp(x - 2 * x * pos))).astype(np.float32)


def permute(x, order):
    """x with its axes in `order` (SSD's Permute), as a new contiguous array."""
    return np.ascontiguousarray(np.transpose(x, order))


def c_round(v):
    """C's round(): halves away from zero (numpy's rounds them to even)."""
    v = np.asarray(v, np.float32)
    return (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.float32)


def _roi_bins(rois, scale, pooled):
    """Fast R-CNN's bins: for each region, (batch, [h start/end per row],
    [w start/end per column]) clipped to the map (not yet: see callers)."""
    r = np.asarray(rois, np.float32).reshape(-1, 5)
    start_w, start_h = c_round(r[:, 1] * scale), c_round(r[:, 2] * scale)
    end_w, end_h = c_round(r[:, 3] * scale), c_round(r[:, 4] * scale)
    rh = np.maximum(end_h - start_h + 1, 1).astype(np.float32)
    rw = np.maximum(end_w - start_w + 1, 1).astype(np.float32)
    ph, pw = pooled
    bh, bw = rh / np.float32(ph), rw / np.float32(pw)
    i, j = np.arange(ph, dtype=np.float32), np.arange(pw, dtype=np.float32)
    hs = np.floor(i[None] * bh[:, None]).astype(np.int64) + start_h[:, None].astype(np.int64)
    he = np.ceil((i[None] + 1) * bh[:, None]).astype(np.int64) + start_h[:, None].astype(np.int64)
    ws = np.floor(j[None] * bw[:, None]).astype(np.int64) + start_w[:, None].astype(np.int64)
    we = np.ceil((j[None] + 1) * bw[:, None]).astype(np.int64) + start_w[:, None].astype(np.int64)
    return r[:, 0].astype(np.int64), hs, he, ws, we


def roi_pool_forward(x, rois, scale, pooled):
    """x (N, C, H, W), rois (R, 5) -> y (R, C, ph, pw) and the argmax (the
    winning h * W + w per output, -1 for an empty bin)."""
    n, c, h, w = x.shape
    batch, hs, he, ws, we = _roi_bins(rois, scale, pooled)
    hs, he, ws, we = np.clip(hs, 0, h), np.clip(he, 0, h), np.clip(ws, 0, w), np.clip(we, 0, w)
    y = np.zeros((len(batch), c) + tuple(pooled), x.dtype)
    arg = np.full(y.shape, -1, np.int64)
    for r in range(len(batch)):
        if not 0 <= batch[r] < n:
            raise IndexError("region %d names image %d of a batch of %d" % (r, batch[r], n))
        img = x[batch[r]]
        for i in range(pooled[0]):
            for j in range(pooled[1]):
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue
                win = img[:, hs[r, i]:he[r, i], ws[r, j]:we[r, j]].reshape(c, -1)
                k = np.argmax(win, axis=1)
                y[r, :, i, j] = win[np.arange(c), k]
                ww = we[r, j] - ws[r, j]
                arg[r, :, i, j] = (hs[r, i] + k // ww) * w + ws[r, j] + k % ww
    return y, arg


def roi_pool_backward(dy, argmax, rois, x_shape):
    """Each output's diff added to the input position that won it."""
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h * w), dy.dtype)
    batch = np.asarray(rois, np.float32).reshape(-1, 5)[:, 0].astype(np.int64)
    for r in range(len(batch)):
        a = argmax[r].reshape(c, -1)
        d = dy[r].reshape(c, -1)
        ok = a >= 0
        rows = np.broadcast_to(np.arange(c)[:, None], a.shape)[ok]
        np.add.at(dx[batch[r]], (rows, a[ok]), d[ok])
    return dx.reshape(x_shape)


def _psroi_bins(rois, scale, group, h, w):
    r = np.asarray(rois, np.float32).reshape(-1, 5)
    scale = np.float32(scale)
    sw, sh = c_round(r[:, 1]) * scale, c_round(r[:, 2]) * scale
    ew = (c_round(r[:, 3]) + np.float32(1)) * scale
    eh = (c_round(r[:, 4]) + np.float32(1)) * scale
    rw = np.maximum(ew - sw, np.float32(0.1))
    rh = np.maximum(eh - sh, np.float32(0.1))
    bh, bw = rh / np.float32(group), rw / np.float32(group)
    g = np.arange(group, dtype=np.float32)
    hs = np.clip(np.floor(g[None] * bh[:, None] + sh[:, None]).astype(np.int64), 0, h)
    he = np.clip(np.ceil((g[None] + 1) * bh[:, None] + sh[:, None]).astype(np.int64), 0, h)
    ws = np.clip(np.floor(g[None] * bw[:, None] + sw[:, None]).astype(np.int64), 0, w)
    we = np.clip(np.ceil((g[None] + 1) * bw[:, None] + sw[:, None]).astype(np.int64), 0, w)
    return r[:, 0].astype(np.int64), hs, he, ws, we


def psroi_pool_forward(x, rois, scale, dim, group):
    """x (N, dim * group^2, H, W), rois (R, 5) -> y (R, dim, group, group):
    bin (i, j) of output channel c averages input channel (c*group+i)*group+j."""
    n, _, h, w = x.shape
    batch, hs, he, ws, we = _psroi_bins(rois, scale, group, h, w)
    y = np.zeros((len(batch), dim, group, group), x.dtype)
    ctop = np.arange(dim)
    for r in range(len(batch)):
        if not 0 <= batch[r] < n:
            raise IndexError("region %d names image %d of a batch of %d" % (r, batch[r], n))
        for i in range(group):
            for j in range(group):
                area = (he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j])
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue
                win = x[batch[r], (ctop * group + i) * group + j, hs[r, i]:he[r, i], ws[r, j]:we[r, j]]
                y[r, :, i, j] = win.reshape(dim, -1).sum(axis=1) / x.dtype.type(area)
    return y


def psroi_pool_backward(dy, rois, scale, dim, group, x_shape):
    n, c, h, w = x_shape
    batch, hs, he, ws, we = _psroi_bins(rois, scale, group, h, w)
    dx = np.zeros(x_shape, dy.dtype)
    ctop = np.arange(dim)
    for r in range(len(batch)):
        for i in range(group):
            for j in range(group):
                area = (he[r, i] - hs[r, i]) * (we[r, j] - ws[r, j])
                if he[r, i] <= hs[r, i] or we[r, j] <= ws[r, j]:
                    continue
                g = dy[r, :, i, j] / dy.dtype.type(area)
                dx[batch[r], (ctop * group + i) * group + j, hs[r, i]:he[r, i], ws[r, j]:we[r, j]] += \
                    g[:, None, None]
    return dx


def _interp_taps(size_in, size_out, dtype):
    """DeepLab's interp2 along one axis: for each output position, the
    lower input index, the step to the next (0 at the end) and its weights
    (the positions in float, as the fork computes them)."""
    r = np.float32(size_in - 1) / np.float32(size_out - 1) if size_out > 1 else np.float32(0)
    pos = (r * np.arange(size_out, dtype=np.float32)).astype(np.float32)
    lo = pos.astype(np.int64)
    step = (lo < size_in - 1).astype(np.int64)
    l1 = (pos - lo.astype(np.float32)).astype(dtype)
    return lo, step, dtype.type(1) - l1, l1


def interp_forward(x, crop, out_hw):
    """x (N, C, H, W) cropped at (off, off) to crop[1] x crop[2], resized to
    out_hw with aligned corners."""
    off, eh, ew = crop
    src = x[:, :, off:off + eh, off:off + ew]
    oh, ow = out_hw
    if (eh, ew) == (oh, ow):
        return np.array(src)
    hl, hp, h0, h1 = _interp_taps(eh, oh, x.dtype)
    wl, wp, w0, w1 = _interp_taps(ew, ow, x.dtype)
    top = src[:, :, hl]
    bot = src[:, :, hl + hp]
    w0, w1 = w0[None, None, None, :], w1[None, None, None, :]
    a = w0 * top[:, :, :, wl] + w1 * top[:, :, :, wl + wp]
    b = w0 * bot[:, :, :, wl] + w1 * bot[:, :, :, wl + wp]
    return h0[None, None, :, None] * a + h1[None, None, :, None] * b


def interp_backward(dy, x_shape, crop):
    off, eh, ew = crop
    n, c = x_shape[:2]
    oh, ow = dy.shape[2:]
    dx = np.zeros(x_shape, dy.dtype)
    if (eh, ew) == (oh, ow):
        dx[:, :, off:off + eh, off:off + ew] = dy
        return dx
    hl, hp, h0, h1 = _interp_taps(eh, oh, dy.dtype)
    wl, wp, w0, w1 = _interp_taps(ew, ow, dy.dtype)
    plane = np.zeros((n * c, eh, ew), dy.dtype)
    d = dy.reshape(n * c, oh, ow)
    for hh, hw_ in ((hl, h0), (hl + hp, h1)):
        for ww, wwt in ((wl, w0), (wl + wp, w1)):
            contrib = d * (hw_[:, None] * wwt[None, :])[None]
            np.add.at(plane, (slice(None), hh[:, None], ww[None, :]), contrib)
    dx[:, :, off:off + eh, off:off + ew] = plane.reshape(n, c, eh, ew)
    return dx


def upsample_forward(x, mask, out_hw):
    """-> (y, bad): each x value at its mask index of an out_hw plane, zeros
    elsewhere; bad counts indices outside the plane."""
    n, c = x.shape[:2]
    area = out_hw[0] * out_hw[1]
    idx = np.asarray(mask).reshape(n * c, -1).astype(np.int64)
    bad = int(((idx < 0) | (idx >= area)).sum())
    y = np.zeros((n * c, area), x.dtype)
    if not bad:
        y[np.arange(n * c)[:, None], idx] = x.reshape(n * c, -1)
    return y.reshape((n, c) + tuple(out_hw)), bad


def upsample_backward(dy, mask):
    n, c = mask.shape[:2]
    idx = np.asarray(mask).reshape(n * c, -1).astype(np.int64)
    d = dy.reshape(n * c, -1)
    return d[np.arange(n * c)[:, None], idx].reshape(mask.shape)

"""Pooling: MAX (optionally with the argmax as a second top) and AVE, with
Caffe's output size rule (ceil, or floor with round_mode FLOOR, then drop a
last window that starts in the padding)."""
import math

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb

P = pb.PoolingParameter


def pooled_size(size, kernel, pad, stride, ceil=True):
    span = (size + 2 * pad - kernel) / float(stride)
    out = int(math.ceil(span) if ceil else math.floor(span)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class PoolingLayer(Layer):
    replayable = Layer.dnnl_only
    exact_bottoms = 1
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        if self.method == P.STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported; use MAX or AVE")
        if len(top) == 2 and self.method != P.MAX:
            raise self.error("only MAX pooling can output the mask as a second top")
        self.global_pooling = p.global_pooling
        if self.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("with global_pooling the kernel is the whole input; do not give kernel_size")
        elif p.HasField("kernel_size"):
            if p.HasField("kernel_h") or p.HasField("kernel_w"):
                raise self.error("give either kernel_size or kernel_h/kernel_w, not both")
            self.kernel = (p.kernel_size, p.kernel_size)
        elif p.HasField("kernel_h") and p.HasField("kernel_w"):
            self.kernel = (p.kernel_h, p.kernel_w)
        else:
            raise self.error("pooling_param needs kernel_size (or kernel_h and kernel_w) or global_pooling")
        if p.HasField("pad_h") or p.HasField("pad_w"):
            self.pad = (p.pad_h, p.pad_w)
        else:
            self.pad = (p.pad, p.pad)
        if p.HasField("stride_h") or p.HasField("stride_w"):
            self.stride = (p.stride_h, p.stride_w)
        else:
            self.stride = (p.stride, p.stride)
        if self.global_pooling:
            if any(self.pad) or any(s != 1 for s in self.stride):
                raise self.error("global pooling takes no pad and stride 1")
        elif min(self.kernel) <= 0 or min(self.stride) <= 0:
            raise self.error("kernel and stride must be positive")
        elif self.pad[0] >= self.kernel[0] or self.pad[1] >= self.kernel[1]:
            raise self.error("pad %s must be smaller than the kernel %s" % (self.pad, self.kernel))

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            raise self.error("needs a 4-D bottom (N, C, H, W), got %s" % (b.shape,), ShapeError)
        h, w = b.shape[2:]
        if self.global_pooling:
            self.kernel = (h, w)
        ceil = self.param.pooling_param.round_mode == P.CEIL
        self.out_hw = (pooled_size(h, self.kernel[0], self.pad[0], self.stride[0], ceil),
                       pooled_size(w, self.kernel[1], self.pad[1], self.stride[1], ceil))
        if min(self.out_hw) <= 0:
            raise self.error("input %dx%d is smaller than the kernel %s" % (h, w, self.kernel), ShapeError)
        for t in top:
            t.reshape(b.shape[:2] + self.out_hw)

    def _dnnl(self, bottom, top):
        if len(top) == 2:              # the mask top is Caffe's own argmax
            return None
        shape, training, layout = bottom[0].shape, self.need_backward, self.blocked_layout(bottom[0])
        return self.dnnl_op((shape, training, layout), lambda dnnl: dnnl.Pooling(
            shape, shape[:2] + self.out_hw, self.kernel, self.pad, self.stride, self.method == P.MAX,
            training, layout))

    def forward(self, bottom, top):
        op = self._engine_op = self._dnnl(bottom, top)
        if op is not None:
            op.forward(bottom[0].engine_data(), top[0].engine_data())
            return
        x = bottom[0].dev_data
        y = pool_forward(self.ops, self.method, x, self.kernel, self.pad, self.stride, self.out_hw)
        top[0].dev_data[...] = y
        if len(top) == 2:
            top[1].dev_data[...] = self.ops.max_pool_argmax(x, y, self.kernel, self.pad, self.stride, self.out_hw)

    def backward(self, top, propagate_down, bottom):
        op = getattr(self, "_engine_op", None)          # the one whose argmax the forward kept
        if op is not None and op.bwd is not None:
            self.engine = "dnnl"
            if propagate_down[0]:
                op.backward(top[0].engine_diff(), bottom[0].engine_diff())
            return
        if propagate_down[0]:
            pool_backward(self.ops, self.method, top[0].dev_diff, bottom[0].dev_data, top[0].dev_data,
                          self.kernel, self.pad, self.stride, self.out_hw, out=bottom[0].dev_diff)


def pool_forward(ops, method, x, kernel, pad, stride, out_hw):
    """MAX or AVE pooling of an (N, C, H, W) array (Pooling and SPP share it)."""
    if method == P.MAX:
        return ops.max_pool_forward(x, kernel, pad, stride, out_hw)
    return ops.ave_pool_forward(x, kernel, pad, stride, out_hw)


def pool_backward(ops, method, dy, x, y, kernel, pad, stride, out_hw, out=None):
    if method == P.MAX:
        return ops.max_pool_backward(dy, x, y, kernel, pad, stride, out_hw, out=out)
    return ops.ave_pool_backward(dy, x.shape, kernel, pad, stride, out_hw, out=out)


@register("SPP")
class SPPLayer(Layer):
    """Spatial pyramid pooling: level l pools into 2^l x 2^l bins; the levels,
    each flattened, are concatenated (one level: the pooled blob as it is)."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.spp_param
        if not p.pyramid_height:
            raise self.error("spp_param needs pyramid_height >= 1")
        if p.pool == P.STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported; use MAX or AVE")
        self.method = p.pool

    def reshape(self, bottom, top):
        b = bottom[0]
        if b.num_axes != 4:
            raise self.error("needs a 4-D bottom (N, C, H, W), got %s" % (b.shape,), ShapeError)
        h, w = b.shape[2:]
        self.levels = []
        for level in range(self.param.spp_param.pyramid_height):
            bins = 2 ** level
            kernel = (int(math.ceil(h / float(bins))), int(math.ceil(w / float(bins))))
            pad = ((kernel[0] * bins - h + 1) // 2, (kernel[1] * bins - w + 1) // 2)
            if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
                raise self.error("pyramid level %d: %d bins do not fit a %dx%d input (pad %s would not be smaller "
                                 "than the kernel %s); use a smaller pyramid_height or a larger input"
                                 % (level, bins, h, w, pad, kernel), ShapeError)
            out = (pooled_size(h, kernel[0], pad[0], kernel[0]), pooled_size(w, kernel[1], pad[1], kernel[1]))
            self.levels.append((kernel, pad, kernel, out))
        if len(self.levels) == 1:
            top[0].reshape(b.shape[:2] + self.levels[0][3])
        else:
            top[0].reshape((b.shape[0], sum(b.shape[1] * o[0] * o[1] for _, _, _, o in self.levels)))

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        n = x.shape[0]
        self._pooled = [pool_forward(self.ops, self.method, x, *g) for g in self.levels]
        y = top[0].dev_data.reshape(n, -1)
        at = 0
        for out in self._pooled:
            size = out[0].size
            y[:, at:at + size] = out.reshape(n, size)
            at += size

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].dev_data
        n = x.shape[0]
        dy = top[0].dev_diff.reshape(n, -1)
        dx, at = None, 0
        for g, out in zip(self.levels, self._pooled):
            size = out[0].size
            part = pool_backward(self.ops, self.method, self.xp.ascontiguousarray(dy[:, at:at + size]).reshape(
                out.shape), x, out, *g)
            dx = part if dx is None else dx + part
            at += size
        bottom[0].dev_diff[...] = dx

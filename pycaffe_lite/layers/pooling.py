"""Pooling: MAX (optionally with the argmax as a second top) and AVE, with
Caffe's output size rule (ceil, then drop a last window that starts in the
padding)."""
import math

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb

P = pb.PoolingParameter


def pooled_size(size, kernel, pad, stride):
    out = int(math.ceil((size + 2 * pad - kernel) / float(stride))) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class PoolingLayer(Layer):
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
        self.out_hw = (pooled_size(h, self.kernel[0], self.pad[0], self.stride[0]),
                       pooled_size(w, self.kernel[1], self.pad[1], self.stride[1]))
        if min(self.out_hw) <= 0:
            raise self.error("input %dx%d is smaller than the kernel %s" % (h, w, self.kernel), ShapeError)
        for t in top:
            t.reshape(b.shape[:2] + self.out_hw)

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        args = (self.kernel, self.pad, self.stride, self.out_hw)
        if self.method == P.MAX:
            y = self.ops.max_pool_forward(x, *args)
            top[0].dev_data[...] = y
            if len(top) == 2:
                top[1].dev_data[...] = self.ops.max_pool_argmax(x, y, *args)
        else:
            top[0].dev_data[...] = self.ops.ave_pool_forward(x, *args)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].dev_diff
        if self.method == P.MAX:
            dx = self.ops.max_pool_backward(dy, bottom[0].dev_data, top[0].dev_data, self.kernel, self.pad,
                                            self.stride, self.out_hw)
        else:
            dx = self.ops.ave_pool_backward(dy, bottom[0].shape, self.kernel, self.pad, self.stride,
                                            self.out_hw)
        bottom[0].dev_diff[...] = dx

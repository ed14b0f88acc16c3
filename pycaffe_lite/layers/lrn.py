"""Local response normalization, across channels or within each channel."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


@register("LRN")
class LRNLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def replayable(self, bottom, top):
        return self.engine == "dnnl" and bottom[0] is not top[0]      # in place it keeps a copy

    def layer_setup(self, bottom, top):
        p = self.param.lrn_param
        if p.local_size % 2 == 0:
            raise self.error("local_size must be odd, got %d" % p.local_size)
        self.size, self.alpha, self.beta, self.k = int(p.local_size), p.alpha, p.beta, p.k
        self.within = p.norm_region == pb.LRNParameter.WITHIN_CHANNEL

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("needs a 4-D bottom (N, C, H, W), got %s" % (bottom[0].shape,), ShapeError)
        top[0].reshape_like(bottom[0])

    def _within_geometry(self):
        n, pad = self.size, (self.size - 1) // 2
        return (n, n), (pad, pad), (1, 1)

    def _dnnl(self, bottom):
        # oneDNN's LRN backward is fast on channel blocks of 16 only; its
        # plain-layout forward is fast for inference.
        shape, training, layout = bottom[0].shape, self.need_backward, self.blocked_layout(bottom[0])
        if training:
            if shape[1] % 16:
                return self.dnnl_op(None, lambda dnnl: None)
            layout = "nChw16c"
        return self.dnnl_op((shape, training, layout), lambda dnnl: dnnl.LRN(
            shape, self.size, self.alpha, self.beta, self.k, self.within, training,
            dnnl.TAG_NCHW16C if layout == "nChw16c" else layout))

    def _numpy_scale(self, x):
        if self.within:
            kernel, pad, stride = self._within_geometry()
            pooled = self.ops.ave_pool_forward(x * x, kernel, pad, stride, x.shape[2:])
            self._scale = np.float32(1) + np.float32(self.alpha) * pooled
        else:
            self._scale = self.ops.lrn_across_forward(x, self.size, self.alpha, self.beta, self.k)[1]

    def forward(self, bottom, top):
        op = self._engine_op = self._dnnl(bottom)
        if op is not None:
            self._x = bottom[0].dev_data.copy() if bottom[0] is top[0] else None
            self._scale = None        # oneDNN keeps its own; numpy's backward recomputes it
            op.forward(bottom[0].engine_data(), top[0].engine_data())
            return
        x = bottom[0].dev_data
        if self.within:
            # y = x * (1 + alpha * avepool(x^2))^-beta, avepool padded and
            # always dividing by n*n as Caffe's internal pooling does.
            kernel, pad, stride = self._within_geometry()
            self._x = x.copy()
            pooled = self.ops.ave_pool_forward(x * x, kernel, pad, stride, x.shape[2:])
            self._scale = np.float32(1) + np.float32(self.alpha) * pooled
            top[0].dev_data[...] = x * self.xp.power(self._scale, np.float32(-self.beta))
        else:
            y, self._scale = self.ops.lrn_across_forward(x, self.size, self.alpha, self.beta, self.k)
            self._x = x.copy() if bottom[0] is top[0] else None
            top[0].dev_data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        op = getattr(self, "_engine_op", None)          # the one whose workspace the forward kept
        if op is not None and op.bwd is not None:
            self.engine = "dnnl"
            x = self._x if self._x is not None else bottom[0].engine_data()
            op.backward(x, top[0].engine_diff(), bottom[0].engine_diff())
            return
        dy, y = top[0].dev_diff, top[0].dev_data
        x = self._x if self._x is not None else bottom[0].dev_data
        if self._scale is None:
            self._numpy_scale(x)
        if self.within:
            kernel, pad, stride = self._within_geometry()
            b = np.float32(self.beta)
            inner = dy * x * (-b) * self.xp.power(self._scale, -b - 1)
            back = self.ops.ave_pool_backward(inner, x.shape, kernel, pad, stride, x.shape[2:])
            dx = dy * self.xp.power(self._scale, -b) + np.float32(2 * self.alpha) * x * back
        else:
            dx = self.ops.lrn_across_backward(dy, x, y, self._scale, self.size, self.alpha, self.beta)
        bottom[0].dev_diff[...] = dx

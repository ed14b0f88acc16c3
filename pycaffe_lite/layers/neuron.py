"""Element-wise layers. Each may run in place (top == bottom), so a backward
that needs the input either reads it from the output or keeps a copy."""
import numpy as np

from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb
from .. import backend


class NeuronLayer(Layer):
    replayable = Layer.dnnl_only
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        top[0].reshape_like(bottom[0])

    def dnnl_eltwise(self, bottom, top):
        """(oneDNN algorithm, alpha, beta) computing this layer as Caffe
        does, or None. Algorithms whose backward reads the input are named
        only when the input is still there (not in place)."""
        return None

    def _dnnl(self, bottom, top):
        spec = self.dnnl_eltwise(bottom, top)
        if spec is None:
            return None
        shape, training, layout = bottom[0].shape, self.need_backward, self.blocked_layout(bottom[0])
        return self.dnnl_op((shape, training, spec, layout), lambda dnnl: dnnl.Eltwise(
            shape, *spec, training=training, layout=layout))

    def dnnl_forward(self, bottom, top):
        op = self._engine_op = self._dnnl(bottom, top)
        if op is None:
            return False
        op.forward(bottom[0].engine_data(), top[0].engine_data())
        return True

    def dnnl_backward(self, top, propagate_down, bottom):
        op = getattr(self, "_engine_op", None)
        if op is None or op.bwd is None:
            return False
        self.engine = "dnnl"
        if propagate_down[0]:
            data = top[0].engine_data() if op.use_dst else bottom[0].engine_data()
            op.backward(data, top[0].engine_diff(), bottom[0].engine_diff())
        return True

    def backward(self, top, propagate_down, bottom):
        if self.dnnl_backward(top, propagate_down, bottom):
            return
        if propagate_down[0]:
            bottom[0].dev_diff[...] = self.grad(top[0].dev_diff, bottom[0], top[0])


@register("ReLU")
class ReLULayer(NeuronLayer):

    def dnnl_eltwise(self, bottom, top):
        # Caffe's backward reads the bottom, which in place holds the output
        # (of the same sign): oneDNN's relu backward is given the same.
        return ("relu", self.param.relu_param.negative_slope, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        x, s = bottom[0].dev_data, self.param.relu_param.negative_slope
        if s:
            top[0].dev_data[...] = self.xp.where(x > 0, x, x * np.float32(s))
        else:
            self.xp.maximum(x, 0, out=top[0].dev_data)

    def backward(self, top, propagate_down, bottom):
        if self.dnnl_backward(top, propagate_down, bottom):
            return
        if propagate_down[0] and not self.param.relu_param.negative_slope:
            # written straight into the diff (in place, that is the top's diff too)
            self.xp.multiply(top[0].dev_diff, bottom[0].dev_data > 0, out=bottom[0].dev_diff)
        else:
            super().backward(top, propagate_down, bottom)

    def grad(self, dy, b, t):
        # In place, b holds the output, whose sign is the input's.
        s = self.param.relu_param.negative_slope
        pos = b.dev_data > 0
        return dy * pos if not s else dy * self.xp.where(pos, np.float32(1), np.float32(s))


@register("Sigmoid")
class SigmoidLayer(NeuronLayer):

    def dnnl_eltwise(self, bottom, top):
        return ("logistic_dst", 0.0, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        xp = self.xp
        top[0].dev_data[...] = np.float32(0.5) * xp.tanh(np.float32(0.5) * bottom[0].dev_data) + np.float32(0.5)

    def grad(self, dy, b, t):
        y = t.dev_data
        return dy * y * (1 - y)


@register("TanH")
class TanHLayer(NeuronLayer):

    def dnnl_eltwise(self, bottom, top):
        return ("tanh_dst", 0.0, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        self.xp.tanh(bottom[0].dev_data, out=top[0].dev_data)

    def grad(self, dy, b, t):
        y = t.dev_data
        return dy * (1 - y * y)


class _KeepInput(NeuronLayer):
    """Keeps a copy of the input when running in place, for backward."""

    def input_for_backward(self, bottom, top):
        return self._saved if bottom[0] is top[0] else bottom[0].dev_data

    def save_input(self, bottom, top):
        if bottom[0] is top[0]:
            self._saved = bottom[0].dev_data.copy()


@register("Power")
class PowerLayer(_KeepInput):
    def forward(self, bottom, top):
        p = self.param.power_param
        self.save_input(bottom, top)
        base = bottom[0].dev_data * np.float32(p.scale) + np.float32(p.shift)
        top[0].dev_data[...] = base if p.power == 1 else self.xp.power(base, np.float32(p.power))

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        p = self.param.power_param
        dy = top[0].dev_diff
        diff_scale = np.float32(p.power * p.scale)
        if diff_scale == 0 or p.power == 1:
            bottom[0].dev_diff[...] = dy * diff_scale
            return
        x = self.input_for_backward(bottom, top)
        if p.power == 2:
            g = diff_scale * (np.float32(p.scale) * x + np.float32(p.shift))
        else:
            # Caffe's form, y / base, keeps its inf/NaN behaviour at base == 0.
            g = diff_scale * top[0].dev_data / (np.float32(p.scale) * x + np.float32(p.shift))
        bottom[0].dev_diff[...] = dy * g


@register("Exp")
class ExpLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.exp_param
        if p.base != -1 and p.base <= 0:
            raise self.error("exp_param base must be positive (or -1 for e), got %g" % p.base)
        log_base = 1.0 if p.base == -1 else np.log(p.base)
        self._inner = np.float32(log_base * p.scale)
        self._outer = np.float32(1.0 if p.shift == 0 else
                                 (np.exp(p.shift) if p.base == -1 else p.base ** p.shift))

    def forward(self, bottom, top):
        y = top[0].dev_data
        self.xp.exp(bottom[0].dev_data * self._inner, out=y)
        if self._outer != 1:
            y *= self._outer

    def grad(self, dy, b, t):
        return dy * t.dev_data * self._inner


@register("Log")
class LogLayer(_KeepInput):
    def layer_setup(self, bottom, top):
        p = self.param.log_param
        if p.base != -1 and p.base <= 0:
            raise self.error("log_param base must be positive (or -1 for e), got %g" % p.base)
        self._base_scale = np.float32(1.0 if p.base == -1 else 1.0 / np.log(p.base))

    def forward(self, bottom, top):
        p = self.param.log_param
        self.save_input(bottom, top)
        inner = bottom[0].dev_data * np.float32(p.scale) + np.float32(p.shift)
        top[0].dev_data[...] = self.xp.log(inner) * self._base_scale

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            p = self.param.log_param
            x = self.input_for_backward(bottom, top)
            inner = x * np.float32(p.scale) + np.float32(p.shift)
            bottom[0].dev_diff[...] = top[0].dev_diff * (np.float32(p.scale) * self._base_scale) / inner


@register("AbsVal")
class AbsValLayer(_KeepInput):
    def dnnl_eltwise(self, bottom, top):
        return None if bottom[0] is top[0] else ("abs", 0.0, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        self.save_input(bottom, top)
        self.xp.abs(bottom[0].dev_data, out=top[0].dev_data)

    def backward(self, top, propagate_down, bottom):
        if self.dnnl_backward(top, propagate_down, bottom):
            return
        if propagate_down[0]:
            x = self.input_for_backward(bottom, top)
            bottom[0].dev_diff[...] = top[0].dev_diff * self.xp.sign(x)


@register("BNLL")
class BNLLLayer(_KeepInput):
    def dnnl_eltwise(self, bottom, top):
        return None if bottom[0] is top[0] else ("soft_relu", 1.0, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        xp = self.xp
        self.save_input(bottom, top)
        x = bottom[0].dev_data
        # log(1 + e^x), written so that neither branch overflows.
        top[0].dev_data[...] = xp.where(x > 0, x + xp.log1p(xp.exp(-x)), xp.log1p(xp.exp(x)))

    def backward(self, top, propagate_down, bottom):
        if self.dnnl_backward(top, propagate_down, bottom):
            return
        if propagate_down[0]:
            xp = self.xp
            e = xp.exp(xp.minimum(self.input_for_backward(bottom, top), np.float32(50)))
            bottom[0].dev_diff[...] = top[0].dev_diff * e / (e + 1)


@register("ELU")
class ELULayer(NeuronLayer):
    def dnnl_eltwise(self, bottom, top):
        return None if bottom[0] is top[0] else ("elu", self.param.elu_param.alpha, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        xp, a = self.xp, np.float32(self.param.elu_param.alpha)
        x = bottom[0].dev_data
        top[0].dev_data[...] = xp.where(x > 0, x, a * (xp.exp(xp.minimum(x, 0)) - 1))

    def grad(self, dy, b, t):
        # In place, b holds the output; its sign is still the input's.
        a = np.float32(self.param.elu_param.alpha)
        return dy * self.xp.where(b.dev_data > 0, np.float32(1), t.dev_data + a)


@register("PReLU")
class PReLULayer(_KeepInput):
    def layer_setup(self, bottom, top):
        p = self.param.prelu_param
        if bottom[0].num_axes < 2:
            raise self.error("needs a bottom with a channel axis, got shape %s" % (bottom[0].shape,))
        from ..blob import Blob
        shape = () if p.channel_shared else (bottom[0].channels,)
        self.blobs = [Blob(shape)]
        filler = p.filler if p.HasField("filler") else pb.FillerParameter(type="constant", value=0.25)
        fill(self.blobs[0], filler)

    def _slope(self, x):
        a = self.blobs[0].dev_data
        return a if a.ndim == 0 else a.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        self.save_input(bottom, top)
        x = bottom[0].dev_data
        top[0].dev_data[...] = self.xp.where(x > 0, x, x * self._slope(x))

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        x = self.input_for_backward(bottom, top)
        dy = top[0].dev_diff
        if self.param_propagate_down[0]:
            g = dy * x * (x <= 0)
            if self.blobs[0].dev_data.ndim == 0:
                self.blobs[0].dev_diff[...] += g.sum()
            else:
                axes = (0,) + tuple(range(2, x.ndim))
                self.blobs[0].dev_diff[...] += g.sum(axis=axes)
        if propagate_down[0]:
            bottom[0].dev_diff[...] = dy * xp.where(x > 0, np.float32(1), self._slope(x))


@register("Threshold")
class ThresholdLayer(NeuronLayer):
    def forward(self, bottom, top):
        t = np.float32(self.param.threshold_param.threshold)
        top[0].dev_data[...] = bottom[0].dev_data > t

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("Threshold has no gradient; set propagate_down: false on the layers below "
                             "or remove force_backward")


@register("Dropout")
class DropoutLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        ratio = self.param.dropout_param.dropout_ratio
        if not 0 <= ratio < 1:
            raise self.error("dropout_ratio must be in [0, 1), got %g" % ratio)
        self._ratio = np.float32(ratio)
        # Fast R-CNN's scale_train: false keeps training values unscaled and
        # scales by 1 - ratio at test time instead
        self._scale_train = self.param.dropout_param.scale_train
        self._scale = np.float32(1.0 / (1.0 - ratio)) if self._scale_train else np.float32(1)

    def forward(self, bottom, top):
        x = bottom[0].dev_data
        if self.phase == pb.TRAIN:
            # Drawn from the global stream on the host so that CPU and GPU runs
            # with the same seed drop the same units (and resume reproduces them).
            keep = backend.rng().random(x.shape, dtype=np.float32) >= self._ratio
            self._mask = self.xp.asarray(keep.astype(x.dtype) * self._scale)
            self.xp.multiply(x, self._mask, out=top[0].dev_data)
        elif not self._scale_train:
            self.xp.multiply(x, np.float32(1) - self._ratio, out=top[0].dev_data)
        elif bottom[0] is not top[0]:
            top[0].dev_data[...] = x

    def grad(self, dy, b, t):
        if self.phase == pb.TRAIN:
            return dy * self._mask
        return dy if self._scale_train else dy * (np.float32(1) - self._ratio)


@register("Clip")
class ClipLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max (they have no defaults)")
        if p.min > p.max:
            raise self.error("clip_param min (%g) is above max (%g)" % (p.min, p.max))
        self._lo, self._hi = np.float32(p.min), np.float32(p.max)

    def forward(self, bottom, top):
        self.xp.clip(bottom[0].dev_data, self._lo, self._hi, out=top[0].dev_data)

    def grad(self, dy, b, t):
        # Both ends pass the diff, as in Caffe. (In place, b holds the clipped
        # values, which are all inside: Caffe behaves the same way.)
        x = b.dev_data
        return dy * ((x >= self._lo) & (x <= self._hi))


@register("Swish")
class SwishLayer(NeuronLayer):
    def layer_setup(self, bottom, top):
        self._beta = np.float32(self.param.swish_param.beta)

    def dnnl_eltwise(self, bottom, top):
        return None if bottom[0] is top[0] else ("swish", self.param.swish_param.beta, 0.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        xp = self.xp
        x = bottom[0].dev_data
        self._sig = np.float32(1) / (np.float32(1) + xp.exp(-self._beta * x))
        xp.multiply(x, self._sig, out=top[0].dev_data)

    def grad(self, dy, b, t):
        if self.engine == "dnnl":          # numpy's backward after oneDNN's forward
            self._sig = np.float32(1) / (np.float32(1) + self.xp.exp(-self._beta * b.dev_data))
        y, s = t.dev_data, self._sig
        return dy * (self._beta * y + s * (np.float32(1) - self._beta * y))


@register("ReLU6")
class ReLU6Layer(NeuronLayer):
    """min(max(x, 0), 6), the MobileNet forks' activation."""

    def dnnl_eltwise(self, bottom, top):
        return ("clip_v2_dst", 0.0, 6.0)

    def forward(self, bottom, top):
        if self.dnnl_forward(bottom, top):
            return
        self.xp.clip(bottom[0].dev_data, np.float32(0), np.float32(6), out=top[0].dev_data)

    def grad(self, dy, b, t):
        # from the output, which in place is all there is: 0 < y < 6 where 0 < x < 6
        y = t.dev_data
        return dy * ((y > 0) & (y < 6))


def _erf(xp, x):
    if xp is np or isinstance(x, np.ndarray):
        from scipy.special import erf
        return erf(x).astype(x.dtype)
    from cupyx.scipy.special import erf
    return erf(x)


def _softplus(xp, x):
    return xp.where(x > 0, x + xp.log1p(xp.exp(-xp.abs(x))), xp.log1p(xp.exp(x)))


_SELU_ALPHA, _SELU_GAMMA = 1.6732632423543772, 1.0507009873554805
# OpenCV dnn's element-wise layer types without parameters (its Caffe
# importer takes them): y = f(x) and dy/dx, in the array module xp. The
# rounding ones have no gradient (0, as in frameworks that define one).
_POINTWISE = {
    "Identity": (lambda xp, x: x.copy(), lambda xp, x, y: xp.ones_like(x)),
    "Mish": (lambda xp, x: x * xp.tanh(_softplus(xp, x)),
             lambda xp, x, y: (lambda t, s: t + x * s * (1 - t * t))(xp.tanh(_softplus(xp, x)),
                                                                       1 / (1 + xp.exp(-x)))),
    "HardSwish": (lambda xp, x: x * xp.clip(x + 3, 0, 6) / 6,
                  lambda xp, x, y: xp.where(x < -3, 0, xp.where(x > 3, 1, (2 * x + 3) / 6))),
    "HardSigmoid": (lambda xp, x: xp.clip(x * np.float32(0.2) + np.float32(0.5), 0, 1),
                    lambda xp, x, y: xp.where((x > -2.5) & (x < 2.5), np.float32(0.2), np.float32(0))),
    "Softplus": (_softplus, lambda xp, x, y: 1 / (1 + xp.exp(-x))),
    "Sqrt": (lambda xp, x: xp.sqrt(x), lambda xp, x, y: 0.5 / y),
    "Reciprocal": (lambda xp, x: 1 / x, lambda xp, x, y: -y * y),
    "Erf": (_erf, lambda xp, x, y: np.float32(2 / np.sqrt(np.pi)) * xp.exp(-x * x)),
    "Gelu": (lambda xp, x: 0.5 * x * (1 + _erf(xp, x * np.float32(1 / np.sqrt(2)))),
             lambda xp, x, y: 0.5 * (1 + _erf(xp, x * np.float32(1 / np.sqrt(2))))
             + x * np.float32(1 / np.sqrt(2 * np.pi)) * xp.exp(-0.5 * x * x)),
    "Celu": (lambda xp, x: xp.maximum(x, 0) + xp.minimum(xp.exp(xp.minimum(x, 0)) - 1, 0),
             lambda xp, x, y: xp.where(x > 0, 1, xp.exp(xp.minimum(x, 0)))),
    "Selu": (lambda xp, x: np.float32(_SELU_GAMMA) * xp.where(x > 0, x, np.float32(_SELU_ALPHA)
                                                              * (xp.exp(xp.minimum(x, 0)) - 1)),
             lambda xp, x, y: np.float32(_SELU_GAMMA) * xp.where(x > 0, 1, np.float32(_SELU_ALPHA)
                                                                 * xp.exp(xp.minimum(x, 0)))),
    "Sin": (lambda xp, x: xp.sin(x), lambda xp, x, y: xp.cos(x)),
    "Cos": (lambda xp, x: xp.cos(x), lambda xp, x, y: -xp.sin(x)),
    "Tan": (lambda xp, x: xp.tan(x), lambda xp, x, y: 1 + y * y),
    "Ceil": (lambda xp, x: xp.ceil(x), None),
    "Floor": (lambda xp, x: xp.floor(x), None),
    "Round": (lambda xp, x: xp.round(x), None),          # halves to even, as OpenCV's
    "Sign": (lambda xp, x: xp.sign(x), None),
}


class _Pointwise(_KeepInput):
    """One of OpenCV's parameterless element-wise types."""

    def forward(self, bottom, top):
        self.save_input(bottom, top)
        fn = _POINTWISE[self.type][0]
        y = fn(self.xp, bottom[0].dev_data)
        top[0].dev_data[...] = y

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        grad = _POINTWISE[self.type][1]
        if grad is None:
            bottom[0].dev_diff[...] = 0
            return
        x = self.input_for_backward(bottom, top)
        bottom[0].dev_diff[...] = top[0].dev_diff * grad(self.xp, x, top[0].dev_data)


for _name in _POINTWISE:
    register(_name)(type("%sLayer" % _name, (_Pointwise,), {"__doc__": "OpenCV dnn's %s." % _name}))

"""Inference fusion on the oneDNN engine, where nothing a user can read
changes.

In a TEST-phase net without force_backward, a Convolution followed in place
(on its own top) by BatchNorm with global statistics, Scale and ReLU layers
runs as one convolution: weights and bias folded with the statistics and the
scale, ReLU as a post-op. Eltwise SUM followed in place by ReLU runs as one
binary primitive. The chain's blob ends up holding what Caffe leaves in it
(the last layer's output); the values in between were never readable, being
overwritten in place. A chain runs fused only when the whole of it is inside
the forward's range and no per-layer callback watches the net; a backward
after a fused forward first runs those layers again one by one, so that every
layer's backward finds what its own forward left."""
import numpy as np

from . import backend
from .proto import caffe_pb2 as pb


class Folded:
    """An array the engine may keep reordered while `token` is unchanged
    (folded weights: a function of blobs whose tokens make up this one)."""
    __slots__ = ("array", "_token")

    def __init__(self, array, token):
        self.array, self._token = array, token

    def blocked(self, desc):
        return None

    def read(self):
        return self.array

    def token(self):
        return self._token


def _in_place_on(lp, blob):
    return len(lp.bottom) == 1 and len(lp.top) == 1 and lp.bottom[0] == blob and lp.top[0] == blob


class ConvChain:
    """Convolution -> [BatchNorm] -> [Scale] -> [ReLU], in place on the
    convolution's top, as one oneDNN convolution."""

    def __init__(self, net, head, members):
        self.net, self.head, self.members = net, head, members
        self.last = members[-1]
        self.conv = net.layers[head]
        kinds = {net.layers[i].type: net.layers[i] for i in members}
        self.bn, self.scale, self.relu = kinds.get("BatchNorm"), kinds.get("Scale"), kinds.get("ReLU")
        self._token = self._weights = self._bias = None

    def _sources(self):
        blobs = list(self.conv.blobs)
        for layer in (self.bn, self.scale):
            if layer is not None:
                blobs.extend(layer.blobs)
        return blobs

    def _fold(self):
        """Folded weights and bias, recomputed only when a source changed."""
        tokens = tuple(b.engine_data().token() for b in self._sources())
        if None not in tokens and tokens == self._token:
            return self._weights, self._bias, tokens
        conv = self.conv
        w = conv.blobs[0].engine_data().read().astype(np.float64)
        m = w.shape[0]
        b = conv.blobs[1].engine_data().read().astype(np.float64) if conv.bias_term else np.zeros(m)
        scale, shift = np.ones(m), np.zeros(m)
        if self.bn is not None:
            mean, var, factor = (blob.engine_data().read() for blob in self.bn.blobs)
            f = 0.0 if factor[0] == 0 else 1.0 / float(factor[0])
            std = np.sqrt(var.astype(np.float64) * f + self.bn.eps)
            scale, shift = 1.0 / std, -mean.astype(np.float64) * f / std
        if self.scale is not None:
            gamma = self.scale.blobs[0].engine_data().read().astype(np.float64)
            beta = (self.scale.blobs[self.scale.bias_index].engine_data().read().astype(np.float64)
                    if self.scale.bias_index is not None else 0.0)
            scale, shift = scale * gamma, shift * gamma + beta
        self._weights = (w * scale.reshape((m,) + (1,) * (w.ndim - 1))).astype(np.float32)
        self._bias = (b * scale + shift).astype(np.float32)
        self._token = tokens
        return self._weights, self._bias, tokens

    def forward(self):
        """Run the chain fused; False when the engine cannot (the caller then
        runs it layer by layer)."""
        net, conv = self.net, self.conv
        bottom, top = net._bottom(self.head), net._top(self.head)
        conv.reshape(bottom, top)
        relu = None if self.relu is None else self.relu.param.relu_param.negative_slope
        op = conv.fused_op(bottom, relu)
        if op is None:
            return False
        for i in self.members:
            net.layers[i].reshape(net._bottom(i), net._top(i))
        w, b, token = self._fold()
        x_shape, y_shape = conv.engine_shapes(bottom[0])
        op.forward(bottom[0].engine_data(x_shape), Folded(w, token if None not in token else None), b,
                   top[0].engine_data(y_shape))
        for i in (self.head,) + tuple(self.members):
            net.layers[i].engine = "dnnl"
        return True


class EltwiseReLU:
    """Eltwise SUM -> ReLU in place on its top, as one binary primitive."""

    def __init__(self, net, head, members):
        self.net, self.head, self.members = net, head, members
        self.last = members[-1]

    def forward(self):
        net = self.net
        layer = net.layers[self.head]
        relu = net.layers[self.last]
        bottom, top = net._bottom(self.head), net._top(self.head)
        layer.reshape(bottom, top)
        relu.reshape(net._bottom(self.last), net._top(self.last))
        if not layer.dnnl_forward(bottom, top, relu=relu.param.relu_param.negative_slope):
            return False
        relu.engine = "dnnl"
        return True


def plan(net):
    """{index of a chain's first layer: chain} for the net's fusable chains."""
    chains = {}
    params = net._param.layer
    layers = net.layers
    consumers = {}
    for li, lp in enumerate(params):
        for name in lp.bottom:
            consumers.setdefault(name, []).append(li)
    i = 0
    while i < len(layers):
        lp, layer = params[i], layers[i]
        if any(layer.loss_weights):
            i += 1
            continue
        if lp.type == "Convolution" and len(lp.bottom) == 1 and len(lp.top) == 1:
            blob = lp.top[0]
            members, seen = [], set()
            for j in range(i + 1, len(layers)):
                nxt = params[j]
                if not _in_place_on(nxt, blob) or nxt.type in seen or any(layers[j].loss_weights):
                    break
                order = ("BatchNorm", "Scale", "ReLU")
                if nxt.type not in order or (seen and order.index(nxt.type) <= max(order.index(t) for t in seen)):
                    break
                if nxt.type == "BatchNorm" and not layers[j].use_global:
                    break
                if nxt.type == "Scale" and not _per_channel_scale(layers[j], net, j):
                    break
                members.append(j)
                seen.add(nxt.type)
            # Nothing may read the blob between the layers of the chain.
            if members and all(consumers.get(blob, [])[k] == m for k, m in enumerate(members)):
                chains[i] = ConvChain(net, i, tuple(members))
                i = members[-1] + 1
                continue
        if lp.type == "Eltwise" and lp.eltwise_param.operation == pb.EltwiseParameter.SUM and \
                i + 1 < len(layers) and params[i + 1].type == "ReLU" and \
                _in_place_on(params[i + 1], lp.top[0]) and not any(layers[i + 1].loss_weights) and \
                consumers.get(lp.top[0], [None])[0] == i + 1:
            chains[i] = EltwiseReLU(net, i, (i + 1,))
            i += 2
            continue
        i += 1
    return chains


def _per_channel_scale(layer, net, index):
    bottom = net._bottom(index)
    return (len(bottom) == 1 and bottom[0].num_axes >= 2 and layer.axis == 1
            and tuple(layer.blobs[0].shape) == (bottom[0].shape[1],))


def applies(net):
    """Whether this net's forward may fuse now."""
    return (net.phase == pb.TEST and not net._param.force_backward and backend.mode() == backend.CPU
            and backend.cpu_engine() == "dnnl" and backend.float_type() is np.float32
            and not net._callbacks["before_forward"] and not net._callbacks["after_forward"])

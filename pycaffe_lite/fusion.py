"""Fusion on the oneDNN engine, where nothing a user can read changes.

In a TEST-phase net without force_backward, a Convolution followed in place
(on its own top) by BatchNorm with global statistics, Scale and ReLU layers
runs as one convolution. The statistics and the scale are folded into a copy
of the weights where the weights are smaller than the output; elsewhere they
are a per-channel multiply and add after it, and the weights stay the blob's,
held once in the layout the convolution reads. The ReLU is a post-op, and so
is ResNet's Eltwise SUM after the chain (a sum into the shortcut's memory).
Eltwise SUM followed in place by ReLU runs as one binary primitive. These
chains have no backward of their own: a backward after a fused forward first
runs those layers again one by one, so that every layer's backward finds what
its own forward left.

In any phase, BatchNorm followed in place by Scale (and a ReLU) runs as one
batch normalization with scale and shift, forward and backward: the blob
holds the last layer's output, its diff the BatchNorm's bottom diff, and the
Scale's parameters get their gradients, as layer by layer; BatchNorm's
running statistics are updated once, as Caffe does.

A chain's blob ends up holding what Caffe leaves in it (the last layer's
output); the values in between were never readable, being overwritten in
place. A chain runs fused only when the whole of it is inside the forward's
range and no per-layer forward callback watches the net."""
import functools
import math

import numpy as np

from . import backend
from .proto import caffe_pb2 as pb


class Folded:
    """Folded weights as the engine takes them: kept reordered while `token`
    (made of the tokens of the blobs they come from) is unchanged. The plain
    array is made by make() when read, and dropped once the engine holds
    its reordered copy."""
    __slots__ = ("make", "array", "_token")

    def __init__(self, make, token):
        self.make, self.array, self._token = make, None, token

    def drop(self):
        self.array = None

    def blocked(self, desc):
        return None

    def adopt(self, desc, move):
        return None

    def read(self):
        if self.array is None:
            self.array = self.make()
        return self.array

    def token(self):
        return self._token


def _in_place_on(lp, blob):
    return len(lp.bottom) == 1 and len(lp.top) == 1 and lp.bottom[0] == blob and lp.top[0] == blob


class ConvChain:
    """Convolution -> [BatchNorm] -> [Scale] -> [Eltwise SUM] -> [ReLU] as
    one oneDNN convolution, in place on the convolution's top or through tops
    of their own (MobileNet v2's BatchNorm). A blob the chain leaves behind
    (`skipped`: (name, index of the last layer writing it)) is made when
    something reads it: its layers run one by one then.

    With ResNet's Eltwise SUM (`residual`: the name of its other bottom), the
    convolution adds its result to the residual's values, in the memory they
    are in when the net lets go of that blob after the sum (it is made again
    if read; activations.Activations.take_over), or else in a copy."""

    def __init__(self, net, head, members, skipped=(), residual=None):
        self.net, self.head, self.members = net, head, members
        self.skipped = tuple(skipped)
        self.residual = residual
        self.last = members[-1]
        self.conv = net.layers[head]
        kinds = {net.layers[i].type: net.layers[i] for i in members}
        self.bn, self.scale, self.relu = kinds.get("BatchNorm"), kinds.get("Scale"), kinds.get("ReLU")
        self._token = self._cached = None

    def _sources(self, weights):
        blobs = list(self.conv.blobs[0 if weights else 1:])
        for layer in (self.bn, self.scale):
            if layer is not None:
                blobs.extend(layer.blobs)
        return blobs

    def _channel_affine(self):
        """What BatchNorm and Scale do to each channel, as y * scale + shift
        (float64)."""
        m = self.conv.num_output
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
        return scale.reshape(-1), shift.reshape(-1)

    def _arguments(self, fold):
        """(folded weights or None, bias, scale, shift) for the fused
        convolution, remade only when one of the blobs they come from
        changed. Folded: the weights times the scale, a copy of their own;
        otherwise the weights are the blob's own and scale and shift are
        post-ops."""
        tokens = tuple(b.engine_data().token() for b in self._sources(fold)) + (fold,)
        if None not in tokens and tokens == self._token:
            return self._cached
        conv = self.conv
        m = conv.num_output
        b = conv.blobs[1].engine_data().read().reshape(-1) if conv.bias_term else np.zeros(m, np.float32)
        scale, shift = self._channel_affine() if (self.bn or self.scale) else (None, None)
        if fold:
            def make():
                w = conv.blobs[0].engine_data().read().astype(np.float64)
                return (w * scale.reshape((m,) + (1,) * (w.ndim - 1))).astype(np.float32)
            cached = (Folded(make, tokens if None not in tokens else None),
                      (b.astype(np.float64) * scale + shift).astype(np.float32), None, None)
        else:
            cached = (None, np.array(b, np.float32), None if scale is None else scale.astype(np.float32),
                      None if shift is None else shift.astype(np.float32))
        self._cached, self._token = cached, tokens
        return cached

    def forward(self):
        """Run the chain fused; False when the engine cannot (the caller then
        runs it layer by layer)."""
        net, conv = self.net, self.conv
        bottom, top = net._bottom(self.head), net._top(self.head)
        conv.reshape(bottom, top)
        relu = None if self.relu is None else self.relu.param.relu_param.negative_slope
        affine = self.bn is not None or self.scale is not None
        x_shape, y_shape = conv.engine_shapes(bottom[0])
        # A per-channel post-op costs a pass over the output; a folded copy
        # of the weights costs their memory: fold where the weights are the
        # smaller (depthwise ones always are)
        fold = affine and (conv.group > 1 or conv.blobs[0].count <= math.prod(y_shape))
        residual = self.residual is not None
        op = conv.fused_op(bottom, relu, affine=affine and not fold, residual=residual)
        if op is None:
            return False
        for i in self.members:
            net.layers[i].reshape(net._bottom(i), net._top(i))
        out = net._top(self.last)[0]
        if residual:
            other = net.blobs[self.residual]
            if other.shape != out.shape:
                return False
            from .kernels import dnnl
            held = net._activations.take_over(other, out, op.fwd.prim.md(dnnl.ARG_DST))
            if held is None:
                return False
            y = dnnl.Held(held)
        w, b, scale, shift = self._arguments(fold)
        if not fold:
            w = conv.blobs[0].engine_data()
        if not residual:
            y = out.engine_data(y_shape)
        op.forward(bottom[0].engine_data(x_shape), w, b, y, scale, shift)
        if fold and op.weights_reordered():
            w.drop()
        for i in (self.head,) + tuple(self.members):
            net.layers[i].engine = "dnnl"
        for name, upto in self.skipped:
            net.blobs[name]._stale = functools.partial(self._make, upto)
        return True

    def replayable(self):
        return True

    def _make(self, upto):
        """The blobs the chain left behind, up to layer `upto`'s, as the
        layers themselves would have left them."""
        net = self.net
        for name, last in self.skipped:
            if last <= upto:
                net.blobs[name]._stale = None
        with net._activations.as_seen():
            for i in range(self.head, upto + 1):
                net.layers[i].run_forward(net._bottom(i), net._top(i))


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

    def replayable(self):
        return True


class NormChain:
    """BatchNorm -> Scale [-> ReLU], in place on one blob, as one oneDNN
    batch normalization with scale and shift (and ReLU), forward and
    backward."""

    def __init__(self, net, head, members):
        self.net, self.head, self.members = net, head, members
        self.last = members[-1]
        self.bn, self.scale = net.layers[head], net.layers[members[0]]
        self.relu = net.layers[members[1]] if len(members) > 1 else None
        self.state = None

    def _indices(self):
        return (self.head,) + tuple(self.members)

    def forward(self):
        net, bn, scale = self.net, self.bn, self.scale
        for i in self._indices():
            net.layers[i].reshape(net._bottom(i), net._top(i))
        blob = net._bottom(self.head)[0]
        shape = blob.shape
        if len(shape) < 2:
            return False
        n, c = shape[0], shape[1]
        ncs = (n, c, blob.count // max(1, n * c))
        layout = bn.blocked_layout(blob)
        flat = ncs if layout is None else shape
        training = any(net._layer_need_backward[i] for i in self._indices())
        relu = self.relu is not None
        op = bn.dnnl_op(("chain", flat, layout, training, relu), lambda dnnl: dnnl.BatchNorm(
            flat, bn.eps, bn.use_global, training, layout, affine=True, relu=relu))
        if op is None:
            return False
        gamma = scale.blobs[0].engine_data().read().reshape(-1)
        beta = (scale.blobs[scale.bias_index].engine_data().read().reshape(-1) if scale.bias_index is not None
                else np.zeros(c, np.float32))
        x = blob.engine_data(flat)
        src = op.save_input(x) if training else x
        if bn.use_global:
            mean, var = bn.statistics()
        else:
            mean, var = np.empty(c, np.float32), np.empty(c, np.float32)
        op.forward(src, blob.engine_data(flat), mean, var, gamma, beta)
        if not bn.use_global:
            bn.update_statistics(mean, var, ncs[0] * ncs[2])
        self.state = (op, mean, var, gamma, flat, ncs) if training else None
        for i in self._indices():
            net.layers[i].engine = "dnnl"
        return True

    def replayable(self):
        # batch statistics are written back to the BatchNorm's blobs
        return self.bn.use_global and self.state is None

    def backward(self):
        """The three layers' backward at once; False when the forward kept
        nothing to run it from."""
        if self.state is None or self.state[0].bwd is None:
            return False
        from .kernels.dnnl import Held
        op, mean, var, gamma, flat, ncs = self.state
        net, scale = self.net, self.scale
        blob = net._bottom(self.head)[0]
        c = ncs[1]
        dscale, dshift = np.empty(c, np.float32), np.empty(c, np.float32)
        diff = blob.engine_diff(flat)
        op.backward(Held(op._saved), mean, var, diff, diff, gamma, dscale, dshift)
        if scale.param_propagate_down[0]:
            scale.blobs[0].dev_diff[...] += dscale.reshape(scale.blobs[0].shape)
        b = scale.bias_index
        if b is not None and scale.param_propagate_down[b]:
            scale.blobs[b].dev_diff[...] += dshift.reshape(scale.blobs[b].shape)
        return True

    def unfuse(self):
        """Leave in each layer what its own forward would have, so that a
        backward over part of the chain runs layer by layer (numpy)."""
        op, mean, var, gamma, flat, ncs = self.state
        bn, scale = self.bn, self.scale
        x = op.saved_input(flat).reshape(ncs)
        std = np.sqrt(var + np.float32(bn.eps)).reshape(1, -1, 1)
        y = (x - mean.reshape(1, -1, 1)) / std
        bn._engine_op, bn._std = None, std
        bn._y = None if bn.use_global else y
        scale._x = y.reshape(net_shape(self.net, self.head)) if scale.need_backward else None
        if self.relu is not None:
            self.relu._engine_op = None
        self.state = None


def net_shape(net, index):
    return net._bottom(index)[0].shape


# the forks' depthwise layers are Convolutions too (MobileNet-SSD's chains)
CONVOLUTIONS = ("Convolution", "DepthwiseConvolution", "ConvolutionDepthwise")


def plan(net, inference):
    """{index of a chain's first layer: chain} for the net's fusable chains
    (those without a backward of their own only for inference)."""
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
        if any(layer.loss_weights) or backend.numpy_forced(lp.name, lp.type):
            i += 1
            continue
        if inference and lp.type in CONVOLUTIONS and len(lp.bottom) == 1 and len(lp.top) == 1:
            blob = lp.top[0]
            members, seen, skipped = [], set(), []
            outputs = set(net.outputs)
            for j in range(i + 1, len(layers)):
                nxt = params[j]
                if len(nxt.bottom) != 1 or nxt.bottom[0] != blob or len(nxt.top) != 1 or \
                        nxt.type in seen or any(layers[j].loss_weights):
                    break
                order = ("BatchNorm", "Scale", "ReLU")
                if nxt.type not in order or (seen and order.index(nxt.type) <= max(order.index(t) for t in seen)):
                    break
                if backend.numpy_forced(nxt.name, nxt.type):
                    break
                if nxt.type == "BatchNorm" and not layers[j].use_global:
                    break
                if nxt.type == "Scale" and not _per_channel_scale(layers[j], net, j):
                    break
                if nxt.top[0] != blob:          # a top of its own: the chain moves on, leaving `blob` behind
                    if blob in outputs:
                        break
                    skipped.append((blob, j - 1))
                    blob = nxt.top[0]
                members.append(j)
                seen.add(nxt.type)
            residual = None
            if "ReLU" not in seen:
                found = _residual_sum(net, consumers, (members or [i])[-1] + 1, blob)
                if found is not None:
                    residual, sum_members = found
                    skipped.append((blob, (members or [i])[-1]))
                    members += sum_members
                    blob = params[sum_members[0]].top[0]
            if members and _reads_only(params, consumers, members, [b for b, _ in skipped], blob):
                chains[i] = ConvChain(net, i, tuple(members), skipped, residual)
                i = members[-1] + 1
                continue
        if lp.type == "BatchNorm":
            chain = _norm_chain(net, i, consumers)
            if chain is not None:
                chains[i] = chain
                i = chain.last + 1
                continue
        if inference and lp.type == "Eltwise" and lp.eltwise_param.operation == pb.EltwiseParameter.SUM and \
                i + 1 < len(layers) and params[i + 1].type == "ReLU" and \
                _in_place_on(params[i + 1], lp.top[0]) and not any(layers[i + 1].loss_weights) and \
                consumers.get(lp.top[0], [None])[0] == i + 1:
            chains[i] = EltwiseReLU(net, i, (i + 1,))
            i += 2
            continue
        i += 1
    return chains


def _residual_sum(net, consumers, j, blob):
    """(the other bottom, (j[, j + 1])) where layer j is an Eltwise SUM of
    `blob` and a blob nothing reads after it (ResNet's shortcut), with unit
    coefficients, into a top of its own, and j + 1 a ReLU in place on that
    top; None where it is not."""
    params, layers = net._param.layer, net.layers
    if j >= len(layers):
        return None
    lp = params[j]
    if lp.type != "Eltwise" or lp.eltwise_param.operation != pb.EltwiseParameter.SUM or len(lp.bottom) != 2 or \
            len(lp.top) != 1 or blob not in lp.bottom or any(c != 1.0 for c in lp.eltwise_param.coeff) or \
            any(layers[j].loss_weights) or backend.numpy_forced(lp.name, lp.type):
        return None
    other = lp.bottom[1] if lp.bottom[0] == blob else lp.bottom[0]
    top = lp.top[0]
    if other == blob or top in (other, blob) or consumers.get(other, [])[-1:] != [j] or \
            other in net.outputs or other in net.inputs or blob in net.outputs:
        return None
    members = (j,)
    if j + 1 < len(layers) and params[j + 1].type == "ReLU" and _in_place_on(params[j + 1], top) and \
            not any(layers[j + 1].loss_weights) and not backend.numpy_forced(params[j + 1].name, "ReLU") and \
            consumers.get(top, [None])[0] == j + 1:
        members += (j + 1,)
    return other, members


def _reads_only(params, consumers, members, skipped, final):
    """Nothing but the chain reads its blobs while it runs: a blob it leaves
    behind only its own next layer, the final blob nobody before the chain's
    last layer (later layers read the chain's result)."""
    for blob in skipped + [final]:
        ours = [m for m in members if blob in params[m].bottom]
        readers = consumers.get(blob, [])
        if (readers != ours) if blob != final else (readers[:len(ours)] != ours):
            return False
    return True


def _norm_chain(net, i, consumers):
    params, layers = net._param.layer, net.layers
    lp = params[i]
    if len(lp.bottom) != 1 or len(lp.top) != 1 or lp.bottom[0] != lp.top[0] or any(layers[i].loss_weights):
        return None
    blob = lp.top[0]
    members = []
    for j, kind in ((i + 1, "Scale"), (i + 2, "ReLU")):
        if j >= len(layers) or params[j].type != kind or not _in_place_on(params[j], blob) or \
                any(layers[j].loss_weights) or backend.numpy_forced(params[j].name, kind):
            break
        if kind == "Scale" and not _per_channel_scale(layers[j], net, j):
            break
        if kind == "ReLU" and params[j].relu_param.negative_slope:
            break
        members.append(j)
    readers = consumers.get(blob, [])
    at = readers.index(i) + 1
    if not members or readers[at:at + len(members)] != members:
        return None
    # Caffe writes the BatchNorm's bottom diff only where it propagates down
    if net._layer_need_backward[i] and not net._bottom_need_backward[i][0]:
        return None
    return NormChain(net, i, tuple(members))


def _per_channel_scale(layer, net, index):
    bottom = net._bottom(index)
    return (len(bottom) == 1 and bottom[0].num_axes >= 2 and layer.axis == 1
            and tuple(layer.blobs[0].shape) == (bottom[0].shape[1],))


def applies(net):
    """Whether this net's forward may fuse now: 'inference' (every chain),
    'training' (the chains with a backward of their own), or None."""
    if not (backend.mode() == backend.CPU and backend.cpu_engine() == "dnnl" and
            backend.float_type() is np.float32 and not net._callbacks["before_forward"] and
            not net._callbacks["after_forward"]):
        return None
    return "inference" if net.phase == pb.TEST and not net._param.force_backward else "training"


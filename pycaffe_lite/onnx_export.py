"""A Caffe net as an ONNX model, computing what Caffe computes.

One converter per layer type, in a registry like the layers' own. Where
ONNX's default differs from Caffe's rule the converter carries Caffe's:
pooling's output size (explicit end padding instead of ceil_mode) and its AVE
divisor at padded borders, LRN's alpha over size and its within-channel form,
BatchNorm's scale-factor blob, Deconvolution's groups and weight layout,
Crop's offsets, Eltwise's coefficients, the recurrent layers' unrolled nets
with their cont inputs. A layer without a counterpart stops the export with
an error naming it; nothing is written then.

Data layers (and Input, DummyData) become graph inputs. A data layer's
transform_param, or a pycaffe Transformer handed to export(), is written into
the model's metadata, or baked into the graph with bake_transform."""
import os

import numpy as np

from . import protoio
from .errors import ConfigError
from .proto import caffe_pb2 as pb

DATA_LAYERS = ("Input", "DummyData", "Data", "ImageData", "MemoryData", "HDF5Data", "WindowData")
NO_COUNTERPART = ("Python", "WindowData", "HDF5Output", "Accuracy", "SoftmaxWithLoss", "EuclideanLoss",
                  "SigmoidCrossEntropyLoss", "MultinomialLogisticLoss", "InfogainLoss", "HingeLoss",
                  "ContrastiveLoss", "Filter", "BatchReindex", "Im2col", "SPP",
                  # the forks'
                  "PSROIPooling", "Proposal", "SmoothL1Loss", "MultiBoxLoss", "DetectionEvaluate")

_CONVERTERS = {}


def converter(*types):
    def deco(fn):
        for t in types:
            _CONVERTERS[t] = fn
        return fn
    return deco


def supported_types():
    return sorted(_CONVERTERS)


class ExportError(ConfigError):
    """The net cannot be written as ONNX (a layer without a counterpart, a
    dynamic batch a layer cannot keep)."""


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ExportError("exporting to ONNX needs the onnx package (pip install -e '.[onnx]')") from None
    return onnx, helper, numpy_helper


class _Graph:
    """Nodes and initializers, with unique tensor names."""

    def __init__(self, opset):
        self.onnx, self.helper, self.numpy_helper = _onnx()
        self.opset = opset
        self.nodes, self.initializers, self.used = [], [], set()

    def name(self, hint):
        hint = "".join(c if c.isalnum() or c in "_./-" else "_" for c in str(hint)) or "t"
        name, i = hint, 1
        while name in self.used:
            i += 1
            name = "%s_%d" % (hint, i)
        self.used.add(name)
        return name

    def const(self, hint, array, dtype=np.float32):
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.asarray(array, dtype=dtype), name))
        return name

    def ints(self, hint, values):
        return self.const(hint, np.asarray(values, np.int64), np.int64)

    def op(self, op_type, inputs, hint, outputs=1, **attrs):
        names = [self.name(hint if outputs == 1 else "%s_%d" % (hint, i)) for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, name=self.name("node_" + hint),
                                                **attrs))
        return names[0] if outputs == 1 else names

    # ops whose signature moved between opsets
    def reduce(self, op_type, x, axes, hint, keepdims=1):
        if self.opset >= 18 or (op_type == "ReduceSum" and self.opset >= 13):
            return self.op(op_type, [x, self.ints(hint + "_axes", axes)], hint, keepdims=keepdims)
        return self.op(op_type, [x], hint, axes=list(axes), keepdims=keepdims)

    def split(self, x, sizes, axis, hint):
        if self.opset >= 13:
            return self.op("Split", [x, self.ints(hint + "_sizes", sizes)], hint, outputs=len(sizes), axis=axis)
        return self.op("Split", [x], hint, outputs=len(sizes), axis=axis, split=list(sizes))

    def slice(self, x, starts, ends, axes, hint):
        return self.op("Slice", [x, self.ints(hint + "_starts", starts), self.ints(hint + "_ends", ends),
                                 self.ints(hint + "_axes", axes)], hint)

    def reshape(self, x, shape, hint):
        return self.op("Reshape", [x, self.ints(hint + "_shape", shape)], hint)


class _Exporter:
    def __init__(self, net, opset, dynamic_batch, preprocess=None):
        self.net, self.dynamic = net, dynamic_batch
        self.g = _Graph(opset)
        self.tensor = {}                 # Caffe blob name -> the ONNX tensor holding it now
        self.shapes = {name: tuple(b.shape) for name, b in net.blobs.items()}
        self.inputs = []                 # (blob name, ONNX input name, its dims)
        self.preprocess = preprocess     # (exporter, blob, layer param, shape) -> (input, dims, tensor) or None

    def fail(self, lp, why):
        raise ExportError("layer '%s' (%s): %s" % (lp.name, lp.type, why))

    def batch_shape(self, shape, lp):
        """A Reshape target for `shape`: the batch axis copied (0) when the
        batch is dynamic."""
        shape = list(shape)
        if self.dynamic:
            if not shape:
                self.fail(lp, "its output has no batch axis; export without --dynamic_batch")
            shape[0] = 0
        return shape

    def export_layers(self, layers, params, bottoms_of, tops_of, prefix=""):
        for layer, lp, bottoms, tops in zip(layers, params, bottoms_of, tops_of):
            if lp.type in DATA_LAYERS:
                if all(prefix + t in self.tensor for t in tops):
                    continue             # bound already (a recurrent net's inputs and states)
                for t in tops:
                    shape = self.shape_of(prefix + t)
                    baked = self.preprocess and self.preprocess(self, prefix + t, lp, shape)
                    if baked:
                        name, dims, tensor = baked
                    else:
                        name = tensor = self.g.name(prefix + t)
                        dims = list(shape)
                    self.tensor[prefix + t] = tensor
                    self.inputs.append((prefix + t, name, dims))
                continue
            fn = _CONVERTERS.get(lp.type)
            if fn is None:
                raise ExportError("layer '%s' (%s) has no ONNX counterpart; export a net without it (a deploy "
                                  "net: no losses, no Python layers)" % (lp.name, lp.type))
            ins = [self.tensor[prefix + b] for b in bottoms]
            outs = fn(self, layer, lp, ins, [prefix + t for t in tops], prefix)
            for t, o in zip(tops, outs):
                self.tensor[prefix + t] = o

    def shape_of(self, name):
        return self.shapes[name]


def _net_shape(ex, name):
    return ex.shapes[name]


# -- converters -------------------------------------------------------------
def _conv_attrs(layer):
    return dict(kernel_shape=list(layer.kernel), strides=list(layer.stride), dilations=list(layer.dilation),
                pads=list(layer.pad) * 2, group=layer.group)


@converter("Convolution", "Deconvolution")
def _convolution(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    if layer.axis != 1:
        ex.fail(lp, "convolution over axis %d (ONNX convolves from axis 1)" % layer.axis)
    w = g.const(lp.name + "_w", layer.blobs[0].data)
    inputs = [ins[0], w]
    if layer.bias_term:
        inputs.append(g.const(lp.name + "_b", layer.blobs[1].data))
    # Caffe's Deconvolution weights (C_in, M/g, *k) are ONNX ConvTranspose's
    # layout; Caffe's output size s(i-1) + d(k-1) + 1 - 2p is ConvTranspose's
    # with no output padding.
    op = "ConvTranspose" if lp.type == "Deconvolution" else "Conv"
    return [g.op(op, inputs, tops[0], **_conv_attrs(layer))]


@converter("InnerProduct")
def _inner_product(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    w = layer.blobs[0].data
    wt = w if layer.transpose else w.T                      # (K, N)
    x_shape = _net_shape(ex, lp_bottom(lp, prefix))
    lead = list(x_shape[:layer.axis])
    flat = g.reshape(ins[0], ex.batch_shape([int(np.prod(lead)) if lead else 1, layer.k], lp)
                     if len(lead) == 1 else [-1, layer.k], tops[0] + "_rows")
    y = g.op("MatMul", [flat, g.const(lp.name + "_wt", wt)], tops[0] + "_mm")
    if len(layer.blobs) > 1:
        y = g.op("Add", [y, g.const(lp.name + "_b", layer.blobs[1].data)], tops[0] + "_add")
    if len(lead) == 1:
        return [g.op("Identity", [y], tops[0])]
    return [g.reshape(y, ex.batch_shape(lead + [layer.n_out], lp), tops[0])]


def lp_bottom(lp, prefix, i=0):
    return prefix + lp.bottom[i]


def caffe_pool_end_pads(size, kernel, pad, stride, out):
    """End padding that makes the floor rule give Caffe's output size."""
    return [(o - 1) * s + k - i - p for i, k, p, s, o in zip(size, kernel, pad, stride, out)]


@converter("Pooling")
def _pooling(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    masked = len(lp.top) > 1
    if masked and (layer.method != pb.PoolingParameter.MAX or layer.global_pooling):
        ex.fail(lp, "only MAX pooling over windows has a mask top ONNX can give")
    x_shape = _net_shape(ex, lp_bottom(lp, prefix))
    size, out = list(x_shape[2:]), list(layer.out_hw)
    kernel, pad, stride = list(layer.kernel), list(layer.pad), list(layer.stride)
    maximum = layer.method == pb.PoolingParameter.MAX
    if layer.global_pooling:
        return [g.op("GlobalMaxPool" if maximum else "GlobalAveragePool", ins, tops[0])]
    end = caffe_pool_end_pads(size, kernel, pad, stride, out)
    x = ins[0]
    if min(end) < 0:
        # FLOOR rounding can leave the last rows unread: cut them off
        keep = [s + e for s, e in zip(size, end)]
        x = g.slice(x, [0, 0], keep, [2, 3], tops[0] + "_unread")
        end = [max(0, e) for e in end]
    if maximum and masked:
        y, index = g.op("MaxPool", [x], tops[0], outputs=2, kernel_shape=kernel, strides=stride, pads=pad + end)
        return [y, _caffe_mask(g, index, size, [s + min(0, e) for s, e in zip(size, caffe_pool_end_pads(
            size, kernel, pad, stride, out))], tops[1])]
    if maximum:
        # ONNX's MaxPool ignores padding, as Caffe's window clipped to the image
        return [g.op("MaxPool", [x], tops[0], kernel_shape=kernel, strides=stride, pads=pad + end)]
    # Caffe divides by the window clipped to the padded input (size + pad):
    # the whole kernel while no window passes it; else pad explicitly with
    # zeros that count and leave the overhang uncounted.
    if all(e <= p for p, e in zip(pad, end)):
        return [g.op("AveragePool", [x], tops[0], kernel_shape=kernel, strides=stride, pads=pad + end,
                     count_include_pad=1)]
    if any(pad):
        x = g.op("Pad", [x, g.ints(tops[0] + "_pads", [0, 0] + pad + [0, 0] + pad)], tops[0] + "_padded")
        end = [e - p for p, e in zip(pad, end)]
    return [g.op("AveragePool", [x], tops[0], kernel_shape=kernel, strides=stride, pads=[0, 0] + end,
                 count_include_pad=0)]


def _caffe_mask(g, index, size, read, hint):
    """Caffe's MAX mask (h * W + w within each plane, as floats) from ONNX's
    indices into the whole (possibly row- or column-cut: `read`) tensor."""
    plane = g.op("Mod", [index, g.ints(hint + "_area", [read[0] * read[1]])], hint + "_plane")
    if read[1] != size[1]:
        h = g.op("Div", [plane, g.ints(hint + "_rw", [read[1]])], hint + "_h")
        w = g.op("Mod", [plane, g.ints(hint + "_rw2", [read[1]])], hint + "_w")
        plane = g.op("Add", [g.op("Mul", [h, g.ints(hint + "_W", [size[1]])], hint + "_hW"), w], hint + "_hw")
    return g.op("Cast", [plane], hint, to=1)


@converter("LRN")
def _lrn(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    if not layer.within:
        # ONNX's LRN divides alpha by size, as Caffe does
        return [g.op("LRN", ins, tops[0], size=layer.size, alpha=float(layer.alpha), beta=float(layer.beta),
                     bias=float(layer.k))]
    # within a channel: x (1 + alpha/n^2 sum over n x n of x^2)^-beta, zero padded
    n, pad = layer.size, (layer.size - 1) // 2
    sq = g.op("Mul", [ins[0], ins[0]], tops[0] + "_sq")
    avg = g.op("AveragePool", [sq], tops[0] + "_avg", kernel_shape=[n, n], strides=[1, 1], pads=[pad] * 4,
               count_include_pad=1)
    scale = g.op("Add", [g.op("Mul", [avg, g.const(tops[0] + "_alpha", layer.alpha)], tops[0] + "_a"),
                         g.const(tops[0] + "_one", 1.0)], tops[0] + "_scale")
    return [g.op("Mul", [ins[0], g.op("Pow", [scale, g.const(tops[0] + "_beta", -layer.beta)], tops[0] + "_pow")],
                 tops[0])]


@converter("ReLU")
def _relu(ex, layer, lp, ins, tops, prefix):
    s = lp.relu_param.negative_slope
    if s:
        return [ex.g.op("LeakyRelu", ins, tops[0], alpha=float(s))]
    return [ex.g.op("Relu", ins, tops[0])]


@converter("Sigmoid", "TanH", "AbsVal", "BNLL")
def _simple_neuron(ex, layer, lp, ins, tops, prefix):
    op = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}[lp.type]
    return [ex.g.op(op, ins, tops[0])]


@converter("Dropout")
def _dropout(ex, layer, lp, ins, tops, prefix):
    if not lp.dropout_param.scale_train:         # Fast R-CNN's: scaled at test time
        keep = np.float32(1) - np.float32(lp.dropout_param.dropout_ratio)
        return [ex.g.op("Mul", [ins[0], ex.g.const(tops[0] + "_keep", keep)], tops[0])]
    return [ex.g.op("Identity", ins, tops[0])]      # inference: Caffe's TEST Dropout passes its input


@converter("ELU")
def _elu(ex, layer, lp, ins, tops, prefix):
    return [ex.g.op("Elu", ins, tops[0], alpha=float(lp.elu_param.alpha))]


@converter("PReLU")
def _prelu(ex, layer, lp, ins, tops, prefix):
    a = layer.blobs[0].data
    rank = len(_net_shape(ex, lp_bottom(lp, prefix)))
    slope = a.reshape(()) if a.ndim == 0 else a.reshape((-1,) + (1,) * (rank - 2))
    return [ex.g.op("PRelu", [ins[0], ex.g.const(lp.name + "_slope", slope)], tops[0])]


@converter("Power")
def _power(ex, layer, lp, ins, tops, prefix):
    g, p = ex.g, lp.power_param
    x = ins[0]
    if p.scale != 1:
        x = g.op("Mul", [x, g.const(tops[0] + "_scale", p.scale)], tops[0] + "_scaled")
    if p.shift != 0:
        x = g.op("Add", [x, g.const(tops[0] + "_shift", p.shift)], tops[0] + "_shifted")
    if p.power == 1:
        return [g.op("Identity", [x], tops[0])]
    return [g.op("Pow", [x, g.const(tops[0] + "_power", p.power)], tops[0])]


@converter("Exp")
def _exp(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    y = g.op("Exp", [g.op("Mul", [ins[0], g.const(tops[0] + "_inner", layer._inner)], tops[0] + "_in")],
             tops[0] + "_exp")
    return [g.op("Mul", [y, g.const(tops[0] + "_outer", layer._outer)], tops[0])]


@converter("Log")
def _log(ex, layer, lp, ins, tops, prefix):
    g, p = ex.g, lp.log_param
    inner = g.op("Add", [g.op("Mul", [ins[0], g.const(tops[0] + "_scale", p.scale)], tops[0] + "_s"),
                         g.const(tops[0] + "_shift", p.shift)], tops[0] + "_inner")
    return [g.op("Mul", [g.op("Log", [inner], tops[0] + "_log"), g.const(tops[0] + "_base", layer._base_scale)],
                 tops[0])]


@converter("Clip")
def _clip(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    return [g.op("Clip", [ins[0], g.const(tops[0] + "_min", np.float32(layer._lo)),
                          g.const(tops[0] + "_max", np.float32(layer._hi))], tops[0])]


@converter("Swish")
def _swish(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    s = g.op("Sigmoid", [g.op("Mul", [ins[0], g.const(tops[0] + "_beta", layer._beta)], tops[0] + "_bx")],
             tops[0] + "_sig")
    return [g.op("Mul", [ins[0], s], tops[0])]


@converter("Threshold")
def _threshold(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    above = g.op("Greater", [ins[0], g.const(tops[0] + "_t", lp.threshold_param.threshold)], tops[0] + "_gt")
    return [g.op("Cast", [above], tops[0], to=1)]


def _channel_param(ex, array, rank, axis=1):
    """A per-channel (C,) array shaped to broadcast over (N, C, ...)."""
    return np.asarray(array, np.float32).reshape((1,) * axis + (-1,) + (1,) * (rank - axis - 1))


@converter("BatchNorm")
def _batch_norm(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    rank = len(_net_shape(ex, lp_bottom(lp, prefix)))
    c = layer.blobs[0].shape[0]
    if layer.use_global:
        # Caffe's statistics are the blobs over the scale factor blob (0 -> 0)
        f = float(layer.blobs[2].data.reshape(-1)[0])
        f = 0.0 if f == 0 else 1.0 / f
        mean = layer.blobs[0].data * np.float32(f)
        var = layer.blobs[1].data * np.float32(f)
        if rank >= 3:
            return [g.op("BatchNormalization", [ins[0], g.const(lp.name + "_gamma", np.ones(c)),
                                                g.const(lp.name + "_beta", np.zeros(c)),
                                                g.const(lp.name + "_mean", mean), g.const(lp.name + "_var", var)],
                         tops[0], epsilon=float(layer.eps))]
        centered = g.op("Sub", [ins[0], g.const(lp.name + "_mean", _channel_param(ex, mean, rank))], tops[0] + "_c")
        std = np.sqrt(var + np.float32(layer.eps))
        return [g.op("Div", [centered, g.const(lp.name + "_std", _channel_param(ex, std, rank))], tops[0])]
    # batch statistics (use_global_stats: false in TEST): Caffe's biased variance
    axes = [0] + list(range(2, rank))
    mean = g.reduce("ReduceMean", ins[0], axes, tops[0] + "_mean")
    centered = g.op("Sub", [ins[0], mean], tops[0] + "_c")
    var = g.reduce("ReduceMean", g.op("Mul", [centered, centered], tops[0] + "_sq"), axes, tops[0] + "_var")
    std = g.op("Sqrt", [g.op("Add", [var, g.const(tops[0] + "_eps", layer.eps)], tops[0] + "_v")], tops[0] + "_std")
    return [g.op("Div", [centered, std], tops[0])]


def _affine_operand(ex, layer, lp, ins, prefix, blob_index, hint):
    """Scale's or Bias's operand, shaped to broadcast as Caffe lines it up."""
    shape = layer._bshape
    if len(ins) > 1:
        return ex.g.reshape(ins[1], list(shape), hint + "_operand")
    return ex.g.const(hint, layer.blobs[blob_index].data.reshape(shape))


@converter("Scale")
def _scale(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    y = g.op("Mul", [ins[0], _affine_operand(ex, layer, lp, ins, prefix, 0, lp.name + "_scale")],
             tops[0] + ("_scaled" if layer.bias_index is not None else ""))
    if layer.bias_index is None:
        return [y]
    bias = g.const(lp.name + "_bias", layer.blobs[layer.bias_index].data.reshape(layer._bshape))
    return [g.op("Add", [y, bias], tops[0])]


@converter("Bias")
def _bias(ex, layer, lp, ins, tops, prefix):
    return [ex.g.op("Add", [ins[0], _affine_operand(ex, layer, lp, ins, prefix, 0, lp.name + "_bias")], tops[0])]


@converter("MVN")
def _mvn(ex, layer, lp, ins, tops, prefix):
    g, p = ex.g, lp.mvn_param
    shape = _net_shape(ex, lp_bottom(lp, prefix))
    axes = list(range(1 if p.across_channels else 2, max(len(shape), 2)))
    if not axes:
        ex.fail(lp, "nothing to normalize over")
    mean = g.reduce("ReduceMean", ins[0], axes, tops[0] + "_mean")
    y = g.op("Sub", [ins[0], mean], tops[0] + ("_c" if p.normalize_variance else ""))
    if not p.normalize_variance:
        return [y]
    var = g.reduce("ReduceMean", g.op("Mul", [y, y], tops[0] + "_sq"), axes, tops[0] + "_var")
    # Caffe adds eps to the standard deviation, not the variance
    std = g.op("Add", [g.op("Sqrt", [var], tops[0] + "_sd"), g.const(tops[0] + "_eps", p.eps)], tops[0] + "_std")
    return [g.op("Div", [y, std], tops[0])]


@converter("Softmax")
def _softmax(ex, layer, lp, ins, tops, prefix):
    axis = layer.axis if hasattr(layer, "axis") else lp.softmax_param.axis
    rank = len(_net_shape(ex, lp_bottom(lp, prefix)))
    axis = axis + rank if axis < 0 else axis
    if ex.g.opset >= 13:
        return [ex.g.op("Softmax", ins, tops[0], axis=axis)]
    # before opset 13 Softmax flattens from the axis: move it last
    perm = [i for i in range(rank) if i != axis] + [axis]
    inverse = list(np.argsort(perm))
    t = ex.g.op("Transpose", ins, tops[0] + "_t", perm=perm)
    s = ex.g.op("Softmax", [t], tops[0] + "_s", axis=rank - 1)
    return [ex.g.op("Transpose", [s], tops[0], perm=[int(i) for i in inverse])]


@converter("Concat")
def _concat(ex, layer, lp, ins, tops, prefix):
    if len(ins) == 1:
        return [ex.g.op("Identity", ins, tops[0])]
    return [ex.g.op("Concat", ins, tops[0], axis=layer._axis)]


@converter("Slice")
def _slice(ex, layer, lp, ins, tops, prefix):
    sizes = [b - a for a, b in zip(layer._bounds[:-1], layer._bounds[1:])]
    if len(sizes) == 1:
        return [ex.g.op("Identity", ins, tops[0])]
    return ex.g.split(ins[0], sizes, layer._axis, tops[0])


@converter("Split")
def _split(ex, layer, lp, ins, tops, prefix):
    return [ex.g.op("Identity", ins, t) for t in tops]


@converter("Silence")
def _silence(ex, layer, lp, ins, tops, prefix):
    return []


@converter("Eltwise")
def _eltwise(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    op = layer._op
    if op == pb.EltwiseParameter.PROD:
        y = ins[0]
        for i, x in enumerate(ins[1:]):
            y = g.op("Mul", [y, x], tops[0] if i == len(ins) - 2 else tops[0] + "_p%d" % i)
        return [y]
    if op == pb.EltwiseParameter.MAX:
        # ties go to the earlier bottom in Caffe; the maximum is the same value
        return [g.op("Max", ins, tops[0])]
    terms = []
    for i, (x, c) in enumerate(zip(ins, layer._coeff)):
        terms.append(x if c == 1.0 else g.op("Mul", [x, g.const(tops[0] + "_coeff%d" % i, c)],
                                               tops[0] + "_term%d" % i))
    y = terms[0]
    for i, t in enumerate(terms[1:]):
        y = g.op("Add", [y, t], tops[0] if i == len(terms) - 2 else tops[0] + "_s%d" % i)
    return [y]


@converter("Flatten", "Reshape")
def _reshape(ex, layer, lp, ins, tops, prefix):
    shape = list(_net_shape(ex, tops[0]))
    return [ex.g.reshape(ins[0], ex.batch_shape(shape, lp), tops[0])]


@converter("Crop")
def _crop(ex, layer, lp, ins, tops, prefix):
    index = layer._index
    axes = [i for i, s in enumerate(index) if s != slice(None)]
    if not axes:
        return [ex.g.op("Identity", ins[:1], tops[0])]
    if ex.dynamic and 0 in axes:
        ex.fail(lp, "it crops the batch axis; export without --dynamic_batch")
    return [ex.g.slice(ins[0], [index[a].start for a in axes], [index[a].stop for a in axes], axes, tops[0])]


@converter("Tile")
def _tile(ex, layer, lp, ins, tops, prefix):
    shape = list(_net_shape(ex, lp_bottom(lp, prefix)))
    # Caffe repeats the whole block from `axis` on: fold it into one axis
    lead, inner = shape[:layer.axis], int(np.prod(shape[layer.axis:]))
    block = ex.g.reshape(ins[0], ex.batch_shape(lead + [inner], lp) if lead else [inner], tops[0] + "_block")
    repeats = [1] * len(lead) + [layer.tiles]
    tiled = ex.g.op("Tile", [block, ex.g.ints(tops[0] + "_repeats", repeats)], tops[0] + "_tiled")
    return [ex.g.reshape(tiled, ex.batch_shape(list(_net_shape(ex, tops[0])), lp), tops[0])]


@converter("Reduction")
def _reduction(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    R = pb.ReductionParameter
    shape = list(_net_shape(ex, lp_bottom(lp, prefix)))
    rows = g.reshape(ins[0], ex.batch_shape(shape[:layer.axis] + [layer.dim], lp) if layer.axis else [1, layer.dim],
                     tops[0] + "_rows")
    if layer.op == R.ASUM:
        rows = g.op("Abs", [rows], tops[0] + "_abs")
    elif layer.op == R.SUMSQ:
        rows = g.op("Mul", [rows, rows], tops[0] + "_sq")
    last = max(1, layer.axis)
    total = g.reduce("ReduceSum", rows, [last], tops[0] + "_sum", keepdims=0)
    out = g.op("Mul", [total, g.const(tops[0] + "_coeff", layer.coeff)], tops[0] + "_scaled")
    return [g.reshape(out, ex.batch_shape(list(_net_shape(ex, tops[0])), lp) if layer.axis else [], tops[0])]


@converter("ArgMax")
def _argmax(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    shape = list(_net_shape(ex, lp_bottom(lp, prefix)))
    if layer.has_axis:
        x, axis = ins[0], layer.axis_
    else:
        x, axis = g.reshape(ins[0], ex.batch_shape([shape[0], int(np.prod(shape[1:]))], lp), tops[0] + "_rows"), 1
    # Caffe breaks ties towards the larger index: rank the reversed axis
    n = (shape[axis] if layer.has_axis else int(np.prod(shape[1:])))
    rev = g.op("Slice", [x, g.ints(tops[0] + "_rs", [-1]), g.ints(tops[0] + "_re", [-(n + 1)]),
                         g.ints(tops[0] + "_ra", [axis]), g.ints(tops[0] + "_rstep", [-1])], tops[0] + "_rev")
    values, idx = g.op("TopK", [rev, g.ints(tops[0] + "_k", [layer.top_k])], tops[0] + "_topk", outputs=2,
                       axis=axis, largest=1, sorted=1)
    index = g.op("Sub", [g.ints(tops[0] + "_last", [n - 1]), idx], tops[0] + "_idx")
    findex = g.op("Cast", [index], tops[0] + "_findex", to=1)
    out_shape = list(_net_shape(ex, tops[0]))
    if layer.has_axis:
        return [g.op("Identity", [values if layer.out_max_val else findex], tops[0])]
    if layer.out_max_val:
        pair = g.op("Concat", [g.op("Unsqueeze", [findex, g.ints(tops[0] + "_u1", [1])], tops[0] + "_ui"),
                               g.op("Unsqueeze", [values, g.ints(tops[0] + "_u2", [1])], tops[0] + "_uv")],
                    tops[0] + "_pair", axis=1)
        return [g.reshape(pair, ex.batch_shape(out_shape, lp), tops[0])]
    return [g.reshape(findex, ex.batch_shape(out_shape, lp), tops[0])]


@converter("Embed")
def _embed(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    idx = g.op("Cast", ins, tops[0] + "_idx", to=7)
    y = g.op("Gather", [g.const(lp.name + "_w", layer.blobs[0].data), idx], tops[0] + ("_rows" if len(layer.blobs) > 1
                                                                                       else ""), axis=0)
    if len(layer.blobs) > 1:
        y = g.op("Add", [y, g.const(lp.name + "_b", layer.blobs[1].data)], tops[0])
    return [y]


@converter("Parameter")
def _parameter(ex, layer, lp, ins, tops, prefix):
    return [ex.g.const(tops[0], layer.blobs[0].data)]


@converter("LSTMUnit")
def _lstm_unit(ex, layer, lp, ins, tops, prefix):
    """Caffe's LSTMUnit: gates i, f, o, g; f masked by cont; c, then h."""
    g = ex.g
    c_prev, x, cont = ins
    h = layer.h
    i, f, o, gg = g.split(x, [h] * 4, 2, tops[0] + "_gates")
    i = g.op("Sigmoid", [i], tops[0] + "_i")
    f = g.op("Mul", [g.op("Sigmoid", [f], tops[0] + "_f"),
                     g.op("Unsqueeze", [cont, g.ints(tops[0] + "_ax", [2])], tops[0] + "_cont")], tops[0] + "_fc")
    o = g.op("Sigmoid", [o], tops[0] + "_o")
    gg = g.op("Tanh", [gg], tops[0] + "_g")
    c = g.op("Add", [g.op("Mul", [f, c_prev], tops[0] + "_fprev"), g.op("Mul", [i, gg], tops[0] + "_ig")], tops[0])
    out = g.op("Mul", [o, g.op("Tanh", [c], tops[1] + "_tanh")], tops[1])
    return [c, out]


@converter("LSTM", "RNN")
def _recurrent(ex, layer, lp, ins, tops, prefix):
    """Caffe's own unrolled net, inlined: its layers, its parameter blobs, the
    state it starts from at the first call (zeros; cont 0 at t = 0 resets any)."""
    if ex.dynamic:
        ex.fail(lp, "its unrolled net is built for a batch of %d; export without --dynamic_batch" % layer.N)
    layer._relink()
    inner = layer.net
    here = prefix + lp.name + "/"
    for name, blob in inner.blobs.items():
        ex.shapes[here + name] = tuple(blob.shape)
    names = ["x", "cont"] + (["x_static"] if layer.static else [])
    for name, t in zip(names, ins):
        ex.tensor[here + name] = t
    if layer.expose:
        for name, t in zip(layer.recur_inputs, ins[2 + layer.static:]):
            ex.tensor[here + name] = t
    else:
        for name in layer.recur_inputs:
            ex.tensor[here + name] = ex.g.const(here + name, np.zeros(inner.blobs[name].shape))
    layers = inner.layers[1:layer._last + 1]                 # not its Input, nor the pseudo-loss
    params = inner._param.layer[1:layer._last + 1]
    ex.export_layers(layers, params, [list(p.bottom) for p in params], [list(p.top) for p in params], here)
    outs = [ex.tensor[here + layer.output]]
    if layer.expose:
        outs += [ex.tensor[here + name] for name in layer.recur_outputs]
    return [ex.g.op("Identity", [o], t) for o, t in zip(outs, tops)]


# -- the model ----------------------------------------------------------------
def transform_metadata(net, transformer=None):
    """{key: value} describing the preprocessing the net's inputs expect:
    its data layers' transform_param, or a pycaffe Transformer's settings."""
    meta = {}
    for lp in net._param.layer:
        if lp.type in DATA_LAYERS and lp.HasField("transform_param"):
            t = lp.transform_param
            for top in lp.top[:1]:
                key = "caffe.transform.%s." % top
                if t.scale != 1:
                    meta[key + "scale"] = repr(t.scale)
                if len(t.mean_value):
                    meta[key + "mean_value"] = ",".join(repr(v) for v in t.mean_value)
                if t.mean_file:
                    meta[key + "mean_file"] = t.mean_file
                if t.crop_size:
                    meta[key + "crop_size"] = str(t.crop_size)
                meta[key + "order"] = "(x - mean) * scale, C x H x W, as the data layer's (BGR for ImageNet models)"
    if transformer is not None:
        for name in transformer.inputs:
            key = "caffe.transformer.%s." % name
            for field in ("transpose", "channel_swap", "raw_scale", "input_scale"):
                value = getattr(transformer, field).get(name)
                if value is not None:
                    meta[key + field] = repr(value if np.isscalar(value) else [float(v) if isinstance(
                        v, (float, np.floating)) else int(v) for v in value])
            mean = transformer.mean.get(name)
            if mean is not None:
                m = np.asarray(mean, np.float32)
                meta[key + "mean"] = ",".join(repr(float(v)) for v in m.reshape(-1)) if m.size <= 16 else \
                    "per-pixel mean of shape %s (baked into the graph with bake_transform)" % (m.shape,)
            meta[key + "order"] = ("image H x W x K in [0, 1] -> transpose -> channel_swap -> * raw_scale -> "
                                   "- mean -> * input_scale, as caffe.io.Transformer.preprocess")
    return meta


def _preprocessor(transformer):
    """The preprocessing a graph input gets when baked in: a pycaffe
    Transformer's for its inputs, else the data layer's transform_param."""
    def bake(ex, blob, lp, shape):
        g = ex.g
        t = transformer
        if t is not None and blob in t.inputs:
            order = t.transpose.get(blob)
            dims = list(shape) if order is None else [shape[0]] + [shape[1 + list(order).index(i)]
                                                                 for i in range(len(order))]
            raw = x = g.name(blob + "_image")
            if order is not None:
                x = g.op("Transpose", [x], blob + "_transposed", perm=[0] + [int(a) + 1 for a in order])
            if blob in t.channel_swap:
                x = g.op("Gather", [x, g.ints(blob + "_swap", list(t.channel_swap[blob]))], blob + "_swapped",
                         axis=1)
            if blob in t.raw_scale:
                x = g.op("Mul", [x, g.const(blob + "_raw_scale", t.raw_scale[blob])], blob + "_raw")
            if blob in t.mean:
                x = g.op("Sub", [x, g.const(blob + "_mean", np.asarray(t.mean[blob], np.float32)[None])],
                         blob + "_centered")
            if blob in t.input_scale:
                x = g.op("Mul", [x, g.const(blob + "_input_scale", t.input_scale[blob])], blob + "_scaled")
            return raw, dims, x
        if not lp.HasField("transform_param") or blob != lp.top[0]:
            return None
        p = lp.transform_param
        raw = x = g.name(blob + "_raw")
        dims = list(shape)
        mean = None
        if p.mean_file:
            from . import protoio
            from .blob import proto_shape
            proto = protoio.read_binary(p.mean_file, pb.BlobProto())
            mean = np.asarray(proto.data, np.float32).reshape(proto_shape(proto))[0]
            dims = list(shape[:2]) + list(mean.shape[1:])
        elif len(p.mean_value):
            values = list(p.mean_value) if len(p.mean_value) > 1 else list(p.mean_value) * shape[1]
            mean = np.asarray(values, np.float32).reshape(-1, 1, 1)
        if p.crop_size and mean is None and len(shape) == 4:
            ex.fail(lp, "baking its crop needs the uncropped size (a mean_file gives it); export without "
                        "bake_transform, or with an Input layer")
        if mean is not None:
            x = g.op("Sub", [x, g.const(blob + "_mean", mean[None])], blob + "_centered")
        if p.crop_size and dims[-1] != shape[-1]:
            h0, w0 = (dims[2] - p.crop_size) // 2, (dims[3] - p.crop_size) // 2        # TEST: the centre
            x = g.slice(x, [h0, w0], [h0 + p.crop_size, w0 + p.crop_size], [2, 3], blob + "_crop")
        if p.scale != 1:
            x = g.op("Mul", [x, g.const(blob + "_scale", p.scale)], blob + "_scaled")
        return raw, dims, x
    return bake


def _rename(g, old, new):
    for node in g.nodes:
        for field in (node.input, node.output):
            for i, v in enumerate(field):
                if v == old:
                    field[i] = new


def export(net, path, opset=17, dynamic_batch=False, outputs=(), transformer=None, bake_transform=False,
           producer="pycaffe_lite"):
    """Write `net` (a pycaffe_lite Net, its weights as they are now) to `path`
    as ONNX; returns the path. `outputs` adds blobs to the net's outputs;
    `transformer` (caffe.io.Transformer) describes the inputs' preprocessing,
    written into the metadata or, with bake_transform, into the graph (as is
    a data layer's transform_param)."""
    onnx, helper, _ = _onnx()
    if not 13 <= int(opset) <= 21:
        raise ExportError("opset %s: this exporter writes opsets 13 to 21" % opset)
    ex = _Exporter(net, int(opset), dynamic_batch, _preprocessor(transformer) if bake_transform else None)
    params = net._param.layer
    ex.export_layers(net.layers, params, [list(p.bottom) for p in params], [list(p.top) for p in params])
    # Caffe's outputs are the blobs nothing reads: a data layer's label among
    # them is an input, not a result (unless asked for)
    given = {blob for blob, _, _ in ex.inputs}
    wanted = [o for o in net.outputs if o not in given or o in outputs]
    wanted += [o for o in outputs if o not in wanted]
    for name in wanted:
        if name not in ex.tensor:
            raise ExportError("'%s' is not a blob of this net (its blobs: %s)" % (name, ", ".join(net.blobs)))
    g = ex.g
    read = {i for n in g.nodes for i in n.input}
    graph_inputs = []
    for blob, name, dims in ex.inputs:
        if name not in read and ex.tensor[blob] not in read and blob not in wanted:
            continue                     # a label no exported layer reads
        dims = list(dims)
        if dynamic_batch and dims:
            dims[0] = "N"
        graph_inputs.append(helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    # outputs named as their blobs: an in-place chain's earlier tensors step aside
    input_names = {i.name for i in graph_inputs}
    for name in wanted:
        t = ex.tensor[name]
        if t == name or name in input_names or t in input_names:
            continue
        if name in g.used:
            _rename(g, name, g.name(name + "_before"))
        _rename(g, t, name)
        g.used.add(name)
        ex.tensor = {k: (name if v == t else v) for k, v in ex.tensor.items()}
    graph_outputs, out_nodes, taken = [], [], set(input_names)
    for name in wanted:
        t = ex.tensor[name]
        out_name = t
        if t != name or t in taken:
            out_name = g.name(name)
            out_nodes.append(helper.make_node("Identity", [t], [out_name], name=g.name("node_out_" + name)))
        taken.add(out_name)
        dims = list(ex.shapes[name])
        if dynamic_batch and dims:
            dims[0] = "N"
        graph_outputs.append(helper.make_tensor_value_info(out_name, onnx.TensorProto.FLOAT, dims))
    graph = helper.make_graph(g.nodes + out_nodes, net.name or "caffe_net", graph_inputs, graph_outputs,
                              initializer=g.initializers)
    model = helper.make_model(graph, producer_name=producer, opset_imports=[helper.make_opsetid("", int(opset))])
    model.ir_version = min(model.ir_version, _IR_FOR_OPSET.get(int(opset), model.ir_version))
    meta = transform_metadata(net, transformer)
    meta["caffe.outputs"] = ",".join(wanted)
    meta["caffe.output_tensors"] = ",".join(o.name for o in graph_outputs)
    meta["caffe.preprocessing"] = "baked into the graph" if bake_transform else "not in the graph (see caffe.transform*)"
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    path = os.fspath(path)
    protoio.atomic_write(path, model.SerializeToString())     # never a half-written model
    return path


# the IR version each opset came with: older runtimes read these
_IR_FOR_OPSET = {9: 4, 10: 5, 11: 6, 12: 7, 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}


# -- the forks' layers ----------------------------------------------------------
@converter("DepthwiseConvolution", "ConvolutionDepthwise")
def _depthwise(ex, layer, lp, ins, tops, prefix):
    return _convolution(ex, layer, lp, ins, tops, prefix)


@converter("Normalize", "NormalizeBBox")
def _normalize(ex, layer, lp, ins, tops, prefix):
    """x / sqrt(sum x^2 + eps) * scale: Caffe's eps sits inside the root,
    which ONNX's ReduceL2 has no room for."""
    g = ex.g
    rank = len(_net_shape(ex, lp_bottom(lp, prefix)))
    axes = list(range(1, rank)) if layer.across else [1]
    sq = g.reduce("ReduceSumSquare", ins[0], axes, tops[0] + "_sumsq")
    norm = g.op("Sqrt", [g.op("Add", [sq, g.const(tops[0] + "_eps", np.float32(layer.eps))], tops[0] + "_eps_add")],
                tops[0] + "_norm")
    y = g.op("Div", [ins[0], norm], tops[0] + "_unit")
    scale = layer.blobs[0].data
    scale = np.float32(scale.reshape(())) if layer.shared else _channel_param(ex, scale, rank)
    return [g.op("Mul", [y, g.const(tops[0] + "_scale", scale)], tops[0])]


@converter("Permute")
def _permute(ex, layer, lp, ins, tops, prefix):
    return [ex.g.op("Transpose", ins, tops[0], perm=list(layer.order))]


@converter("PriorBox")
def _prior_box(ex, layer, lp, ins, tops, prefix):
    """A constant: the priors depend on the bottoms' shapes alone."""
    feat = _net_shape(ex, lp_bottom(lp, prefix))
    image = _net_shape(ex, lp_bottom(lp, prefix, 1)) if len(lp.bottom) > 1 else (0, 0, 0, 0)
    corners = layer.priors(tuple(feat[2:4]), tuple(image[2:4]))
    var = np.broadcast_to(layer.variance if len(layer.variance) == 4 else layer.variance[:1], corners.shape)
    value = np.stack([corners.reshape(-1), np.ascontiguousarray(var).reshape(-1)]).reshape(1, 2, -1)
    return [ex.g.op("Identity", [ex.g.const(tops[0] + "_value", value)], tops[0])]


@converter("ReLU6")
def _relu6(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    return [g.op("Clip", [ins[0], g.const(tops[0] + "_min", np.float32(0)), g.const(tops[0] + "_max", np.float32(6))],
                 tops[0])]


@converter("Axpy")
def _axpy(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    a, x, y = ins
    rank = len(_net_shape(ex, lp_bottom(lp, prefix, 1)))
    a_shape = _net_shape(ex, lp_bottom(lp, prefix, 0))
    if len(a_shape) != rank:
        a = g.reshape(a, ex.batch_shape(list(a_shape[:2]) + [1] * (rank - 2), lp), tops[0] + "_a")
    return [g.op("Add", [g.op("Mul", [a, x], tops[0] + "_ax"), y], tops[0])]


@converter("ShuffleChannel")
def _shuffle_channel(ex, layer, lp, ins, tops, prefix):
    g = ex.g
    shape = list(_net_shape(ex, lp_bottom(lp, prefix)))
    n, c = shape[:2]
    rest = int(np.prod(shape[2:], dtype=np.int64))
    grouped = g.reshape(ins[0], ex.batch_shape([n, layer.group, c // layer.group, rest], lp), tops[0] + "_groups")
    swapped = g.op("Transpose", [grouped], tops[0] + "_swap", perm=[0, 2, 1, 3])
    return [g.reshape(swapped, ex.batch_shape(shape, lp), tops[0])]


@converter("Interp")
def _interp(ex, layer, lp, ins, tops, prefix):
    """DeepLab's interp2 is Resize's linear mode with aligned corners, after
    the crop of pad_beg / pad_end."""
    g = ex.g
    off, eh, ew = layer.crop
    shape = _net_shape(ex, lp_bottom(lp, prefix))
    x = ins[0]
    if (eh, ew) != tuple(shape[2:4]):
        x = g.slice(x, [off, off], [off + eh, off + ew], [2, 3], tops[0] + "_crop")
    out = _net_shape(ex, tops[0])
    if (eh, ew) == tuple(out[2:4]):
        return [g.op("Identity", [x], tops[0])]
    if ex.dynamic:
        scales = g.const(tops[0] + "_scales", np.array([1, 1, out[2] / eh, out[3] / ew], np.float32))
        return [g.op("Resize", [x, "", scales], tops[0], mode="linear", coordinate_transformation_mode="align_corners")]
    return [g.op("Resize", [x, "", "", g.ints(tops[0] + "_sizes", list(out))], tops[0], mode="linear",
                 coordinate_transformation_mode="align_corners")]


@converter("Upsample")
def _upsample(ex, layer, lp, ins, tops, prefix):
    """One bottom: Resize, nearest, by the scale. With a mask: MaxUnpool,
    the mask's per-plane indices made whole-tensor ones as ONNX wants."""
    g = ex.g
    out = list(_net_shape(ex, tops[0]))
    if len(ins) == 1:
        scales = g.const(tops[0] + "_scales", np.array([1, 1, layer.scale[0], layer.scale[1]], np.float32))
        return [g.op("Resize", [ins[0], "", scales], tops[0], mode="nearest",
                     coordinate_transformation_mode="asymmetric", nearest_mode="floor")]
    if ex.dynamic:
        ex.fail(lp, "unpooling by a mask needs the batch size; export without --dynamic_batch")
    n, c = out[:2]
    area = out[2] * out[3]
    base = (np.arange(n * c, dtype=np.int64) * area).reshape(n, c, 1, 1)
    index = g.op("Add", [g.op("Cast", [ins[1]], tops[0] + "_mask_int", to=7), g.ints(tops[0] + "_planes", base)],
                 tops[0] + "_index")
    return [g.op("MaxUnpool", [ins[0], index, g.ints(tops[0] + "_shape", out)], tops[0],
                 kernel_shape=[layer.scale[0] if layer.size is None else 2] * 2,
                 strides=[layer.scale[0] if layer.size is None else 2] * 2)]


@converter("ROIPooling")
def _roi_pooling(ex, layer, lp, ins, tops, prefix):
    return [ex.g.op("MaxRoiPool", ins, tops[0], pooled_shape=list(layer.pooled), spatial_scale=float(layer.scale))]


@converter("DetectionOutput")
def _detection_output(ex, layer, lp, ins, tops, prefix):
    ex.fail(lp, "the SSD fork's per-class NMS, top_k and keep_top_k have no faithful ONNX form: export the net "
                "up to its inputs (--outputs %s) and run DetectionOutput on them with pycaffe_lite"
            % ",".join(lp.bottom))


_ONNX_POINTWISE = {"Identity": "Identity", "Softplus": "Softplus", "Sqrt": "Sqrt", "Reciprocal": "Reciprocal",
                   "Erf": "Erf", "Sin": "Sin", "Cos": "Cos", "Tan": "Tan", "Ceil": "Ceil", "Floor": "Floor",
                   "Round": "Round", "Sign": "Sign", "Selu": "Selu", "Celu": "Celu", "HardSwish": "HardSwish",
                   "HardSigmoid": "HardSigmoid"}


@converter(*_ONNX_POINTWISE)
def _pointwise(ex, layer, lp, ins, tops, prefix):
    # ONNX's defaults are OpenCV's (Selu's constants, Celu's alpha 1,
    # HardSigmoid's 0.2 and 0.5, Round's halves to even)
    return [ex.g.op(_ONNX_POINTWISE[lp.type], ins, tops[0])]


@converter("Mish", "Gelu")
def _mish_gelu(ex, layer, lp, ins, tops, prefix):
    """Composed, so that every opset the exporter writes has them."""
    g = ex.g
    if lp.type == "Mish":
        t = g.op("Tanh", [g.op("Softplus", ins, tops[0] + "_sp")], tops[0] + "_tanh")
        return [g.op("Mul", [ins[0], t], tops[0])]
    e = g.op("Erf", [g.op("Mul", [ins[0], g.const(tops[0] + "_rs2", np.float32(1 / np.sqrt(2)))], tops[0] + "_s")],
             tops[0] + "_erf")
    half = g.op("Mul", [ins[0], g.const(tops[0] + "_half", np.float32(0.5))], tops[0] + "_hx")
    return [g.op("Mul", [half, g.op("Add", [e, g.const(tops[0] + "_one", np.float32(1))], tops[0] + "_1e")], tops[0])]

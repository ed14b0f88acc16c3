"""Bring old net and solver definitions to the current format, as Caffe's
upgrade_proto does: V0 layers (with separate padding layers) -> V1 -> current
`layer` messages, the deprecated net `input` fields -> an Input layer, Data
layer transformation fields -> transform_param, solver_type enum -> type."""
from .errors import ConfigError
from .proto import caffe_pb2 as pb

V1 = pb.V1LayerParameter

_V1_TYPE_NAMES = {
    V1.NONE: "", V1.ABSVAL: "AbsVal", V1.ACCURACY: "Accuracy", V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL", V1.CONCAT: "Concat", V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution", V1.DECONVOLUTION: "Deconvolution", V1.DATA: "Data",
    V1.DROPOUT: "Dropout", V1.DUMMY_DATA: "DummyData", V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.ELTWISE: "Eltwise", V1.EXP: "Exp", V1.FLATTEN: "Flatten", V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output", V1.HINGE_LOSS: "HingeLoss", V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData", V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct", V1.LRN: "LRN", V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss", V1.MVN: "MVN",
    V1.POOLING: "Pooling", V1.POWER: "Power", V1.RELU: "ReLU", V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss", V1.SILENCE: "Silence",
    V1.SOFTMAX: "Softmax", V1.SOFTMAX_LOSS: "SoftmaxWithLoss", V1.SPLIT: "Split",
    V1.SLICE: "Slice", V1.TANH: "TanH", V1.WINDOW_DATA: "WindowData",
    V1.THRESHOLD: "Threshold",
}

_V0_TYPES = {
    "accuracy": V1.ACCURACY, "bnll": V1.BNLL, "concat": V1.CONCAT, "conv": V1.CONVOLUTION,
    "data": V1.DATA, "dropout": V1.DROPOUT, "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN, "hdf5_data": V1.HDF5_DATA, "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL, "images": V1.IMAGE_DATA, "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT, "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS, "pool": V1.POOLING,
    "relu": V1.RELU, "sigmoid": V1.SIGMOID, "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS, "split": V1.SPLIT, "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

# V1 fields that carry over to the current LayerParameter under the same name.
_V1_COPIED = [
    "accuracy_param", "argmax_param", "concat_param", "contrastive_loss_param",
    "convolution_param", "data_param", "dropout_param", "dummy_data_param", "eltwise_param",
    "exp_param", "hdf5_data_param", "hdf5_output_param", "hinge_loss_param",
    "image_data_param", "infogain_loss_param", "inner_product_param", "lrn_param",
    "memory_data_param", "mvn_param", "pooling_param", "power_param", "relu_param",
    "sigmoid_param", "softmax_param", "slice_param", "tanh_param", "threshold_param",
    "window_data_param", "transform_param", "loss_param",
]


def _v0_to_v1(v0_layer, source):
    """One V0 layer (the `layer` inside a V1 `layers` entry) as a V1 layer."""
    out = V1()
    out.bottom.extend(v0_layer.bottom)
    out.top.extend(v0_layer.top)
    v0 = v0_layer.layer
    if v0.HasField("name"):
        out.name = v0.name
    kind = v0.type
    if kind not in _V0_TYPES:
        raise ConfigError("%s: V0 layer '%s' has unknown type '%s'" % (source, v0.name, kind))
    out.type = _V0_TYPES[kind]
    t = out.type
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    def need(ok, field):
        if not ok:
            raise ConfigError("%s: V0 layer '%s' of type '%s' cannot take '%s'" % (source, v0.name, kind, field))

    for field in v0.DESCRIPTOR.fields:
        name = field.name
        if name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        if field.is_repeated or not v0.HasField(name):
            continue
        value = getattr(v0, name)
        if name == "num_output":
            need(t in (V1.CONVOLUTION, V1.INNER_PRODUCT), name)
            (out.convolution_param if t == V1.CONVOLUTION else out.inner_product_param).num_output = value
        elif name == "biasterm":
            need(t in (V1.CONVOLUTION, V1.INNER_PRODUCT), name)
            (out.convolution_param if t == V1.CONVOLUTION else out.inner_product_param).bias_term = value
        elif name in ("weight_filler", "bias_filler"):
            need(t in (V1.CONVOLUTION, V1.INNER_PRODUCT), name)
            target = out.convolution_param if t == V1.CONVOLUTION else out.inner_product_param
            getattr(target, name).CopyFrom(value)
        elif name in ("pad", "kernelsize", "stride"):
            need(t in (V1.CONVOLUTION, V1.POOLING), name)
            new = {"pad": "pad", "kernelsize": "kernel_size", "stride": "stride"}[name]
            if t == V1.CONVOLUTION:
                getattr(out.convolution_param, new).append(value)
            else:
                setattr(out.pooling_param, new, value)
        elif name == "group":
            need(t == V1.CONVOLUTION, name)
            out.convolution_param.group = value
        elif name == "pool":
            need(t == V1.POOLING, name)
            out.pooling_param.pool = value
        elif name == "dropout_ratio":
            need(t == V1.DROPOUT, name)
            out.dropout_param.dropout_ratio = value
        elif name in ("local_size", "alpha", "beta", "k"):
            need(t == V1.LRN, name)
            setattr(out.lrn_param, name, value)
        elif name in ("source", "scale", "meanfile", "batchsize", "cropsize", "mirror", "rand_skip"):
            new = {"meanfile": "mean_file", "batchsize": "batch_size", "cropsize": "crop_size"}.get(name, name)
            target = {V1.DATA: out.data_param, V1.IMAGE_DATA: out.image_data_param,
                      V1.WINDOW_DATA: out.window_data_param, V1.HDF5_DATA: out.hdf5_data_param}.get(t)
            need(target is not None and new in target.DESCRIPTOR.fields_by_name, name)
            setattr(target, new, value)
        elif name in ("new_height", "new_width"):
            need(t == V1.IMAGE_DATA, name)
            setattr(out.image_data_param, name, value)
        elif name == "shuffle_images":
            need(t == V1.IMAGE_DATA, name)
            out.image_data_param.shuffle = value
        elif name == "concat_dim":
            need(t == V1.CONCAT, name)
            out.concat_param.concat_dim = value
        elif name.startswith("det_"):
            need(t == V1.WINDOW_DATA, name)
            setattr(out.window_data_param, name[4:], value)
        elif name == "hdf5_output_param":
            need(t == V1.HDF5_OUTPUT, name)
            out.hdf5_output_param.CopyFrom(value)
        else:
            raise ConfigError("%s: V0 field '%s' of layer '%s' cannot be upgraded" % (source, name, v0.name))
    return out


def _upgrade_v0(net, source):
    """Fold V0 padding layers into the layer that reads them, then upgrade each."""
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    producer = {}   # blob name -> index of the V0 layer that wrote it
    pads = {}       # padding-layer index -> (its bottom, pad)
    for i, entry in enumerate(net.layers):
        v0 = entry.layer
        if v0.type == "padding":
            if len(entry.bottom) != 1 or len(entry.top) != 1:
                raise ConfigError("%s: padding layer '%s' must have one bottom and one top" % (source, v0.name))
            pads[i] = (entry.bottom[0], v0.pad)
            producer[entry.top[0]] = i
            continue
        upgraded = _v0_to_v1(entry, source)
        for j, bottom in enumerate(entry.bottom):
            k = producer.get(bottom)
            if k is not None and k in pads:
                src, pad = pads[k]
                if upgraded.type == V1.CONVOLUTION:
                    del upgraded.convolution_param.pad[:]
                    upgraded.convolution_param.pad.append(pad)
                elif upgraded.type == V1.POOLING:
                    upgraded.pooling_param.pad = pad
                else:
                    raise ConfigError("%s: padding layer feeds '%s', which is neither convolution nor pooling"
                                      % (source, v0.name))
                upgraded.bottom[j] = src
        for top in entry.top:
            producer[top] = i
        out.layers.add().CopyFrom(upgraded)
    return out


def _upgrade_v1(net, source):
    out = pb.NetParameter()
    out.CopyFrom(net)
    del out.layers[:]
    for v1 in net.layers:
        layer = out.layer.add()
        if v1.HasField("layer"):
            raise ConfigError("%s: layer '%s' mixes V0 and V1 formats" % (source, v1.name))
        layer.name = v1.name
        layer.bottom.extend(v1.bottom)
        layer.top.extend(v1.top)
        layer.include.extend(v1.include)
        layer.exclude.extend(v1.exclude)
        if v1.HasField("type"):
            layer.type = _V1_TYPE_NAMES[v1.type]
        layer.blobs.extend(v1.blobs)
        n = max(len(v1.param), len(v1.blob_share_mode), len(v1.blobs_lr), len(v1.weight_decay))
        for i in range(n):
            spec = layer.param.add()
            if i < len(v1.param):
                spec.name = v1.param[i]
            if i < len(v1.blob_share_mode):
                spec.share_mode = v1.blob_share_mode[i]
            if i < len(v1.blobs_lr):
                spec.lr_mult = v1.blobs_lr[i]
            if i < len(v1.weight_decay):
                spec.decay_mult = v1.weight_decay[i]
        layer.loss_weight.extend(v1.loss_weight)
        for name in _V1_COPIED:
            if v1.HasField(name):
                getattr(layer, name).CopyFrom(getattr(v1, name))
    return out


def _upgrade_input(net):
    if not len(net.input):
        return
    layer = pb.LayerParameter(name="input", type="Input")
    layer.top.extend(net.input)
    if len(net.input_shape):
        layer.input_param.shape.extend(net.input_shape)
    elif len(net.input_dim):
        dims = list(net.input_dim)
        if len(dims) != 4 * len(net.input):
            raise ConfigError("input_dim must hold 4 values per input (%d inputs, %d values)"
                              % (len(net.input), len(dims)))
        for i in range(len(net.input)):
            layer.input_param.shape.add().dim.extend(dims[4 * i:4 * i + 4])
    layers = [layer] + list(net.layer)
    del net.layer[:]
    net.layer.extend(layers)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")


def _upgrade_data_transform(net):
    for layer in net.layer:
        for field in ("data_param", "image_data_param", "window_data_param"):
            if not layer.HasField(field):
                continue
            p = getattr(layer, field)
            for name in ("scale", "mean_file", "crop_size", "mirror"):
                if p.HasField(name):
                    setattr(layer.transform_param, name, getattr(p, name))
                    p.ClearField(name)


def _upgrade_batch_norm(net):
    # Old BatchNorm definitions froze their statistics with lr_mult 0 specs;
    # the layer now does that itself.
    for layer in net.layer:
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            del layer.param[:]


def upgrade_net(net, source="net"):
    """Upgrade a NetParameter in place (and return it)."""
    if len(net.layers) and len(net.layer):
        raise ConfigError("%s: uses both 'layer' and the old 'layers'; use one" % source)
    if len(net.layers):
        if any(entry.HasField("layer") for entry in net.layers):
            net.CopyFrom(_upgrade_v0(net, source))
        net.CopyFrom(_upgrade_v1(net, source))
        # Only V1 nets get this (Caffe's UpgradeNetDataTransformation): in the
        # current format, WindowData reads window_data_param.scale itself.
        _upgrade_data_transform(net)
    _upgrade_input(net)
    _upgrade_batch_norm(net)
    return net


_SOLVER_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}


def upgrade_solver(solver, source="solver"):
    if solver.HasField("solver_type"):
        name = _SOLVER_TYPES[solver.solver_type]
        if solver.HasField("type") and solver.type != name:
            raise ConfigError("%s: solver_type %s and type '%s' disagree; remove solver_type"
                              % (source, name, solver.type))
        solver.type = name
        solver.ClearField("solver_type")
    return solver


def upgrade_snapshot_prefix(solver, path):
    """Caffe's rule for a solver read from `path`: no snapshot_prefix means
    the solver file's path without its extension; a prefix that is a folder
    means that folder and the solver file's name."""
    from . import glog
    import os
    if not solver.HasField("snapshot_prefix"):
        solver.snapshot_prefix = os.path.splitext(path)[0]
        glog.info("snapshot_prefix was not specified and is set to %s", solver.snapshot_prefix)
    elif os.path.isdir(solver.snapshot_prefix):
        solver.snapshot_prefix = os.path.join(solver.snapshot_prefix, os.path.splitext(os.path.basename(path))[0])
        glog.info("snapshot_prefix was a directory and is replaced to %s", solver.snapshot_prefix)
    return solver

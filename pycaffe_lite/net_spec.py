"""NetSpec: write nets in Python, as pycaffe's caffe.NetSpec, caffe.layers (L)
and caffe.params (P). Naming follows pycaffe exactly: a top assigned to the
NetSpec takes that attribute's name (and so does its layer); anything else is
named after its type and a per-type counter (Convolution1, ReLU2, ...)."""
from collections import Counter, OrderedDict

from .proto import caffe_pb2


def param_name_dict():
    """Layer type -> the stem of its LayerParameter *_param field."""
    out = {}
    for field in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if field.name.endswith("_param") and field.message_type is not None:
            type_name = field.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[:-len("Parameter")]] = field.name[:-len("_param")]
    return out


_PARAM_NAMES = param_name_dict()
# Types whose parameters live in another type's message: pycaffe needs
# convolution_param=dict(...) for these; plain keywords work here too.
_PARAM_NAMES.update({"Deconvolution": "convolution", "Im2col": "convolution", "LSTM": "recurrent",
                     "RNN": "recurrent", "DepthwiseConvolution": "convolution",
                     "ConvolutionDepthwise": "convolution", "NormalizeBBox": "norm"})


def assign_proto(proto, name, value):
    """Set proto.name from a Python value: scalars, lists, and dicts for messages."""
    field = getattr(proto, name)
    repeated = hasattr(field, "extend")
    if repeated and not isinstance(value, list):
        value = [value]
    if isinstance(value, list):
        if value and isinstance(value[0], dict):
            for item in value:
                entry = field.add()
                for k, v in item.items():
                    assign_proto(entry, k, v)
        else:
            field.extend(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            assign_proto(field, k, v)
    else:
        setattr(proto, name, value)


class Top:
    """One output of a layer function."""

    def __init__(self, fn, n):
        self.fn, self.n = fn, n

    def to_proto(self):
        return to_proto(self)

    def _to_proto(self, layers, names, autonames):
        return self.fn._to_proto(layers, names, autonames)

    def _update(self, params):
        self.fn.params.update(params)


class Function:
    """A layer: its type, inputs and parameters, and its tops."""

    def __init__(self, type_name, inputs, params):
        self.type_name = type_name
        for index, value in enumerate(inputs):
            if not isinstance(value, Top):
                raise TypeError("%s input %d is not a Top (type is %s)" % (type_name, index, type(value)))
        self.inputs = inputs
        self.params = params
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names, autonames):
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    def _get_top_name(self, top, names, autonames):
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers, names, autonames):
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp._to_proto(layers, names, autonames)
            bottoms.append(layers[inp.fn].top[inp.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottoms)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            if k.endswith("param"):          # e.g. param=[...], transform_param=dict(...)
                assign_proto(layer, k, v)
            else:
                try:
                    assign_proto(getattr(layer, _PARAM_NAMES[self.type_name] + "_param"), k, v)
                except (AttributeError, KeyError):
                    assign_proto(layer, k, v)
        layers[self] = layer


class NetSpec:
    """Assign tops as attributes (n.conv1 = L.Convolution(n.data, ...)), then to_proto()."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def __delitem__(self, name):
        del self.tops[name]

    def keys(self):
        return list(self.tops.keys())

    def vals(self):
        return list(self.tops.values())

    def update(self, name, params):
        """Add or replace parameters of the layer behind top `name` (the SSD
        fork's NetSpec has this; its model_libs uses it)."""
        self.tops[name]._update(params)

    def to_proto(self):
        names = {v: k for k, v in self.tops.items()}
        autonames = Counter()
        layers = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops):
    """A NetParameter holding the layers needed to compute `tops`."""
    layers = OrderedDict()
    autonames = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """L.<Type>(*bottoms, **params) makes a layer of any type."""

    def __getattr__(self, name):
        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """P.Pooling.MAX and the like: enum values of the parameter messages."""

    def __getattr__(self, name):
        class Param:
            def __getattr__(self, param_name):
                return getattr(getattr(caffe_pb2, name + "Parameter"), param_name)
        return Param()


layers = Layers()
params = Parameters()

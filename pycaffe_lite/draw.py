"""pycaffe's caffe.draw: a NetParameter as a Graphviz graph, layers as boxes
(coloured by type; in-place neuron layers green), blobs as octagons, edges
labelled with batch sizes and output counts. Images need pydot and the
Graphviz programs (the draw extra; apt-get install graphviz); '.dot' and
'.raw' outputs are the graph's own text and need neither."""
from .errors import ConfigError
from .proto import caffe_pb2
from .upgrade import upgrade_net

LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}
_TEXT_FORMATS = ("dot", "raw")


def get_pooling_types_dict():
    """{number: name} of PoolingParameter.PoolMethod."""
    return {v.number: name for name, v in caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR.values_by_name.items()}


def get_edge_label(layer):
    if layer.type == "Data":
        return "Batch " + str(layer.data_param.batch_size)
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return '""'


def get_layer_lr_mult(layer):
    """(weights, biases) learning rate multipliers of a Convolution,
    Deconvolution or InnerProduct layer."""
    if layer.type not in ("Convolution", "Deconvolution", "InnerProduct"):
        raise ValueError("%s layers do not have a learning rate multiplier" % layer.type)
    mults = [p.lr_mult for p in layer.param[:2]]
    return tuple(mults + [1.0] * (2 - len(mults)))


def get_layer_label(layer, rankdir, display_lrm=False):
    """The node text: name, type and, for spatial layers, kernel/stride/pad;
    words stacked vertically when the graph runs left to right."""
    separator = r"\n" if rankdir in ("LR", "RL") else " "
    parts = [layer.name]
    if layer.type == "Pooling":
        parts.append("(%s %s)" % (layer.type, get_pooling_types_dict()[layer.pooling_param.pool]))
    else:
        parts.append("(%s)" % layer.type)
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(separator.join(["kernel size: %d" % kernel, "stride: %d" % stride, "pad: %d" % pad]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        lr_w, lr_b = get_layer_lr_mult(layer)
        if lr_w or lr_b:
            parts.append("lr mult: %.1f, %.1f" % (lr_w, lr_b))
    return '"%s"' % separator.join(parts)


def choose_color_by_layertype(layertype):
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _included(layer, phase):
    if len(layer.include) and len(layer.exclude):
        raise ValueError("layer %s has both include and exclude specified." % layer.name)
    if len(layer.include):
        return any(rule.phase == phase for rule in layer.include)
    return not any(rule.phase == phase for rule in layer.exclude)


def _graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """(name, {node id: (label, style)}, [(src, dst, label)]) of the net."""
    net = caffe_net
    if len(net.layers):                 # a V1 net: draw its upgraded form
        net = caffe_pb2.NetParameter()
        net.CopyFrom(caffe_net)
        upgrade_net(net)
    nodes, edges = {}, []
    for layer in net.layer:
        if phase is not None and not _included(layer, phase):
            continue
        node = "%s_%s" % (layer.name, layer.type)
        in_place = len(layer.bottom) == 1 and list(layer.bottom) == list(layer.top)
        style = NEURON_LAYER_STYLE if in_place else dict(LAYER_STYLE_DEFAULT,
                                                         fillcolor=choose_color_by_layertype(layer.type))
        nodes[node] = (get_layer_label(layer, rankdir, display_lrm), style)
        for blob in layer.bottom:
            nodes[blob + "_blob"] = ('"%s"' % blob, BLOB_STYLE)
            edges.append((blob + "_blob", node, '""'))
        for blob in layer.top:
            nodes[blob + "_blob"] = ('"%s"' % blob, BLOB_STYLE)
            edges.append((node, blob + "_blob", get_edge_label(layer) if label_edges else '""'))
    return net.name or "Net", nodes, edges


def _pydot():
    try:
        import pydot
    except ImportError:
        raise ConfigError("drawing images needs pydot and Graphviz (pip install -e '.[draw]'; apt-get install "
                          "graphviz); a .dot or .raw output needs neither") from None
    return pydot


def get_pydot_graph(caffe_net, rankdir, label_edges=True, phase=None, display_lrm=False):
    """The net as a pydot.Dot graph."""
    pydot = _pydot()
    name, nodes, edges = _graph(caffe_net, rankdir, label_edges, phase, display_lrm)
    graph = pydot.Dot(name, graph_type="digraph", rankdir=rankdir)
    made = {}
    for node, (label, style) in nodes.items():
        made[node] = pydot.Node(label, **style)
        graph.add_node(made[node])
    for src, dst, label in edges:
        graph.add_edge(pydot.Edge(made[src], made[dst], label=label))
    return graph


def _quoted(text):
    """A Graphviz ID: kept when already a quoted string, else quoted."""
    text = str(text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def to_dot(caffe_net, rankdir="LR", label_edges=True, phase=None, display_lrm=False):
    """The graph as Graphviz's dot language (no pydot or Graphviz needed)."""
    name, nodes, edges = _graph(caffe_net, rankdir, label_edges, phase, display_lrm)

    def attrs(d):
        return ", ".join("%s=%s" % (k, _quoted(v)) for k, v in d.items())
    lines = ["digraph %s {" % _quoted(name), "rankdir=%s;" % rankdir]
    for label, style in nodes.values():
        lines.append("%s [%s];" % (_quoted(label), attrs(style)))
    for src, dst, label in edges:
        lines.append("%s -> %s [label=%s];" % (_quoted(nodes[src][0]), _quoted(nodes[dst][0]), _quoted(label)))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _graphviz_dot(text):
    """Graphviz's own dot text for `text` (laid out), or None without Graphviz."""
    import shutil
    import subprocess
    dot = shutil.which("dot")
    if dot is None:
        return None
    out = subprocess.run([dot, "-Tdot"], input=text.encode(), capture_output=True)
    if out.returncode:
        raise ConfigError("Graphviz's dot rejected the graph: %s" % out.stderr.decode(errors="replace").strip())
    return out.stdout


def draw_net(caffe_net, rankdir, ext="png", phase=None, display_lrm=False):
    """The drawing as bytes in the format `ext` (png, svg, pdf, ...). 'dot'
    gives Graphviz's own dot text, as pycaffe does (our dot text where
    Graphviz is not installed); 'raw' the graph's dot source."""
    ext = ext.lower()
    if ext in _TEXT_FORMATS:
        text = to_dot(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
        laid_out = _graphviz_dot(text) if ext == "dot" else None
        return laid_out if laid_out is not None else text.encode()
    pydot = _pydot()
    formats = pydot.Dot().formats
    if ext not in formats:
        raise ConfigError("cannot draw to '%s': Graphviz formats are %s" % (ext, ", ".join(sorted(formats) +
                                                                                        list(_TEXT_FORMATS))))
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    try:
        return graph.create(format=ext)
    except (FileNotFoundError, OSError) as e:
        raise ConfigError("Graphviz's dot program is not installed (apt-get install graphviz): %s; a .dot output "
                          "needs no Graphviz" % e) from None


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Write the drawing in the format the file's extension names."""
    ext = filename[filename.rfind(".") + 1:] if "." in filename else ""
    data = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(data)

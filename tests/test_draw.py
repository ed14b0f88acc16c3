"""caffe.draw as pycaffe has it: draw_net returns image bytes, draw_net_to_file
writes them, the pydot graph and labels; every net in the repository draws,
V1 nets included; .dot and .raw outputs are valid Graphviz text; an unknown
format is a clear error. Images need Graphviz's dot program: those tests
skip, saying so, where it is not installed."""
import glob
import os
import shutil
import subprocess

import pytest

import pycaffe_lite as caffe
from pycaffe_lite import draw, protoio
from pycaffe_lite.errors import ConfigError
from conftest import REPO, golden_path

pydot = pytest.importorskip("pydot", reason="drawing images needs the draw extra (pydot)")
TRAIN_VAL = os.path.join(REPO, "models/bvlc_reference_caffenet/train_val.prototxt")
NETS = sorted(glob.glob(os.path.join(REPO, "models", "*", "*.prototxt")) +
              glob.glob(os.path.join(REPO, "examples", "*", "*.prototxt")))
NETS = [n for n in NETS if "solver" not in os.path.basename(n)]
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="drawing images needs Graphviz's dot "
                               "program, which is not installed (apt-get install graphviz)")


@needs_dot
def test_draw_net_returns_png_bytes():
    net = protoio.read_net_text(TRAIN_VAL)
    png = draw.draw_net(net, "LR", ext="png", phase=caffe.TRAIN)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = draw.draw_net(net, "TB", ext="svg", phase=caffe.TEST).decode()
    assert "<svg" in svg and "accuracy" in svg
    assert "accuracy" not in draw.draw_net(net, "TB", ext="svg", phase=caffe.TRAIN).decode()


def test_pydot_graph_and_labels():
    net = protoio.read_net_text(TRAIN_VAL)
    graph = draw.get_pydot_graph(net, "LR", phase=caffe.TRAIN)
    names = {n.get_name() for n in graph.get_nodes()}
    assert '"data"' in names and '"fc8"' in names
    conv1 = [l for l in net.layer if l.name == "conv1"][0]
    assert draw.get_layer_label(conv1, "LR") == r'"conv1\n(Convolution)\nkernel size: 11\nstride: 4\npad: 0"'
    assert draw.get_layer_label(conv1, "TB") == '"conv1 (Convolution) kernel size: 11 stride: 4 pad: 0"'
    assert "lr mult: 1.0, 2.0" in draw.get_layer_label(conv1, "LR", display_lrm=True)
    assert draw.get_edge_label(conv1) == "96"
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.get_pooling_types_dict()[0] == "MAX"
    relu = [l for l in net.layer if l.name == "relu1"][0]
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(relu)


@needs_dot
@pytest.mark.parametrize("path", NETS, ids=[os.path.relpath(n, REPO) for n in NETS])
def test_every_net_in_the_repository_draws(path, tmp_path):
    out = tmp_path / "net.png"
    draw.draw_net_to_file(protoio.read_net_text(path), str(out), "LR")
    assert out.read_bytes()[:4] == b"\x89PNG"


@needs_dot
def test_v1_net_draws():
    net = protoio.read_net_text(os.path.join(golden_path("format", "v1_net"), "net_v1.prototxt"))
    assert len(net.layers) and not len(net.layer)
    svg = draw.draw_net(net, "LR", ext="svg").decode()
    assert "Convolution" in svg


@needs_dot
def test_unknown_extension_is_a_clear_error(tmp_path):
    net = protoio.read_net_text(TRAIN_VAL)
    with pytest.raises(ConfigError, match=r"cannot draw to 'bmpx': Graphviz formats are .*png"):
        draw.draw_net(net, "LR", ext="bmpx")
    with pytest.raises(ConfigError):
        draw.draw_net_to_file(net, str(tmp_path / "net.bmpx"))
    assert not (tmp_path / "net.bmpx").exists()


@pytest.mark.parametrize("ext", ["dot", "raw"])
def test_dot_and_raw_outputs_are_valid_graphviz_text(tmp_path, ext):
    out = tmp_path / ("net." + ext)
    draw.draw_net_to_file(protoio.read_net_text(TRAIN_VAL), str(out), "LR", phase=caffe.TRAIN)
    text = out.read_text()
    graphs = pydot.graph_from_dot_data(text)          # pydot's own parser: no Graphviz needed
    assert graphs and len(graphs) == 1
    labels = {e.get_label() for e in graphs[0].get_edges()}
    assert '"Batch 256"' in labels                          # quoted, as Graphviz needs "Batch 256"
    assert "96" in {label.strip('"') for label in labels if label}
    if ext == "raw" or shutil.which("dot") is None:
        assert "[label=Batch" not in text
    if shutil.which("dot"):
        check = subprocess.run(["dot", "-Tsvg", str(out)], capture_output=True)
        assert check.returncode == 0, check.stderr
        if ext == "dot":                               # Graphviz's own text, laid out, as pycaffe returns
            assert "pos=" in text

"""File formats: the schema module is current, Caffe's files load, ours load
back identically, OpenCV's Caffe importer reads ours, legacy nets upgrade."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import protoio
from conftest import REPO, assert_close, golden_path, load_case


def test_generated_module_matches_proto(tmp_path):
    pytest.importorskip("grpc_tools", reason="grpcio-tools (test extra) regenerates the schema")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I" + os.path.join(REPO, "proto"),
                    "--python_out=%s" % tmp_path, "caffe.proto"], check=True)
    fresh = (tmp_path / "caffe_pb2.py").read_text()
    with open(os.path.join(REPO, "pycaffe_lite", "proto", "caffe_pb2.py")) as f:
        shipped = f.read()
    assert fresh == shipped, ("pycaffe_lite/proto/caffe_pb2.py is stale: regenerate it with "
                              "python -m grpc_tools.protoc -Iproto --python_out=pycaffe_lite/proto proto/caffe.proto")


def test_caffe_written_caffemodel_loads():
    folder, case, arrays = load_case("layers", "caffenet_small")
    net = caffe.Net(os.path.join(folder, "net.prototxt"), caffe.TEST,
                    weights=os.path.join(folder, "weights.caffemodel"))
    n = 0
    for key in arrays:
        if key.startswith("param/"):
            _, layer, i = key.split("/")
            np.testing.assert_array_equal(net.params[layer][int(i)].data, arrays[key])
            n += 1
    assert n == 16


def _random_net(path, seed=3):
    caffe.set_random_seed(seed)
    return caffe.Net(path, caffe.TEST)


def test_save_load_roundtrip(tmp_path):
    model = os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")
    net = _random_net(model)
    out = tmp_path / "w.caffemodel"
    net.save(str(out))
    back = caffe.Net(model, caffe.TEST, weights=str(out))
    for name in net.params:
        for a, b in zip(net.params[name], back.params[name]):
            assert a.data.shape == b.data.shape
            np.testing.assert_array_equal(a.data, b.data)
    again = tmp_path / "again.caffemodel"
    back.save(str(again))
    assert out.read_bytes() == again.read_bytes()
    # No temporary files are left beside the model.
    assert sorted(os.listdir(tmp_path)) == ["again.caffemodel", "w.caffemodel"]


def _deploy_of_caffenet_small(tmp_path):
    folder = golden_path("layers", "caffenet_small")
    p = protoio.read_net_text(os.path.join(folder, "net.prototxt"))
    keep = [l for l in p.layer if "label" not in l.top and "label" not in l.bottom]
    del p.layer[:]
    p.layer.extend(keep)
    p.layer.add(name="prob", type="Softmax", bottom=["fc8"], top=["prob"])
    path = tmp_path / "deploy.prototxt"
    path.write_text(str(p))
    return str(path), os.path.join(folder, "weights.caffemodel")


@pytest.mark.parametrize("which", ["caffenet_small", "caffenet_deploy"])
def test_opencv_reads_what_we_save(tmp_path, which):
    cv2 = pytest.importorskip("cv2")
    if which == "caffenet_small":
        model, weights = _deploy_of_caffenet_small(tmp_path)
        net = caffe.Net(model, caffe.TEST, weights=weights)
    else:
        model = os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")
        net = _random_net(model, seed=11)
        net.blobs["data"].reshape(2, 3, 227, 227)
        net.reshape()
    saved = str(tmp_path / "ours.caffemodel")
    net.save(saved)
    x = np.random.RandomState(5).randn(*net.blobs["data"].shape).astype(np.float32) * 50
    ours = net.forward(data=x)["prob"].copy()
    cv_net = cv2.dnn.readNetFromCaffe(model, saved)
    cv_net.setInput(x)
    theirs = cv_net.forward()
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-6)
    assert ours.argmax(axis=1).tolist() == theirs.argmax(axis=1).tolist()


@pytest.mark.parametrize("case_name,model,weights", [
    ("v1_net", "net_v1.prototxt", "weights_v1.caffemodel"),
    ("v1_net", "net_upgraded.prototxt", "weights_upgraded.caffemodel"),
    ("v0_net", "net_v0.prototxt", "weights.caffemodel"),
])
def test_legacy_nets_give_caffes_outputs(case_name, model, weights):
    folder, case, arrays = load_case("format", case_name)
    net = caffe.Net(os.path.join(folder, model), caffe.TEST, weights=os.path.join(folder, weights))
    assert [l.name for l in net.layers] == [l["name"] for l in case["layers"]]
    assert [[list(b.shape) for b in l.blobs] for l in net.layers] == [l["params"] for l in case["layers"]]
    for key in arrays:
        if key.startswith("param/"):
            _, layer, i = key.split("/")
            np.testing.assert_array_equal(net.params[layer][int(i)].data, arrays[key])
    net.blobs["data"].data[...] = arrays["input/data"]
    net.forward()
    tol = {"atol_default": case["tolerance"]["atol"], "rtol": case["tolerance"]["rtol"]}
    for key in arrays:
        if key.startswith("data/"):
            assert_close(net.blobs[key[5:]].data, arrays[key], key, tol)


def test_v1_upgrade_matches_caffes_text():
    folder = golden_path("format", "v1_net")
    from pycaffe_lite.upgrade import upgrade_net
    ours = upgrade_net(protoio.read_net_text(os.path.join(folder, "net_v1.prototxt")))
    theirs = protoio.read_net_text(os.path.join(folder, "net_upgraded.prototxt"))
    assert ours == theirs


def test_v0_upgrade_matches_caffes_text():
    folder = golden_path("format", "v0_net")
    from pycaffe_lite.upgrade import upgrade_net
    ours = upgrade_net(protoio.read_net_text(os.path.join(folder, "net_v0.prototxt")))
    theirs = protoio.read_net_text(os.path.join(folder, "net_upgraded.prototxt"))
    assert ours == theirs


def test_deprecated_input_fields_become_an_input_layer(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('input: "a" input_shape { dim: 2 dim: 3 } input: "b" input_shape { dim: 2 dim: 3 }\n'
                    'layer { name: "s" type: "Eltwise" bottom: "a" bottom: "b" top: "s" }\n')
    net = caffe.Net(str(path), caffe.TEST)
    assert net._layer_names[0] == "input"
    assert net.inputs == ["a", "b"]
    out = net.forward(a=np.ones((2, 3)), b=np.full((2, 3), 2.0))
    np.testing.assert_array_equal(out["s"], np.full((2, 3), 3.0, np.float32))


@pytest.mark.parametrize("message,field,number,default", [
    ("PoolingParameter", "round_mode", 13, 0),            # CEIL
    ("LayerParameter", "clip_param", 148, None),
    ("LayerParameter", "swish_param", 147, None),
    ("ClipParameter", "min", 1, None),
    ("ClipParameter", "max", 2, None),
    ("SwishParameter", "beta", 1, 1.0),
    ("SolverParameter", "layer_wise_reduce", 41, True),
    ("SolverParameter", "weights", 42, None),
    ("RecurrentParameter", "expose_hidden", 5, False),
    ("WindowDataParameter", "context_pad", 10, 0),
])
def test_schema_fields_match_caffe(message, field, number, default):
    from pycaffe_lite.proto import caffe_pb2
    desc = getattr(caffe_pb2, message).DESCRIPTOR.fields_by_name[field]
    assert desc.number == number
    if default is not None:
        assert desc.default_value == default

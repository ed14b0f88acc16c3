"""Every layer case in ../shared/golden and ../shared/golden-ssd: forward
data, bottom diffs and parameter diffs against what BVLC Caffe and the SSD
fork computed."""
import os

import numpy as np
import pytest

import pycaffe_lite as caffe
from conftest import GOLDEN, GOLDEN_SSD, assert_close, golden_cases, load_case

# Run under both CPU engines: numpy (the reference) and oneDNN.
pytestmark = pytest.mark.usefixtures("both_engines")


@pytest.mark.parametrize("name", golden_cases("layers"))
def test_layer_case(name):
    run_in_tree(name, GOLDEN)


@pytest.mark.parametrize("name", golden_cases("layers", GOLDEN_SSD))
def test_ssd_layer_case(name):
    run_in_tree(name, GOLDEN_SSD)


def run_in_tree(name, tree):
    # Paths inside the cases' prototxts are relative to the golden tree's root.
    here = os.getcwd()
    folder = load_case("layers", name, tree)[0]
    os.chdir(os.path.dirname(os.path.dirname(folder)))
    try:
        check_layer_case(name, tree)
    finally:
        os.chdir(here)


def check_layer_case(name, tree=GOLDEN):
    folder, case, arrays = load_case("layers", name, tree)
    tol = case["tolerance"]
    weights = os.path.join(folder, case["weights"]) if case.get("weights") else None
    net = caffe.Net(os.path.join(folder, case["prototxt"]), caffe.TEST, weights=weights)

    # The same layers, blobs and params as Caffe built.
    assert [l.name for l in net.layers] == [l["name"] for l in case["layers"]]
    assert [l.type for l in net.layers] == [l["type"] for l in case["layers"]]
    assert list(net.blobs) == [b["name"] for b in case["blobs"]]
    assert net.inputs == case["inputs"]
    assert net.outputs == case["outputs"]
    for layer in case["layers"]:
        shapes = [list(b.shape) for b in net.layer_dict[layer["name"]].blobs]
        assert shapes == layer["params"], layer["name"]

    for key in arrays:
        if key.startswith("param/"):
            _, layer, i = key.split("/")
            np.testing.assert_array_equal(net.params[layer][int(i)].data, arrays[key], err_msg=key)

    for name_ in case["inputs"]:
        net.blobs[name_].data[...] = arrays["input/" + name_]
    net.forward()
    # Shapes as Caffe recorded them, after the forward (Filter's tops only
    # know their size then).
    for blob in case["blobs"]:
        assert list(net.blobs[blob["name"]].shape) == blob["shape"], blob["name"]
    for key in arrays:
        if key.startswith("data/"):
            assert_close(net.blobs[key[5:]].data, arrays[key], key, tol)
        if key.startswith("param_after/"):
            _, layer, i = key.split("/")
            assert_close(net.params[layer][int(i)].data, arrays[key], key, tol)

    if case["backward"] == "forward":
        return
    if case["backward"] == "inject":
        net.backward(**{b: arrays["topdiff/" + b] for b in case["injected_top_diffs"]})
    else:
        net.backward()
    checked = 0
    for key in arrays:
        if key.startswith("diff/"):
            assert_close(net.blobs[key[5:]].diff, arrays[key], key, tol)
            checked += 1
        elif key.startswith("param_diff/"):
            _, layer, i = key.split("/")
            assert_close(net.params[layer][int(i)].diff, arrays[key], key, tol)
            checked += 1
    assert checked, "no diffs compared"

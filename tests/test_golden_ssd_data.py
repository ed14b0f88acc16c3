"""The SSD fork's data tools against ../shared/golden-ssd/data: label maps
(create_label_map), image sizes (get_image_size), and AnnotatedDatum records
(convert_annoset) byte for byte, or, for images OpenCV re-encoded, field for
field and decoded pixel for pixel."""
import json
import os

import lmdb
import numpy as np
import pytest
from google.protobuf import text_format

from pycaffe_lite.data.datum import decode_datum
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import convert_annoset, create_label_map, get_image_size
from conftest import GOLDEN_SSD, golden_cases, load_case


def cases(kind):
    return [c for c in golden_cases("data", GOLDEN_SSD) if c.startswith(kind) or c.startswith("<")]


@pytest.fixture
def in_tree(monkeypatch):
    """The fork ran every tool from the tree's root: paths are relative to it."""
    if not os.path.isdir(GOLDEN_SSD):
        pytest.skip("golden-ssd fixtures not found at %s (they live in ../shared/golden-ssd)" % GOLDEN_SSD)
    monkeypatch.chdir(GOLDEN_SSD)


def _out(tmp_path, command):
    """The fork's command line with its output redirected under tmp_path."""
    return command[1:-1] + [str(tmp_path / os.path.basename(command[-1]))]


@pytest.mark.parametrize("name", cases("create_label_map"))
def test_create_label_map(name, in_tree, tmp_path):
    _, case, _ = load_case("data", name, GOLDEN_SSD)
    argv = _out(tmp_path, case["command"])
    assert create_label_map.main(argv) == 0
    ours = text_format.Parse(open(argv[-1]).read(), pb.LabelMap())
    theirs = text_format.Parse(open(os.path.join("data", name, "labelmap.prototxt")).read(), pb.LabelMap())
    assert ours == theirs
    assert [[i.name, i.label, i.display_name] for i in ours.item] == case["items"]


@pytest.mark.parametrize("name", cases("get_image_size"))
def test_get_image_size(name, in_tree, tmp_path):
    _, case, _ = load_case("data", name, GOLDEN_SSD)
    argv = _out(tmp_path, case["command"])
    assert get_image_size.main(argv) == 0
    assert open(argv[-1]).read().splitlines() == case["lines"]


@pytest.mark.parametrize("name", cases("annoset"))
def test_convert_annoset(name, in_tree, tmp_path):
    _, case, arrays = load_case("data", name, GOLDEN_SSD)
    argv = _out(tmp_path, case["command"])
    assert convert_annoset.main(argv) == 0
    env = lmdb.open(argv[-1], readonly=True, lock=False)
    with env.begin() as txn:
        records = list(txn.cursor())
    env.close()
    assert [k.decode() for k, _ in records] == [r["key"] for r in case["records"]]
    for i, ((_, value), want) in enumerate(zip(records, case["records"])):
        theirs = arrays["value/%d" % i].tobytes()
        if want["bytes_reproducible"]:
            assert value == theirs, "record %d (%s) differs from the fork's bytes" % (i, want["key"])
            continue
        ours, fork = pb.AnnotatedDatum.FromString(value), pb.AnnotatedDatum.FromString(theirs)
        ours_data, fork_data = ours.datum.data, fork.datum.data
        ours.datum.data = fork.datum.data = b""
        assert ours == fork, "record %d: fields other than the image differ" % i
        pixels = decode_datum(pb.Datum(data=ours_data, encoded=True)).astype(int)
        expected = arrays["decoded/%d" % i].astype(int)
        assert pixels.shape == expected.shape
        # another encoder (or decoder) may land a grey level or two away on some pixels
        assert np.abs(pixels - expected).max() <= 3 and np.abs(pixels - expected).mean() < 0.5, i


@pytest.mark.parametrize("name", cases("annotated_data"))
def test_annotated_data_layer(name, in_tree):
    import pycaffe_lite as caffe
    _, case, arrays = load_case("data", name, GOLDEN_SSD)
    phase = caffe.TRAIN if case["phase"] == "TRAIN" else caffe.TEST
    net = caffe.Net(os.path.join("data", name, case["prototxt"]), phase)
    for blob in case["blobs"]:                     # as built, before the first forward
        assert list(net.blobs[blob["name"]].data.shape) == blob["shape"], blob["name"]
    tol = case["tolerance"]
    exact = tol["label_exact_columns"]
    corners = [i for i in range(8) if i not in exact]
    for b, shapes in enumerate(case["batch_shapes"]):
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        assert [list(data.shape), list(label.shape)] == shapes
        np.testing.assert_allclose(data, arrays["batch/%d/data" % b], rtol=tol["rtol"], atol=tol["atol"])
        theirs = arrays["batch/%d/label" % b]
        np.testing.assert_array_equal(label[..., exact], theirs[..., exact])
        np.testing.assert_allclose(label[..., corners], theirs[..., corners], rtol=0, atol=tol["label_atol"])

"""Golden shape cases: our model files build the layers, blobs and params
that Caffe built from its own copies of the same nets."""
import os

import pytest

import pycaffe_lite as caffe
from conftest import REPO, load_case

# Run under both CPU engines: numpy (the reference) and oneDNN.
pytestmark = pytest.mark.usefixtures("both_engines")

# Shape cases whose nets need no Data layer (the rest come with the data layers).
OURS = {
    "bvlc_reference_caffenet_deploy": "models/bvlc_reference_caffenet/deploy.prototxt",
}


def describe(net):
    layers = [{"name": n, "type": l.type, "bottoms": net.bottom_names[n], "tops": net.top_names[n],
               "params": [list(b.shape) for b in l.blobs]}
              for n, l in zip(net._layer_names, net.layers)]
    blobs = [{"name": n, "shape": list(b.shape)} for n, b in net.blobs.items()]
    return layers, blobs


@pytest.mark.parametrize("case_name", sorted(OURS))
@pytest.mark.parametrize("phase", ["TEST", "TRAIN"])
def test_shape_case(case_name, phase):
    _, case, _ = load_case("shapes", case_name)
    expected = case["phases"][phase]
    net = caffe.Net(os.path.join(REPO, OURS[case_name]), getattr(caffe, phase))
    layers, blobs = describe(net)
    assert layers == expected["layers"]
    assert blobs == expected["blobs"]
    assert net.inputs == expected["inputs"]
    assert net.outputs == expected["outputs"]
    weights = {k: v for k, v in net.blob_loss_weights.items() if v}
    assert weights == {k: float(v) for k, v in expected["loss_weights"].items()}


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_window_data_case(phase, monkeypatch):
    """The WindowData net in the golden tree (paths relative to its root):
    Caffe's structure, and the first batch's background items in front."""
    folder, case, _ = load_case("shapes", "window_data")
    monkeypatch.chdir(os.path.dirname(os.path.dirname(folder)))
    expected = case["phases"][phase]
    net = caffe.Net(case["prototxt"] if os.path.exists(case["prototxt"]) else
                    os.path.join("shapes", "window_data", case["prototxt"]), getattr(caffe, phase))
    layers, blobs = describe(net)
    assert layers == expected["layers"]
    assert blobs == expected["blobs"]
    assert net.outputs == expected["outputs"]
    net.forward()
    background = (net.blobs["label"].data == 0).astype(int).tolist()
    assert background == expected["first_batch_background"]

"""Model-zoo architectures, blob by blob against OpenCV's Caffe importer.

For each net (tests/zoo_nets.py) we fill random weights (BatchNorm and Scale
get non-trivial statistics), save a .caffemodel, run our forward and
OpenCV's (fusion off, so every layer's own output exists), and compare every
blob as the last layer that writes it left it. OpenCV reads Caffe's files with
its own implementation of each layer, so agreement checks the format and the
layer arithmetic (padding and rounding of pooling, LRN, BatchNorm + Scale,
grouped and depthwise convolution, Deconvolution + Crop, Concat, Eltwise)
on whole published architectures."""
import numpy as np
import pytest

import pycaffe_lite as caffe
import zoo_nets

# Run under both CPU engines: numpy (the reference) and oneDNN.
pytestmark = pytest.mark.usefixtures("both_engines")

cv2 = pytest.importorskip("cv2")


def _randomize_statistics(net, rng):
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        if kind == "BatchNorm":
            c = blobs[0].data.shape[0]
            blobs[0].data[...] = rng.randn(c) * 0.1
            blobs[1].data[...] = rng.rand(c) + 0.5
            blobs[2].data[...] = 1.0 + rng.rand()       # Caffe's moving-average scale factor
        elif kind == "Scale":
            blobs[0].data[...] = rng.rand(*blobs[0].data.shape) + 0.5
            blobs[1].data[...] = rng.randn(*blobs[1].data.shape) * 0.1


@pytest.mark.parametrize("name", sorted(zoo_nets.NETS))
def test_every_blob_matches_opencv(tmp_path, name):
    rng = np.random.RandomState(3)
    model = tmp_path / "deploy.prototxt"
    model.write_text(str(zoo_nets.NETS[name]()))
    caffe.set_random_seed(1)
    net = caffe.Net(str(model), caffe.TEST)
    _randomize_statistics(net, rng)
    weights = str(tmp_path / "weights.caffemodel")
    net.save(weights)
    x = (rng.rand(*net.blobs["data"].shape) * 2 - 1).astype(np.float32)
    net.forward(data=x)

    cv_net = cv2.dnn.readNetFromCaffe(str(model), weights)
    cv_net.enableFusion(False)
    cv_net.setInput(x)
    writer = {}
    for layer in net._layer_names:
        for top in net.top_names[layer]:
            writer[top] = layer
    # Split layers are ours (Caffe's); OpenCV does not have them
    compared = [(blob, layer) for blob, layer in writer.items()
                if blob != "data" and net.layer_dict[layer].type != "Split"]
    assert len(compared) >= 8
    outputs = cv_net.forward([layer for _, layer in compared])
    for (blob, layer), theirs in zip(compared, outputs):
        ours = net.blobs[blob].data
        theirs = np.asarray(theirs)
        assert theirs.size == ours.size, "%s: %s: OpenCV %s vs ours %s" % (name, blob, theirs.shape, ours.shape)
        scale = float(np.abs(ours).max())
        np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=1e-4, atol=1e-5 * scale + 1e-7,
                                   err_msg="%s: blob %s (layer %s)" % (name, blob, layer))

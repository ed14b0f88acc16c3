"""The forks' files and Python: .caffemodel/.solverstate files the SSD fork
wrote parse with our schema and write back byte for byte; the other forks'
fields decode at their numbers; caffe_pb2 carries the forks' messages;
bad fork layers are clear errors; a py-faster-rcnn style Python layer runs."""
import glob
import os
import sys

import numpy as np
import pytest
from google.protobuf import unknown_fields

import pycaffe_lite as caffe
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.proto import caffe_pb2 as pb
from conftest import GOLDEN_SSD


def unknown(msg, path="net"):
    """Every (path, field numbers) our schema did not recognise."""
    out = []
    found = unknown_fields.UnknownFieldSet(msg)
    if len(found):
        out.append((path, [f.field_number for f in found]))
    for fd, value in msg.ListFields():
        if fd.message_type is not None:
            for i, v in enumerate(value if fd.is_repeated else [value]):
                out += unknown(v, "%s.%s[%d]" % (path, fd.name, i))
    return out


def fork_files(pattern):
    files = sorted(glob.glob(os.path.join(GOLDEN_SSD, "**", pattern), recursive=True))
    if not files:
        pytest.skip("golden-ssd fixtures not found at %s (they live in ../shared/golden-ssd)" % GOLDEN_SSD)
    return files


def test_ssd_fork_caffemodels_round_trip_byte_for_byte():
    """The fork's train net snapshots hold AnnotatedData (transform_param's
    resize_param, annotated_data_param), MultiBoxLoss, PriorBox, Normalize
    and Permute parameters at the fork's field numbers."""
    files = fork_files("*.caffemodel")
    assert len(files) >= 10
    types = set()
    for path in files:
        raw = open(path, "rb").read()
        net = pb.NetParameter()
        net.ParseFromString(raw)
        assert unknown(net) == [], path
        assert net.SerializeToString() == raw, path
        types |= {l.type for l in net.layer}
    assert {"AnnotatedData", "MultiBoxLoss", "PriorBox", "Normalize", "Permute", "DetectionOutput"} <= types
    snap = [pb.NetParameter.FromString(open(f, "rb").read()) for f in files if f.endswith("snap_iter_10.caffemodel")]
    data = [l for l in snap[0].layer if l.type == "AnnotatedData"][0]
    assert data.transform_param.resize_param.height == 64
    assert data.annotated_data_param.label_map_file.endswith("labelmap.prototxt")
    loss = [l for l in snap[0].layer if l.type == "MultiBoxLoss"][0]
    assert loss.multibox_loss_param.num_classes == 4


def test_ssd_fork_solverstate_round_trips():
    for path in fork_files("*.solverstate"):
        raw = open(path, "rb").read()
        state = pb.SolverState.FromString(raw)
        assert unknown(state, "state") == [] and state.SerializeToString() == raw and state.iter == 10


def _field(number, payload):
    """A length-delimited field on the wire."""
    key, out = (number << 3) | 2, bytearray()
    for v in (key, len(payload)):
        while True:
            b = v & 0x7F
            v >>= 7
            out.append(b | (0x80 if v else 0))
            if not v:
                break
    return bytes(out) + payload


@pytest.mark.parametrize("number,field,payload,check", [
    (8266711, "roi_pooling_param", b"\x08\x06\x10\x07\x1d\x00\x00\x80\x3d", lambda p: (p.pooled_h, p.pooled_w,
                                                                                        p.spatial_scale) == (6, 7, 0.0625)),
    (8266712, "smooth_l1_loss_param", b"\x0d\x00\x00\x40\x40", lambda p: p.sigma == 3.0),
    (10002, "psroi_pooling_param", b"\x0d\x00\x00\x80\x3d\x10\x15\x18\x07",
     lambda p: (p.spatial_scale, p.output_dim, p.group_size) == (0.0625, 21, 7)),
    (164, "shuffle_channel_param", b"\x08\x03", lambda p: p.group == 3),
    (206, "norm_param", b"\x08\x00\x18\x00", lambda p: not p.across_spatial and not p.channel_shared),
])
def test_forks_fields_at_their_numbers(number, field, payload, check):
    """A layer as each fork's own schema writes it (wire bytes by the fork's
    field numbers) reads as the right field and writes back the same."""
    raw = _field(1, b"layer") + _field(2, b"T") + _field(number, payload)
    layer = pb.LayerParameter.FromString(raw)
    assert layer.HasField(field) and check(getattr(layer, field))
    assert unknown(layer) == [] and layer.SerializeToString() == raw


def test_caffe_pb2_has_the_forks_messages():
    datum = caffe.caffe_pb2.AnnotatedDatum(type=caffe.caffe_pb2.AnnotatedDatum.BBOX)
    group = datum.annotation_group.add(group_label=2)
    group.annotation.add(instance_id=0, bbox=caffe.caffe_pb2.NormalizedBBox(xmin=0.1, ymin=0.2, xmax=0.5, ymax=0.9))
    assert caffe.caffe_pb2.AnnotatedDatum.FromString(datum.SerializeToString()) == datum
    label_map = caffe.caffe_pb2.LabelMap()
    label_map.item.add(name="none_of_the_above", label=0, display_name="background")
    assert label_map.item[0].display_name == "background"
    assert caffe.caffe_pb2.SolverParameter().ap_version == "Integral"


def _net(tmp_path, text):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    return caffe.Net(str(path), caffe.TEST)


def test_unknown_fork_type_names_the_layer_and_file(tmp_path):
    with pytest.raises(CaffeError, match=r"net.prototxt: layer 'odd' has unknown type 'Reorgg'.*Known types:.*Permute"):
        _net(tmp_path, 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }\n'
                       'layer { name: "odd" type: "Reorgg" bottom: "x" top: "y" }')


def test_priorbox_without_min_size(tmp_path):
    with pytest.raises(CaffeError, match=r"layer 'p' \(PriorBox\): prior_box_param needs min_size"):
        _net(tmp_path, 'layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }\n'
                       'layer { name: "p" type: "PriorBox" bottom: "x" top: "y" prior_box_param { img_size: 30 } }')


def test_detection_output_with_the_wrong_num_classes(tmp_path):
    with pytest.raises(CaffeError, match=r"layer 'det' \(DetectionOutput\): conf \(1, 64\).*num_classes 5.*does "
                                         r"not match the confidence input"):
        _net(tmp_path, """
layer { name: "f" type: "Input" top: "f" input_param { shape { dim: 1 dim: 2 dim: 2 dim: 2 } } }
layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: 1 dim: 64 } } }
layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: 1 dim: 64 } } }
layer { name: "p" type: "PriorBox" bottom: "f" top: "p" prior_box_param { min_size: 10 max_size: 20 aspect_ratio: 2 img_size: 40 } }
layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "p" top: "det"
  detection_output_param { num_classes: 5 } }""")


PROPOSAL_MODULE = '''
import numpy as np
import caffe


class ProposalLayer(caffe.Layer):
    """py-faster-rcnn's proposal layer in outline: its parameters from
    param_str_ (a dict literal there read by yaml), its settings by
    str(self.phase), anchors over the score map, the best boxes out."""

    def setup(self, bottom, top):
        params = eval(self.param_str_)
        self._feat_stride = params["feat_stride"]
        self._cfg = {"TRAIN": 8, "TEST": 5}[str(self.phase)]
        top[0].reshape(1, 5)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        scores = bottom[0].data[:, 1:, :, :]
        h, w = scores.shape[-2:]
        order = np.argsort(-scores.ravel())[:self._cfg]
        ys, xs = np.unravel_index(order, (h, w))
        boxes = np.stack([np.zeros(len(order)), xs * self._feat_stride, ys * self._feat_stride,
                          xs * self._feat_stride + 15, ys * self._feat_stride + 15], axis=1)
        top[0].reshape(*boxes.shape)
        top[0].data[...] = boxes

    def backward(self, top, propagate_down, bottom):
        pass
'''


def test_py_faster_rcnn_style_proposal_layer(tmp_path, monkeypatch):
    """Its code on the path, as in the fork; then ROIPooling on its regions."""
    (tmp_path / "rpn_layer.py").write_text(PROPOSAL_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "caffe", caffe)
    net = _net(tmp_path, """
layer { name: "feat" type: "Input" top: "feat" input_param { shape { dim: 1 dim: 3 dim: 6 dim: 8 } } }
layer { name: "score" type: "Input" top: "score" input_param { shape { dim: 1 dim: 2 dim: 6 dim: 8 } } }
layer { name: "proposal" type: "Python" bottom: "score" top: "rois"
  python_param { module: "rpn_layer" layer: "ProposalLayer" param_str: "{'feat_stride': 16}" } }
layer { name: "roi_pool" type: "ROIPooling" bottom: "feat" bottom: "rois" top: "pooled"
  roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.0625 } }""")
    rng = np.random.RandomState(0)
    out = net.forward(feat=rng.randn(1, 3, 6, 8).astype(np.float32), score=rng.rand(1, 2, 6, 8).astype(np.float32))
    assert net.blobs["rois"].shape == (5, 5)             # TEST's setting, read through str(phase)
    assert out["pooled"].shape == (5, 3, 2, 2)
    # each region is one cell of the map (16 px at 1/16): every bin is that cell
    r = net.blobs["rois"].data
    cells = net.blobs["feat"].data[0][:, (r[:, 2] / 16).astype(int), (r[:, 1] / 16).astype(int)].T
    np.testing.assert_array_equal(out["pooled"][:, :, 0, 0], cells)


def test_fast_rcnn_dropout_scale_train(tmp_path):
    """scale_train: false (Fast R-CNN's fork): training keeps the surviving
    values as they are, testing scales everything by 1 - ratio."""
    text = ('layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 1000 } } }\n'
            'layer { name: "d" type: "Dropout" bottom: "x" top: "y" dropout_param { dropout_ratio: 0.25 '
            'scale_train: false } }')
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    x = np.full((4, 1000), 2.0, np.float32)
    test = caffe.Net(str(path), caffe.TEST).forward(x=x)["y"]
    np.testing.assert_allclose(test, 1.5)
    caffe.set_random_seed(5)
    train = caffe.Net(str(path), caffe.TRAIN).forward(x=x)["y"]
    assert set(np.unique(train)) == {0.0, 2.0} and abs((train == 0).mean() - 0.25) < 0.03

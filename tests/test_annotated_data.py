"""AnnotatedData's random steps (the golden cases cover the deterministic
path): expansion, batch samplers, emit constraints, resize and mirror must
move every box with its pixels; samplers must honour their constraints;
photometric distortion changes colours, never geometry."""
import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.data import augment
from pycaffe_lite.data.db import Writer as _Writer
from pycaffe_lite.errors import CaffeError
from pycaffe_lite.proto import caffe_pb2 as pb

# SSD's own training samplers (ssd_pascal.py), as prototxt.
SSD_SAMPLERS = "".join(
    "batch_sampler { sampler { min_scale: 0.3 max_scale: 1.0 min_aspect_ratio: 0.5 max_aspect_ratio: 2.0 } "
    "sample_constraint { %s } max_sample: 1 max_trials: 50 }" % c
    for c in ("min_jaccard_overlap: 0.1", "min_jaccard_overlap: 0.3", "min_jaccard_overlap: 0.5",
              "min_jaccard_overlap: 0.7", "min_jaccard_overlap: 0.9", "max_jaccard_overlap: 1.0"))


class Writer(_Writer):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def boxed_image(rng, h=240, w=320):
    """A black image with one white rectangle; returns it and its normalized box."""
    img = np.zeros((h, w, 3), np.uint8)
    x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
    x1, y1 = rng.integers(x0 + h // 6, w + 1), rng.integers(y0 + h // 6, h + 1)
    img[y0:y1, x0:x1] = 255
    return img, (x0 / w, y0 / h, x1 / w, y1 / h)


def write_db(path, n=8, encoding="png", seed=0, annotated=True):
    rng = np.random.default_rng(seed)
    truth = []
    with Writer(str(path)) as w:
        for i in range(n):
            img, box = boxed_image(rng)
            truth.append(box)
            a = pb.AnnotatedDatum()
            d = a.datum
            if encoding:
                d.data = cv2.imencode("." + encoding, img)[1].tobytes()
                d.encoded = True
            else:
                d.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
            d.channels, d.height, d.width, d.label = 3, img.shape[0], img.shape[1], i % 3
            if annotated:
                a.type = pb.AnnotatedDatum.BBOX
                g = a.annotation_group.add(group_label=1 + i % 3)
                an = g.annotation.add(instance_id=0)
                an.bbox.xmin, an.bbox.ymin, an.bbox.xmax, an.bbox.ymax = box
            w.put(b"%08d" % i, a.SerializeToString())
    return truth


def net_for(tmp_path, source, transform, anno="", batch=4, phase="TRAIN"):
    p = tmp_path / "net.prototxt"
    p.write_text('layer { name: "data" type: "AnnotatedData" top: "data" top: "label" include { phase: %s } '
                 'transform_param { %s } data_param { source: "%s" batch_size: %d backend: LMDB } '
                 'annotated_data_param { %s } }' % (phase, transform, source, batch, anno))
    return caffe.Net(str(p), caffe.TRAIN if phase == "TRAIN" else caffe.TEST)


def white_box(img):
    """The box (pixels) of the white pixels of a C x H x W image, or None."""
    ys, xs = np.nonzero((img > 128).all(axis=0))
    if not len(xs):
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def test_boxes_follow_pixels_through_every_random_step(tmp_path):
    write_db(tmp_path / "db")
    caffe.set_random_seed(3)
    net = net_for(tmp_path, tmp_path / "db",
                  "mirror: true resize_param { prob: 1 resize_mode: WARP height: 48 width: 48 "
                  "interp_mode: NEAREST } emit_constraint { emit_type: CENTER } "
                  "expand_param { prob: 0.5 max_expand_ratio: 3.0 }", SSD_SAMPLERS)
    checked = 0
    for _ in range(12):
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        assert data.shape == (4, 3, 48, 48)
        for row in label.reshape(-1, 8):
            if row[0] < 0:
                continue
            item, group = int(row[0]), int(row[1])
            assert group in (1, 2, 3) and row[7] == 0
            assert (0 <= row[3:7]).all() and (row[3:7] <= 1).all() and row[3] < row[5] and row[4] < row[6]
            seen = white_box(data[item])
            assert seen is not None, "a labelled box with no object pixels"
            # JPEG re-encoding after expansion or a crop blurs edges by a pixel or two.
            np.testing.assert_allclose(seen, row[3:7] * 48, atol=2.5)
            checked += 1
    assert checked >= 20


def test_mirror_moves_boxes_with_pixels(tmp_path):
    truth = write_db(tmp_path / "db", encoding="")
    caffe.set_random_seed(0)
    net = net_for(tmp_path, tmp_path / "db", "mirror: true", batch=8)
    flipped = 0
    for _ in range(4):
        net.forward()
        for row in net.blobs["label"].data.reshape(-1, 8):
            item = int(row[0])
            x0, y0, x1, y1 = truth[item]
            if abs(row[3] - x0) > 1e-6:
                np.testing.assert_allclose(row[3:7], [1 - x1, y0, 1 - x0, y1], atol=1e-6)
                flipped += 1
            else:
                np.testing.assert_allclose(row[3:7], [x0, y0, x1, y1], atol=1e-6)
            np.testing.assert_allclose(white_box(net.blobs["data"].data[item]), row[3:7] * [320, 240, 320, 240],
                                       atol=1e-3)
    assert 0 < flipped < 32


def test_samplers_honour_their_constraints():
    rng = np.random.default_rng(0)
    objects = [np.array([0.1, 0.1, 0.6, 0.7], np.float32), np.array([0.5, 0.2, 0.95, 0.8], np.float32)]
    for lo in (0.1, 0.3, 0.5, 0.7):
        bs = pb.BatchSampler(max_trials=500, max_sample=3)
        bs.sampler.min_scale, bs.sampler.max_scale = 0.3, 1.0
        bs.sampler.min_aspect_ratio, bs.sampler.max_aspect_ratio = 0.5, 2.0
        bs.sample_constraint.min_jaccard_overlap = lo
        windows = augment.sample_windows(objects, [bs], rng)
        assert 0 < len(windows) <= 3
        for wdw in windows:
            assert max(augment.jaccard(wdw, o) for o in objects) >= np.float32(lo)
            side_w, side_h = wdw[2] - wdw[0], wdw[3] - wdw[1]
            assert 0.3 - 1e-6 <= np.sqrt(side_w * side_h) <= 1 + 1e-6
            assert 0.5 - 1e-4 <= side_w / side_h <= 2 + 1e-4
    # No constraint: every trial is a window; max_sample caps them.
    bs = pb.BatchSampler(max_trials=10)
    assert len(augment.sample_windows(objects, [bs], rng)) == 10
    bs.max_sample = 1
    assert len(augment.sample_windows(objects, [bs], rng)) == 1


def test_emit_constraint_drops_boxes_whose_centre_is_cut_off():
    param = pb.TransformationParameter()
    param.emit_constraint.emit_type = pb.EmitConstraint.CENTER
    groups = [(1, [(0, np.array([0.0, 0.0, 0.3, 0.3], np.float32), False),
                   (1, np.array([0.4, 0.4, 0.8, 0.9], np.float32), True)])]
    window = np.array([0.25, 0.25, 1.0, 1.0], np.float32)
    out = augment.transform_groups(groups, window, param)
    assert len(out) == 1 and [a[0] for a in out[0][1]] == [1]
    np.testing.assert_allclose(out[0][1][0][1], [0.15 / 0.75, 0.15 / 0.75, 0.55 / 0.75, 0.65 / 0.75], rtol=1e-6)
    assert out[0][1][0][2] is True
    # Without the constraint the first box is kept, clipped to the window.
    out = augment.transform_groups(groups, window, pb.TransformationParameter())
    np.testing.assert_allclose(out[0][1][0][1], [0, 0, 0.05 / 0.75, 0.05 / 0.75], atol=1e-6)


def test_expansion_places_the_image_on_a_mean_canvas():
    rng = np.random.default_rng(1)
    img = np.full((10, 20, 3), 200, np.uint8)
    p = pb.ExpansionParameter(prob=1, max_expand_ratio=3)
    out, window = augment.expand(img, p, np.array([1, 2, 3], np.uint8), rng)
    h, w = out.shape[:2]
    assert h >= 10 and w >= 20 and (h, w) != (10, 20)
    inner = augment.project(window, np.array([0, 0, 1, 1], np.float32))
    x0, y0, x1, y1 = np.rint(inner * [w, h, w, h]).astype(int)
    assert (out[y0:y1, x0:x1] == 200).all()
    mask = np.ones((h, w), bool)
    mask[y0:y1, x0:x1] = False
    assert (out[mask] == [1, 2, 3]).all()


def test_distortion_changes_colours_not_shape():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(30, 220, (16, 24, 3)).astype(np.uint8)
    none = pb.DistortionParameter()
    assert (augment.distort(img, none, rng) == img).all()
    bright = pb.DistortionParameter(brightness_prob=1, brightness_delta=32)
    diffs = [float(augment.distort(img, bright, rng).astype(int).mean() - img.mean()) for _ in range(20)]
    assert max(abs(d) for d in diffs) > 1 and all(abs(d) <= 32.5 for d in diffs)
    order = pb.DistortionParameter(random_order_prob=1)
    outs = [augment.distort(img, order, rng) for _ in range(20)]
    assert all(sorted(map(tuple, o.reshape(-1, 3).T.tolist())) == sorted(map(tuple, img.reshape(-1, 3).T.tolist()))
               for o in outs)
    assert any((o != img).any() for o in outs)
    full = pb.DistortionParameter(brightness_prob=0.5, brightness_delta=32, contrast_prob=0.5, contrast_lower=0.5,
                                  contrast_upper=1.5, hue_prob=0.5, hue_delta=18, saturation_prob=0.5,
                                  saturation_lower=0.5, saturation_upper=1.5)
    assert augment.distort(img, full, rng).shape == img.shape


def test_distorted_training_batches_keep_their_boxes(tmp_path):
    write_db(tmp_path / "db", encoding="jpg")
    caffe.set_random_seed(1)
    net = net_for(tmp_path, tmp_path / "db",
                  "mean_value: 104 mean_value: 117 mean_value: 123 resize_param { prob: 1 resize_mode: WARP "
                  "height: 32 width: 32 interp_mode: LINEAR interp_mode: AREA interp_mode: NEAREST interp_mode: CUBIC "
                  "interp_mode: LANCZOS4 } distort_param { brightness_prob: 0.5 brightness_delta: 32 "
                  "contrast_prob: 0.5 contrast_lower: 0.5 contrast_upper: 1.5 hue_prob: 0.5 hue_delta: 18 "
                  "saturation_prob: 0.5 saturation_lower: 0.5 saturation_upper: 1.5 random_order_prob: 0.0 } "
                  "expand_param { prob: 0.5 max_expand_ratio: 4.0 }", SSD_SAMPLERS)
    for _ in range(3):
        net.forward()
        assert net.blobs["data"].data.shape == (4, 3, 32, 32)
        rows = net.blobs["label"].data.reshape(-1, 8)
        assert np.isfinite(net.blobs["data"].data).all()
        assert ((rows[:, 0] >= 0) & (rows[:, 3:7] >= 0).all(1) & (rows[:, 3:7] <= 1).all(1)).all() or \
            (rows == -1).all()


def test_records_without_annotation_type_give_labels(tmp_path):
    write_db(tmp_path / "db", annotated=False)
    net = net_for(tmp_path, tmp_path / "db", "", batch=4, phase="TEST")
    assert net.blobs["label"].data.shape == (4, 1, 1, 1)
    net.forward()
    assert net.blobs["label"].data.ravel().tolist() == [0, 1, 2, 0]


def test_batch_without_boxes_gives_one_row_of_minus_one(tmp_path):
    with Writer(str(tmp_path / "db")) as w:
        a = pb.AnnotatedDatum(type=pb.AnnotatedDatum.BBOX)
        a.datum.CopyFrom(pb.Datum(channels=3, height=4, width=4, data=bytes(48)))
        w.put(b"0", a.SerializeToString())
    net = net_for(tmp_path, tmp_path / "db", "", batch=2, phase="TEST")
    net.forward()
    assert net.blobs["label"].data.shape == (1, 1, 1, 8)
    assert (net.blobs["label"].data == -1).all()


@pytest.mark.parametrize("transform, message", [
    ("resize_param { resize_mode: FIT_SMALL_SIZE height: 8 width: 8 }", "batch_size 1"),
    ("noise_param { prob: 1 }", "noise_param"),
    ("expand_param { max_expand_ratio: 1 }", "max_expand_ratio"),
])
def test_bad_settings_are_named(tmp_path, transform, message):
    write_db(tmp_path / "db", n=2)
    with pytest.raises(CaffeError) as e:
        net_for(tmp_path, tmp_path / "db", transform)
    assert message in str(e.value) and "'data'" in str(e.value)


def test_a_database_of_plain_datums_is_refused(tmp_path):
    with Writer(str(tmp_path / "db")) as w:
        w.put(b"0", b"\xff\xff\xff")
    with pytest.raises(CaffeError) as e:
        net_for(tmp_path, tmp_path / "db", "")
    assert "AnnotatedDatum" in str(e.value) and "convert_annoset" in str(e.value)


def _annoset(tmp_path, objects, width=50, height=40):
    """convert_annoset on one image with these VOC objects; returns (exit code, db path)."""
    from pycaffe_lite.tools import convert_annoset, create_label_map
    root = tmp_path / "root"
    root.mkdir()
    cv2.imwrite(str(root / "a.jpg"), np.zeros((height, width, 3), np.uint8))
    body = "".join("<object><name>%s</name><difficult>0</difficult><bndbox><xmin>%d</xmin><ymin>%d</ymin>"
                   "<xmax>%d</xmax><ymax>%d</ymax></bndbox></object>" % o for o in objects)
    (root / "a.xml").write_text("<annotation><size><width>%d</width><height>%d</height><depth>3</depth></size>%s"
                                "</annotation>" % (width, height, body))
    (tmp_path / "list.txt").write_text("a.jpg a.xml\n")
    (tmp_path / "labels.txt").write_text("cat\ndog\n")
    assert create_label_map.main(["--include_background=true", str(tmp_path / "labels.txt"),
                                  str(tmp_path / "lm.prototxt")]) == 0
    db = tmp_path / "db"
    code = convert_annoset.main(["--anno_type=detection", "--label_type=xml", "--label_map_file=%s" % (tmp_path / "lm.prototxt"),
                                 str(root) + "/", str(tmp_path / "list.txt"), str(db)])
    return code, db


def _records(db):
    import lmdb
    env = lmdb.open(str(db), readonly=True, lock=False)
    with env.begin() as txn:
        out = [pb.AnnotatedDatum.FromString(v) for _, v in txn.cursor()]
    env.close()
    return out


def test_a_label_missing_from_the_label_map_names_the_file_and_line(tmp_path, capsys):
    code, db = _annoset(tmp_path, [("bird", 1, 1, 10, 10)])
    err = capsys.readouterr().err
    assert code == 2 and "list.txt line 1" in err and "a.xml" in err and "'bird'" in err and "cat, dog" in err
    assert not db.exists()                   # nothing half-written


def test_a_box_outside_the_image_is_kept_with_a_warning_as_the_fork_does(tmp_path, caplog):
    code, db = _annoset(tmp_path, [("cat", 10, 10, 80, 30)])
    assert code == 0 and "exceeds image boundary" in caplog.text and "a.xml" in caplog.text
    box = _records(db)[0].annotation_group[0].annotation[0].bbox
    assert box.xmax == pytest.approx(80 / 50) and box.xmin == pytest.approx(10 / 50)


def test_an_xml_without_objects_gives_a_record_without_boxes(tmp_path):
    code, db = _annoset(tmp_path, [])
    (record,) = _records(db)
    assert code == 0 and record.type == pb.AnnotatedDatum.BBOX and not record.annotation_group


def test_a_sampler_that_can_never_be_satisfied_leaves_the_image_whole(tmp_path):
    truth = write_db(tmp_path / "db", encoding="png")
    never = ("batch_sampler { sampler { min_scale: 0.3 max_scale: 0.4 } sample_constraint { min_jaccard_overlap: 1.0 } "
             "max_trials: 20 max_sample: 1 }")
    net = net_for(tmp_path, tmp_path / "db", "", never, batch=8, phase="TRAIN")
    net.forward()
    rows = net.blobs["label"].data.reshape(-1, 8)
    np.testing.assert_allclose(rows[:, 3:7], np.asarray(truth, np.float32), atol=1e-6)
    assert net.blobs["data"].data.shape == (8, 3, 240, 320)


def test_sampled_windows_meet_their_constraint_in_the_expected_share():
    """Monte Carlo: the share of trial windows that overlap one centred object by
    at least 0.5 is the share the samplers keep when max_sample does not cap them."""
    rng = np.random.default_rng(5)
    obj = [np.array([0.3, 0.3, 0.7, 0.7], np.float32)]
    bs = pb.BatchSampler(max_trials=4000)
    bs.sampler.min_scale, bs.sampler.max_scale = 0.3, 1.0
    bs.sampler.min_aspect_ratio, bs.sampler.max_aspect_ratio = 0.5, 2.0
    bs.sample_constraint.min_jaccard_overlap = 0.5
    kept = len(augment.sample_windows(obj, [bs], rng))
    free = pb.BatchSampler(max_trials=4000)
    free.sampler.CopyFrom(bs.sampler)
    windows = augment.sample_windows(obj, [free], rng)
    share = np.mean([augment.jaccard(w, obj[0]) >= np.float32(0.5) for w in windows])
    assert len(windows) == 4000 and 0.02 < share < 0.6
    assert abs(kept / 4000 - share) < 0.04


def test_resume_replays_the_random_steps_exactly(tmp_path):
    """get_state/set_state (what a .solverstate keeps of a data layer): a net
    restored after two batches makes the third batch the first net made."""
    write_db(tmp_path / "db", encoding="jpg")
    transform = ("mirror: true resize_param { height: 32 width: 32 interp_mode: LINEAR interp_mode: CUBIC } "
                 "distort_param { brightness_prob: 0.5 brightness_delta: 32 contrast_prob: 0.5 contrast_lower: 0.5 "
                 "contrast_upper: 1.5 } expand_param { prob: 0.5 max_expand_ratio: 2 }")
    caffe.set_random_seed(4)
    first = net_for(tmp_path, tmp_path / "db", transform, SSD_SAMPLERS)
    first.forward()
    first.forward()
    state = first.layers[0].get_state()
    first.forward()
    want = first.blobs["data"].data.copy(), first.blobs["label"].data.copy()
    caffe.set_random_seed(99)
    second = net_for(tmp_path, tmp_path / "db", transform, SSD_SAMPLERS)
    second.forward()                       # a different stream until restored
    second.layers[0].set_state(*state)
    second.forward()
    np.testing.assert_array_equal(second.blobs["data"].data, want[0])
    np.testing.assert_array_equal(second.blobs["label"].data, want[1])

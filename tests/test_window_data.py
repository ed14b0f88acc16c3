"""WindowData on small generated images: Caffe's sampling rules (background
first, then foreground; thresholds; labels), crop geometry, mirroring, and
bad window files."""
import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import FormatError


def make_image(path, h=40, w=60):
    """Dark left half, bright right half: a mirrored crop is told apart at once."""
    img = np.zeros((h, w, 3), np.uint8)
    img[:, w // 2:] = 200
    cv2.imwrite(str(path), img)


WINDOWS = """# 0
img.png
3
40
60
4
1 0.90 0 0 59 39
2 0.60 10 5 40 30
3 0.40 5 5 20 20
5 0.10 30 10 50 35
"""


def window_net(tmp_path, windows=WINDOWS, batch=8, mirror=False, extra="", crop=16):
    make_image(tmp_path / "img.png")
    (tmp_path / "windows.txt").write_text(windows)
    net = tmp_path / "net.prototxt"
    net.write_text(
        'layer { name: "data" type: "WindowData" top: "data" top: "label" '
        'transform_param { crop_size: %d mirror: %s } '
        'window_data_param { source: "%s" root_folder: "%s/" batch_size: %d fg_threshold: 0.5 bg_threshold: 0.3 '
        'fg_fraction: 0.25 %s } }\n' % (crop, "true" if mirror else "false", tmp_path / "windows.txt", tmp_path,
                                         batch, extra))
    caffe.set_random_seed(5)
    return caffe.Net(str(net), caffe.TRAIN)


def batches(net, n):
    for _ in range(n):
        net.forward()
        yield net.blobs["data"].data.copy(), net.blobs["label"].data.copy()


def test_background_first_then_foreground_and_thresholds(tmp_path):
    net = window_net(tmp_path)
    seen = set()
    for data, labels in batches(net, 6):
        assert data.shape == (8, 3, 16, 16)
        # int(8 * 0.25) = 2 foreground windows, after 6 background ones.
        assert (labels[:6] == 0).all() and (labels[6:] > 0).all()
        seen.update(labels.tolist())
    # Class 3 (overlap 0.40, between the thresholds) is dropped; class 5
    # (overlap 0.10) is background, so its label becomes 0.
    assert seen <= {0, 1, 2} and {1, 2} <= seen


def test_mirror_flips_some_crops_only_when_asked(tmp_path):
    def orientation(data):
        left, right = data[:, 0, :, :4].mean(axis=(1, 2)), data[:, 0, :, -4:].mean(axis=(1, 2))
        return np.sign(right - left)
    plain = window_net(tmp_path)
    flips = np.concatenate([orientation(d[6:]) for d, _ in batches(plain, 5)])
    assert (flips > 0).all(), "without mirror the bright half stays on the right"
    mirrored = window_net(tmp_path, mirror=True)
    flips = np.concatenate([orientation(d[6:]) for d, _ in batches(mirrored, 8)])
    assert (flips > 0).any() and (flips < 0).any()


def test_context_pad_leaves_the_uncovered_border_at_zero(tmp_path):
    # The only foreground window is the whole image: with context padding the
    # enlarged box runs off every side, so a border of the crop stays 0.
    windows = "# 0\nimg.png\n3\n40\n60\n2\n1 0.9 0 0 59 39\n4 0.1 20 10 30 20\n"
    net = window_net(tmp_path, windows, batch=4, extra='context_pad: 2 crop_mode: "warp"', crop=20)
    data, labels = next(batches(net, 1))
    fg = data[labels > 0]
    assert fg.shape[1:] == (3, 20, 20)
    assert (fg[:, :, :2, :] == 0).all() and (fg[:, :, -2:, :] == 0).all()
    assert (fg[:, :, :, :2] == 0).all() and (fg[:, :, :, -2:] == 0).all()
    assert (fg[:, :, 2:-2, -4:-2] == 200).all()      # the bright half, warped inside the padding


def test_square_mode_and_mean_and_scale(tmp_path):
    net = window_net(tmp_path, extra='crop_mode: "square" scale: 0.5')
    path = tmp_path / "net.prototxt"
    path.write_text(path.read_text().replace("mirror: false", "mirror: false mean_value: 100"))
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TRAIN)
    data, _ = next(batches(net, 1))
    values = set(np.unique(data).tolist())
    # pixels 0 and 200 become (0 - 100) * 0.5 and (200 - 100) * 0.5; uncovered cells stay 0
    assert {-50.0, 50.0} <= values and values <= set(np.linspace(-50, 50, 201).tolist())


def test_missing_image(tmp_path):
    with pytest.raises(FormatError) as e:
        window_net(tmp_path, WINDOWS.replace("img.png", "gone.png"))
    assert "windows.txt" in str(e.value) and "gone.png" in str(e.value) and "does not exist" in str(e.value)


def test_window_outside_the_image(tmp_path):
    net = window_net(tmp_path, WINDOWS.replace("2 0.60 10 5 40 30", "2 0.60 10 5 70 30"))
    with pytest.raises(FormatError) as e:
        for _ in batches(net, 10):
            pass
    assert "windows.txt:8:" in str(e.value) and "not inside image" in str(e.value)


def test_malformed_line(tmp_path):
    with pytest.raises(FormatError) as e:
        window_net(tmp_path, WINDOWS.replace("2 0.60 10 5 40 30", "2 0.60 10 five 40 30"))
    assert "windows.txt:8:" in str(e.value) and "'five'" in str(e.value)


def test_foreground_window_needs_a_class(tmp_path):
    with pytest.raises(FormatError, match=r"windows.txt:7: a foreground window .* needs a class > 0"):
        window_net(tmp_path, WINDOWS.replace("1 0.90 0 0 59 39", "0 0.90 0 0 59 39"))


def test_resume_reproduces_the_window_draws(tmp_path):
    net = window_net(tmp_path, mirror=True)
    layer = net.layers[0]
    next(batches(net, 1))
    records, state = layer.get_state()
    want = [d for d, _ in batches(net, 3)]
    again = window_net(tmp_path, mirror=True)
    again.layers[0].set_state(records, state)
    got = [d for d, _ in batches(again, 3)]
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)

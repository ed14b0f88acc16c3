"""caffe.io helpers, the Classifier, and the classify / list / mean tools."""

import cv2
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.tools import classify, convert_mean, make_imagenet_lists
from conftest import golden_path

TINY = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "fc" type: "InnerProduct" bottom: "conv" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


def test_blobproto_and_datum_round_trips():
    a = np.random.RandomState(0).randn(2, 3, 4).astype(np.float32)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(a)), a)
    legacy = pb.BlobProto(num=1, channels=2, height=1, width=3, data=[1, 2, 3, 4, 5, 6])
    assert caffe.io.blobproto_to_array(legacy).shape == (1, 2, 1, 3)
    u = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    d = caffe.io.array_to_datum(u, 7)
    assert d.label == 7 and d.data == u.tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), u)
    f = caffe.io.array_to_datum(a)
    assert len(f.float_data) == 24 and not f.data
    np.testing.assert_allclose(caffe.io.datum_to_array(f), a)
    arrays = caffe.io.blobprotovector_str_to_arraylist(caffe.io.arraylist_to_blobprotovector_str([a, a * 2]))
    np.testing.assert_array_equal(arrays[1], a * 2)


def test_transformer_preprocess_and_deprocess():
    t = caffe.io.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    rgb = np.random.RandomState(1).rand(4, 5, 3).astype(np.float32)
    x = t.preprocess("data", rgb)
    assert x.shape == (3, 4, 5)
    # Channel 0 of the net input is the image's blue channel.
    np.testing.assert_allclose(x[0], (rgb[:, :, 2] * 255 - 10) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", x), rgb, rtol=1e-5, atol=1e-6)
    resized = t.preprocess("data", np.ones((8, 10, 3), np.float32))
    assert resized.shape == (3, 4, 5)
    with pytest.raises(caffe.ShapeError):
        t.set_mean("data", np.zeros((2, 9, 9)))


def test_a_whole_image_mean_of_another_size_is_resized_to_the_input():
    # python/classify.py: the 256x256 ImageNet mean with a 227x227 input
    t = caffe.io.Transformer({"data": (1, 3, 7, 6)})
    t.set_transpose("data", (2, 0, 1))
    mean = np.random.RandomState(2).rand(3, 12, 10) * 100 + 50
    t.set_mean("data", mean)
    low, high = mean.min(), mean.max()
    want = caffe.io.resize_image(((mean - low) / (high - low)).transpose(1, 2, 0), (7, 6)).transpose(2, 0, 1)
    np.testing.assert_allclose(t.mean["data"], want * (high - low) + low, rtol=1e-6)
    x = t.preprocess("data", np.zeros((7, 6, 3), np.float32))
    np.testing.assert_allclose(x, -t.mean["data"], rtol=1e-6)


def test_load_image_takes_paths_urls_and_file_objects(tmp_path):
    import io as pyio
    import pathlib
    bgr = np.random.RandomState(3).randint(0, 256, (5, 7, 3)).astype(np.uint8)
    path = tmp_path / "im.png"
    import cv2
    cv2.imwrite(str(path), bgr)
    want = caffe.io.load_image(str(path))
    np.testing.assert_array_equal(want, bgr[:, :, ::-1] / np.float32(255.0))
    np.testing.assert_array_equal(caffe.io.load_image(pathlib.Path(path)), want)
    np.testing.assert_array_equal(caffe.io.load_image(pyio.BytesIO(path.read_bytes())), want)
    written = pyio.BytesIO()                  # just written to, at its end (as PIL's save leaves it)
    written.write(path.read_bytes())
    np.testing.assert_array_equal(caffe.io.load_image(written), want)
    with open(path, "rb") as f:
        np.testing.assert_array_equal(caffe.io.load_image(f, color=False),
                                      caffe.io.load_image(str(path), color=False))
    np.testing.assert_array_equal(caffe.io.load_image(path.as_uri()), want)
    with pytest.raises(IOError, match="not an image"):
        caffe.io.load_image(pyio.BytesIO(b"not a picture"))


def test_load_resize_oversample(tmp_path):
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 2] = 255                               # pure red in OpenCV's BGR
    path = str(tmp_path / "red.png")
    cv2.imwrite(path, bgr)
    img = caffe.io.load_image(path)
    assert img.shape == (6, 8, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[0, 0], [1, 0, 0])
    assert caffe.io.load_image(path, color=False).shape == (6, 8, 1)
    assert caffe.io.resize_image(img, (12, 4)).shape == (12, 4, 3)
    crops = caffe.io.oversample([np.arange(6 * 8 * 3, dtype=np.float32).reshape(6, 8, 3)], (4, 4))
    assert crops.shape == (10, 4, 4, 3)
    np.testing.assert_array_equal(crops[5], crops[0][:, ::-1])


def test_classifier_and_classify_tool(tmp_path, capsys):
    model = tmp_path / "deploy.prototxt"
    model.write_text(TINY)
    caffe.set_random_seed(2)
    caffe.Net(str(model), caffe.TEST).save(str(tmp_path / "w.caffemodel"))
    clf = caffe.Classifier(str(model), str(tmp_path / "w.caffemodel"), image_dims=(10, 10),
                           raw_scale=255, channel_swap=(2, 1, 0))
    images = [np.random.RandomState(i).rand(12, 9, 3).astype(np.float32) for i in range(3)]
    p = clf.predict(images)
    assert p.shape == (3, 5)
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    center = clf.predict(images, oversample=False)
    assert center.shape == (3, 5)
    # The tool on a folder of images, with the labels printed.
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, im in enumerate(images):
        cv2.imwrite(str(folder / ("%d.jpg" % i)), (im * 255).astype(np.uint8))
    (tmp_path / "words.txt").write_text("".join("n%02d class %d\n" % (i, i) for i in range(5)))
    out = str(tmp_path / "pred.npy")
    assert classify.main([str(folder), out, "--model_def", str(model), "--pretrained_model",
                          str(tmp_path / "w.caffemodel"), "--images_dim=10,10",
                          "--labels_file", str(tmp_path / "words.txt")]) == 0
    assert np.load(out).shape == (3, 5)
    printed = capsys.readouterr().out
    assert "0.jpg" in printed and "class" in printed


def test_mean_conversion_round_trip(tmp_path):
    src = golden_path("data", "mean", "mean.binaryproto")
    npy = str(tmp_path / "mean.npy")
    assert convert_mean.main([src, npy]) == 0
    mean = np.load(npy)
    assert mean.shape == (3, 16, 16) and mean.dtype == np.float32
    back = str(tmp_path / "back.binaryproto")
    assert convert_mean.main([npy, back]) == 0
    with open(src, "rb") as a, open(back, "rb") as b:
        assert a.read() == b.read()


def test_imagenet_lists(tmp_path):
    train = tmp_path / "train"
    for syn in ["n02", "n01", "N10"]:
        (train / syn).mkdir(parents=True)
        for k in range(2):
            (train / syn / ("%s_%d.JPEG" % (syn, k))).write_bytes(b"x")
    val = tmp_path / "val"
    val.mkdir()
    for k in range(3):
        (val / ("val_%d.JPEG" % k)).write_bytes(b"x")
    (tmp_path / "gt.txt").write_text("val_0.JPEG n02\nval_1.JPEG N10\nval_2.JPEG n01\n")
    out = tmp_path / "aux"
    assert make_imagenet_lists.main(["--train_dir", str(train), "--val_dir", str(val),
                                     "--val_ground_truth", str(tmp_path / "gt.txt"), "--out_dir", str(out)]) == 0
    assert (out / "synsets.txt").read_text().split() == ["N10", "n01", "n02"]   # ASCII order
    assert (out / "train.txt").read_text().splitlines()[:3] == ["N10/N10_0.JPEG 0", "N10/N10_1.JPEG 0",
                                                                "n01/n01_0.JPEG 1"]
    assert (out / "val.txt").read_text().splitlines() == ["val_0.JPEG 2", "val_1.JPEG 0", "val_2.JPEG 1"]


def test_memory_data_and_set_input_arrays(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text('''layer { name: "m" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }''')
    net = caffe.Net(str(model), caffe.TEST)
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    net.set_input_arrays(data, np.array([0, 1, 2, 3], np.float32))
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, data[:2])
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [2, 3])
    with pytest.raises(caffe.ShapeError, match="multiple of batch_size"):
        net.set_input_arrays(data[:3], np.zeros(3, np.float32))

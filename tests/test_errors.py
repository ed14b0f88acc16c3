"""Bad input gives one clear error that names the file, layer or line."""
import os

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import ConfigError, FormatError, ShapeError
from conftest import REPO

DEPLOY = os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")
SMALL = '''name: "small"
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "x" top: "y"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
'''


def write(tmp_path, text, name="net.prototxt"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_malformed_prototxt_names_line_and_column(tmp_path):
    path = write(tmp_path, 'name: "n"\nlayer {\n  name: "a"\n  type: "ReLU"\n  botom: "x"\n}\n')
    with pytest.raises(FormatError) as e:
        caffe.Net(path, caffe.TEST)
    assert str(e.value).startswith(path + ":5:")
    assert "botom" in str(e.value)


def test_unclosed_brace(tmp_path):
    path = write(tmp_path, 'layer {\n  name: "a"\n')
    with pytest.raises(FormatError, match=r"net\.prototxt:\d+:\d+"):
        caffe.Net(path, caffe.TEST)


def test_unknown_layer_type_lists_known_ones(tmp_path):
    path = write(tmp_path, SMALL + 'layer { name: "bad" type: "Convolutoin" bottom: "y" top: "z" }\n')
    with pytest.raises(ConfigError) as e:
        caffe.Net(path, caffe.TEST)
    msg = str(e.value)
    assert "'bad'" in msg and "Convolutoin" in msg and "Convolution" in msg and "InnerProduct" in msg


def test_bottom_nobody_produces(tmp_path):
    path = write(tmp_path, SMALL + 'layer { name: "r" type: "ReLU" bottom: "nowhere" top: "z" }\n')
    with pytest.raises(ConfigError) as e:
        caffe.Net(path, caffe.TEST)
    assert "'r'" in str(e.value) and "'nowhere'" in str(e.value)


def test_truncated_caffemodel(tmp_path):
    caffe.set_random_seed(1)
    net = caffe.Net(write(tmp_path, SMALL), caffe.TEST)
    good = tmp_path / "good.caffemodel"
    net.save(str(good))
    data = good.read_bytes()
    bad = tmp_path / "cut.caffemodel"
    bad.write_bytes(data[:len(data) - 37])
    with pytest.raises(FormatError) as e:
        net.copy_from(str(bad))
    assert "cut.caffemodel" in str(e.value) and "truncated" in str(e.value)


def test_non_protobuf_caffemodel(tmp_path):
    net = caffe.Net(write(tmp_path, SMALL), caffe.TEST)
    junk = tmp_path / "junk.caffemodel"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(FormatError, match="junk.caffemodel"):
        net.copy_from(str(junk))
    # A prototxt given where weights belong is no .caffemodel either.
    with pytest.raises(FormatError, match="net.prototxt"):
        net.copy_from(str(tmp_path / "net.prototxt"))


def test_missing_weights_file(tmp_path):
    with pytest.raises(FormatError, match="no such file"):
        caffe.Net(write(tmp_path, SMALL), caffe.TEST, weights=str(tmp_path / "absent.caffemodel"))


def test_weights_that_do_not_fit(tmp_path):
    caffe.set_random_seed(1)
    net = caffe.Net(write(tmp_path, SMALL), caffe.TEST)
    net.save(str(tmp_path / "w.caffemodel"))
    other = write(tmp_path, SMALL.replace("num_output: 4", "num_output: 5"), "other.prototxt")
    with pytest.raises(ShapeError) as e:
        caffe.Net(other, caffe.TEST, weights=str(tmp_path / "w.caffemodel"))
    msg = str(e.value)
    assert "'conv'" in msg and "4x3x3x3" in msg and "5x3x3x3" in msg


def test_include_rule_that_empties_the_net(tmp_path):
    path = write(tmp_path, 'layer { name: "x" type: "Input" top: "x" include { phase: TRAIN } '
                           'input_param { shape { dim: 1 } } }\n')
    with pytest.raises(ConfigError, match="no layer is left in phase TEST"):
        caffe.Net(path, caffe.TEST)


def test_both_include_and_exclude(tmp_path):
    path = write(tmp_path, SMALL + 'layer { name: "r" type: "ReLU" bottom: "y" top: "y" '
                                   'include { phase: TEST } exclude { phase: TRAIN } }\n')
    with pytest.raises(ConfigError, match="'r'.*both include and exclude"):
        caffe.Net(path, caffe.TEST)


def test_shape_error_names_the_layer(tmp_path):
    path = write(tmp_path, SMALL + 'layer { name: "e" type: "Eltwise" bottom: "x" bottom: "y" top: "z" }\n')
    with pytest.raises(ShapeError, match="'e'"):
        caffe.Net(path, caffe.TEST)


def test_bad_label_names_the_layer(tmp_path):
    path = write(tmp_path, '''layer { name: "x" type: "Input" top: "x" top: "l"
        input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "x" bottom: "l" top: "loss" }''')
    net = caffe.Net(path, caffe.TEST)
    net.blobs["l"].data[...] = [0, 7]
    with pytest.raises(ConfigError, match="'loss'.*label"):
        net.forward()


def test_forward_with_wrong_inputs(tmp_path):
    net = caffe.Net(write(tmp_path, SMALL), caffe.TEST)
    with pytest.raises(ConfigError, match="do not match the net inputs"):
        net.forward(z=np.zeros((2, 3, 6, 6)))


@pytest.mark.parametrize("dims, what", [
    ("dim: 999999999", "more than this machine's"),                   # 8 GB with its diff, on a 1 GB machine
    ("dim: 100000 dim: 100000", "more than the 2147483647 values"),    # 1e10 values: past INT_MAX
    ("dim: 999999999 dim: 999999999 dim: 3", "more than the 2147483647 values"),
])
def test_absurd_blob_sizes_are_our_error_not_memory_error(tmp_path, monkeypatch, dims, what):
    from pycaffe_lite import blob
    monkeypatch.setattr(blob, "_memory_bytes", lambda: 1 << 30)
    path = tmp_path / "huge.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "big" input_param { shape { %s } } }' % dims)
    with pytest.raises(caffe.ShapeError) as e:
        caffe.Net(str(path), caffe.TEST)
    message = str(e.value)
    assert "layer 'in'" in message and "blob 'big'" in message and what in message and "bytes" in message
    assert "(%s" % dims.split()[1] in message          # the shape asked for


def test_absurd_sizes_from_the_command_line_are_one_line(tmp_path, capsys):
    from pycaffe_lite.tools import caffe as caffe_tool
    path = tmp_path / "huge.prototxt"
    path.write_text('layer { name: "in" type: "Input" top: "big" input_param { shape { dim: 100000 dim: 100000 } } }')
    assert caffe_tool.main(["time", "--model=" + str(path), "--iterations=1"]) == 2
    err = capsys.readouterr().err
    assert "INT_MAX" in err and "Traceback" not in err and "MemoryError" not in err

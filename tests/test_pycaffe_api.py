"""pycaffe-style scripts run unchanged with `import pycaffe_lite as caffe`."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import pycaffe_lite as caffe
from conftest import REPO

DEPLOY = os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt")


@pytest.fixture(scope="module")
def caffenet_weights(tmp_path_factory):
    caffe.set_random_seed(0)
    path = tmp_path_factory.mktemp("w") / "caffenet.caffemodel"
    caffe.Net(DEPLOY, caffe.TEST).save(str(path))
    return str(path)


def test_classification_script(caffenet_weights, tmp_path):
    script = textwrap.dedent('''
        import sys
        import numpy as np
        import pycaffe_lite as caffe
        caffe.set_mode_cpu()
        net = caffe.Net(sys.argv[1], sys.argv[2], caffe.TEST)
        net.blobs['data'].reshape(1, 3, 227, 227)
        net.blobs['data'].data[...] = np.random.RandomState(0).rand(1, 3, 227, 227) * 255 - 120
        out = net.forward()
        prob = net.blobs['prob'].data
        assert np.shares_memory(out['prob'], prob)
        print(net.params['conv1'][0].data.shape, prob.shape, round(float(prob[0].sum()), 4))
        print(prob[0].argmax() == out['prob'][0].argmax())
        print([(k, v.data.shape) for k, v in net.blobs.items()][:2])
        print(list(net.params)[:3], net.inputs, net.outputs)
    ''')
    path = tmp_path / "classify.py"
    path.write_text(script)
    res = subprocess.run([sys.executable, str(path), DEPLOY, caffenet_weights],
                         capture_output=True, text=True, cwd=str(tmp_path))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "(96, 3, 11, 11) (1, 1000) 1.0"
    assert lines[1] == "True"
    assert lines[2] == "[('data', (1, 3, 227, 227)), ('conv1', (1, 96, 55, 55))]"
    assert lines[3] == "['conv1', 'conv2', 'conv3'] ['data'] ['prob']"


def test_both_constructor_signatures(caffenet_weights):
    a = caffe.Net(DEPLOY, caffenet_weights, caffe.TEST)
    b = caffe.Net(DEPLOY, caffe.TEST, weights=caffenet_weights)
    c = caffe.Net(DEPLOY, caffe.TEST, 0, None, caffenet_weights)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name][0].data, b.params[name][0].data)
        np.testing.assert_array_equal(a.params[name][1].data, c.params[name][1].data)
    with pytest.raises(TypeError, match="phase"):
        caffe.Net(DEPLOY)


NET = '''name: "tiny"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip" top: "ip" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip" top: "ip2"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "acc" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
'''


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.prototxt"
    path.write_text(NET)
    return str(path)


def test_net_attributes(tiny):
    net = caffe.Net(tiny, caffe.TEST)
    assert list(net._layer_names) == ["data", "label_data_1_split", "ip", "relu", "ip2",
                                      "ip2_ip2_0_split", "acc", "loss"]
    assert [l.type for l in net.layers][:2] == ["Input", "Split"]
    assert net.layer_dict["ip"] is net.layers[2]
    assert net.top_names["ip2_ip2_0_split"] == ["ip2_ip2_0_split_0", "ip2_ip2_0_split_1"]
    assert net.bottom_names["loss"] == ["ip2_ip2_0_split_1", "label_data_1_split_1"]
    assert net.inputs == ["data", "label"]
    assert net.outputs == ["acc", "loss"]
    assert list(net.params) == ["ip", "ip2"]
    train = caffe.Net(tiny, caffe.TRAIN)
    assert "acc" not in train.layer_dict and train.outputs == ["loss"]


def test_forward_backward_with_start_end_and_inputs(tiny):
    caffe.set_random_seed(4)
    net = caffe.Net(tiny, caffe.TEST)
    x = np.random.RandomState(1).randn(4, 3).astype(np.float32)
    out = net.forward(data=x, label=np.array([0, 1, 2, 1]))
    assert set(out) == {"acc", "loss"}
    loss = float(out["loss"])
    ip = net.blobs["ip"].data.copy()
    # Forward from ip2 on reuses the stored ip activations.
    out2 = net.forward(start="ip2")
    assert float(out2["loss"]) == pytest.approx(loss)
    part = net.forward(end="relu", blobs=["ip"])
    assert set(part) == {"ip"}
    np.testing.assert_array_equal(part["ip"], ip)
    diffs = net.backward(diffs=["ip"])
    assert set(diffs) == {"data", "label", "ip"}
    assert np.abs(net.params["ip"][0].diff).sum() > 0


def test_reshape_and_share_with(tiny):
    net = caffe.Net(tiny, caffe.TEST)
    other = caffe.Net(tiny, caffe.TRAIN)
    other.share_with(net)
    assert other.params["ip"][0] is net.params["ip"][0]
    net.blobs["data"].reshape(7, 3)
    net.blobs["label"].reshape(7)
    net.reshape()
    assert net.blobs["ip2"].data.shape == (7, 3)
    net.forward()
    assert net.blobs["ip2_ip2_0_split_0"].data.shape == (7, 3)


def test_set_random_seed_repeats_fillers(tiny):
    caffe.set_random_seed(123)
    a = caffe.Net(tiny, caffe.TEST)
    caffe.set_random_seed(123)
    b = caffe.Net(tiny, caffe.TEST)
    np.testing.assert_array_equal(a.params["ip"][0].data, b.params["ip"][0].data)
    assert "Convolution" in caffe.layer_type_list()


def test_gpu_mode_says_it_is_unavailable():
    with pytest.raises(RuntimeError, match="set_mode_cpu"):
        caffe.set_mode_gpu()


def test_cpu_use_never_imports_cupy_mpi_or_dask(tmp_path, tiny):
    script = tmp_path / "cpu_only.py"
    script.write_text(textwrap.dedent('''
        import sys
        import numpy as np
        import pycaffe_lite as caffe
        net = caffe.Net(sys.argv[1], caffe.TEST)
        net.forward(data=np.ones((4, 3)), label=np.zeros(4))
        net.backward()
        from pycaffe_lite.tools import caffe, compute_image_mean, convert_imageset
        print([m for m in ("cupy", "mpi4py", "dask", "distributed") if m in sys.modules])
    '''))
    res = subprocess.run([sys.executable, str(script), tiny], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]", "a plain CPU run imports none of the GPU and scale-out libraries"

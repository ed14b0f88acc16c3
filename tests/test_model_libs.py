"""caffe.model_libs, the SSD fork's net builders: examples/ssd/ssd_pascal.py
(run unchanged through pycaffe_lite.run, as a script written for the fork
is) writes SSD300's train, test and deploy nets and its solver; they load,
have SSD300's published shape, and the deploy net runs as OpenCV dnn runs it."""
import os
import subprocess
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import model_libs
from conftest import REPO

SCRIPT = os.path.join(REPO, "examples", "ssd", "ssd_pascal.py")


@pytest.fixture(scope="module")
def ssd_files(tmp_path_factory):
    out = tmp_path_factory.mktemp("ssd300")
    res = subprocess.run([sys.executable, "-m", "pycaffe_lite.run", SCRIPT, str(out)], capture_output=True, text=True,
                         cwd=str(out))
    assert res.returncode == 0, res.stderr
    return {k: str(out / (k + ".prototxt")) for k in ("train", "test", "deploy", "solver")}


def test_ssd_pascal_writes_ssd300(ssd_files):
    train = caffe.caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Parse(open(ssd_files["train"]).read(), train)
    kinds = [l.type for l in train.layer]
    assert kinds[0] == "AnnotatedData" and kinds[-1] == "MultiBoxLoss"
    data = train.layer[0]
    assert len(data.annotated_data_param.batch_sampler) == 7
    assert data.transform_param.expand_param.max_expand_ratio == 4.0
    assert [l.name for l in train.layer if l.type == "Normalize"] == ["conv4_3_norm"]
    priors = [l for l in train.layer if l.type == "PriorBox"]
    assert [list(p.prior_box_param.min_size) for p in priors] == [[30], [60], [111], [162], [213], [264]]
    assert [list(p.prior_box_param.max_size) for p in priors] == [[60], [111], [162], [213], [264], [315]]
    assert [p.prior_box_param.step for p in priors] == [8, 16, 32, 64, 100, 300]
    fc6 = [l for l in train.layer if l.name == "fc6"][0].convolution_param
    assert (fc6.num_output, list(fc6.dilation), list(fc6.kernel_size)) == (1024, [6], [3])
    solver = caffe.caffe_pb2.SolverParameter()
    text_format.Parse(open(ssd_files["solver"]).read(), solver)
    assert (solver.eval_type, solver.ap_version) == ("detection", "11point")


def test_ssd300_deploy_net_has_8732_priors_and_runs_as_opencv(ssd_files, tmp_path):
    cv2 = pytest.importorskip("cv2")
    caffe.set_random_seed(2)
    net = caffe.Net(ssd_files["deploy"], caffe.TEST)
    assert net.blobs["mbox_priorbox"].shape == (1, 2, 8732 * 4)
    assert net.blobs["mbox_conf_flatten"].shape == (1, 8732 * 21)
    from test_forks_opencv import compare_with_opencv
    x = (np.random.RandomState(0).rand(1, 3, 300, 300) * 2 - 1).astype(np.float32)
    # every blob but the detections: with random weights the per-class top_k
    # (400 of 8732) and keep_top_k cut through crowds of near-equal scores,
    # where rounding decides; DetectionOutput itself is pinned by golden-ssd,
    # MobileNet-SSD and the trained face detector
    net = compare_with_opencv(tmp_path, open(ssd_files["deploy"]).read(), {"data": x}, min_blobs=50,
                              skip=("detection_out",))
    assert net.blobs["detection_out"].shape[3] == 7


def test_mobilenet_body_is_mobilenet_ssd_layout():
    n = caffe.NetSpec()
    n.data = caffe.layers.Input(shape=dict(dim=[1, 3, 300, 300]))
    model_libs.MobileNetBody(n, "data")
    names = n.keys()
    assert names[1:5] == ["conv0", "conv0/bn", "conv0/scale", "conv0_relu"]
    assert "conv13/dw" in names and "conv13" in names
    proto = n.to_proto()
    dw = [l for l in proto.layer if l.name == "conv13/dw"][0].convolution_param
    assert (dw.group, dw.num_output, list(dw.stride)) == (1024, 1024, [1])
    net = caffe.Net(proto, caffe.TEST)
    assert net.blobs["conv11"].shape == (1, 512, 19, 19) and net.blobs["conv13"].shape == (1, 1024, 10, 10)


def test_unpack_variable():
    assert model_libs.UnpackVariable(3, 2) == [3, 3]
    assert model_libs.UnpackVariable([3], 2) == [3, 3]
    assert model_libs.UnpackVariable([3, 5], 2) == [3, 5]

"""ONNX export, run by onnxruntime against our numbers (which the golden
cases tie to Caffe's): the zoo nets, CaffeNet, every golden layer case whose
layers have a counterpart, each Caffe rule that ONNX's defaults would break,
the layers without a counterpart, the command line."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import onnx_export
from conftest import GOLDEN, REPO, golden_cases, load_case

onnx = pytest.importorskip("onnx", reason="the ONNX export needs the onnx extra")
ort = pytest.importorskip("onnxruntime", reason="checking exported models needs onnxruntime (the test extra)")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zoo_nets  # noqa: E402

TOL = 1e-5                  # relative to the largest value of each blob, as the issue asks


def run_onnx(path, feeds):
    """{blob name: array} of the model's outputs (the metadata pairs each
    output tensor with the blob it holds)."""
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = sess.get_modelmeta().custom_metadata_map
    blob_of = dict(zip(meta["caffe.output_tensors"].split(","), meta["caffe.outputs"].split(",")))
    names = [o.name for o in sess.get_outputs()]
    values = sess.run(None, {k: np.asarray(v, np.float32) for k, v in feeds.items()})
    return {blob_of[n]: v for n, v in zip(names, values)}


def assert_blobs(outputs, expected, tol=TOL):
    """Each output equals the blob of its name within tol of that blob's largest value."""
    assert outputs, "nothing to compare"
    for name, got in outputs.items():
        want = np.asarray(expected[name])
        assert got.shape == want.shape, "%s: shape %s, ours %s" % (name, got.shape, want.shape)
        scale = max(float(np.abs(want).max()), 1e-30)
        err = float(np.abs(got.astype(np.float64) - want).max())
        assert err <= tol * scale, "%s: off by %.3g (%.3g of its largest value)" % (name, err, err / scale)


def _net_from(tmp_path, text, name="net.prototxt", phase=caffe.TEST):
    path = tmp_path / name
    path.write_text(text)
    caffe.set_random_seed(3)
    return caffe.Net(str(path), phase)


def export_and_compare(net, tmp_path, inputs, tol=TOL, **kw):
    path = tmp_path / "model.onnx"
    caffe.export_onnx(net, str(path), outputs=list(net.blobs), **kw)
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    net.forward()
    ours = {k: b.data.copy() for k, b in net.blobs.items()}
    graph_inputs = [i.name for i in onnx.load(str(path)).graph.input]
    outputs = run_onnx(path, {name: ours[name] for name in graph_inputs})     # DummyData's too
    assert_blobs(outputs, ours, tol)
    return path, outputs


# -- published architectures and CaffeNet --------------------------------------
@pytest.mark.parametrize("name", sorted(zoo_nets.NETS))
def test_zoo_net_every_blob(name, tmp_path):
    net = _net_from(tmp_path, str(zoo_nets.NETS[name]()))
    rng = np.random.RandomState(0)
    for layer, blobs in net.params.items():
        if net.layer_dict[layer].type == "BatchNorm":
            blobs[0].data[...] = rng.randn(*blobs[0].shape) * 0.1
            blobs[1].data[...] = rng.rand(*blobs[1].shape) + 0.5
            blobs[2].data[...] = 0.5            # the scale factor counts
    inputs = {i: rng.rand(*net.blobs[i].shape).astype(np.float32) for i in net.inputs}
    path, _ = export_and_compare(net, tmp_path, inputs)
    onnx.checker.check_model(onnx.load(str(path)))


def _caffenet(tmp_path):
    net = caffe.Net(os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt"), caffe.TEST)
    rng = np.random.RandomState(0)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.randn(*b.shape) * (0.01 if b.data.ndim > 1 else 0.1)
    weights = tmp_path / "caffenet.caffemodel"
    net.save(str(weights))
    return net, weights


@pytest.mark.slow
def test_caffenet_with_a_dynamic_batch(tmp_path):
    net, _ = _caffenet(tmp_path)
    path = tmp_path / "caffenet.onnx"
    caffe.export_onnx(net, str(path), dynamic_batch=True, outputs=["conv1", "norm2", "pool5", "fc7"])
    model = onnx.load(str(path))
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 3):
        x = np.random.RandomState(batch).randn(batch, 3, 227, 227).astype(np.float32) * 50
        net.blobs["data"].reshape(batch, 3, 227, 227)
        net.reshape()
        out = net.forward(data=x, blobs=["conv1", "norm2", "pool5", "fc7"])
        assert_blobs(run_onnx(path, {"data": x}), out)


# -- the golden layer cases ------------------------------------------------------
@pytest.mark.parametrize("name", golden_cases("layers"))
def test_golden_layer_case(name, tmp_path):
    here = os.getcwd()
    folder, case, arrays = load_case("layers", name)
    os.chdir(GOLDEN)
    try:
        weights = os.path.join(folder, case["weights"]) if case.get("weights") else None
        net = caffe.Net(os.path.join(folder, case["prototxt"]), caffe.TEST, weights=weights)
        unsupported = [l.type for l in net._param.layer if l.type in onnx_export.NO_COUNTERPART]
        path = tmp_path / "case.onnx"
        if unsupported:
            with pytest.raises(onnx_export.ExportError, match="no ONNX counterpart"):
                caffe.export_onnx(net, str(path), outputs=list(net.blobs))
            assert not path.exists()
            pytest.skip("%s has no ONNX counterpart (the export said so, and wrote nothing)" % unsupported[0])
        caffe.export_onnx(net, str(path), outputs=list(net.blobs))
    finally:
        os.chdir(here)
    inputs = {i: arrays["input/" + i] for i in case["inputs"]}
    outputs = run_onnx(path, inputs)
    # against Caffe's own numbers
    assert_blobs({k: v for k, v in outputs.items() if "data/" + k in arrays},
                 {k[5:]: arrays[k] for k in arrays if k.startswith("data/")})


# -- Caffe's rules where ONNX's defaults differ ----------------------------------
def _one_layer(tmp_path, shape, layer, extra=""):
    text = ('layer { name: "data" type: "Input" top: "data" input_param { shape { %s } } }\n%s\n%s'
            % (" ".join("dim: %d" % d for d in shape), extra, layer))
    return _net_from(tmp_path, text)


def _check_rule(tmp_path, shape, layer, extra="", seed=0):
    net = _one_layer(tmp_path, shape, layer, extra)
    x = np.random.RandomState(seed).randn(*shape).astype(np.float32)
    export_and_compare(net, tmp_path, {"data": x})
    return net


def test_rule_ceil_rounded_pooling(tmp_path):
    # 12 wide, kernel 3, stride 2: Caffe's ceil gives 6 columns, ONNX's floor 5
    net = _check_rule(tmp_path, (1, 2, 12, 12), 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                      'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
    assert net.blobs["p"].shape == (1, 2, 6, 6)


@pytest.mark.parametrize("geometry", ["kernel_size: 3 stride: 2 pad: 1", "kernel_size: 2 stride: 2 pad: 1"])
def test_rule_ave_divisor_at_padded_borders(tmp_path, geometry):
    # Caffe divides by the window clipped to the padded input: the padding
    # counts, the ceil overhang past it does not (neither of ONNX's choices)
    _check_rule(tmp_path, (1, 3, 12, 11), 'layer { name: "p" type: "Pooling" bottom: "data" top: "p" '
                'pooling_param { pool: AVE %s } }' % geometry)


@pytest.mark.parametrize("region", ["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
def test_rule_lrn_alpha_over_size(tmp_path, region):
    _check_rule(tmp_path, (1, 7, 6, 6), 'layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { '
                'local_size: 5 alpha: 0.9 beta: 0.75 k: 2 norm_region: %s } }' % region)


def test_rule_batchnorm_scale_factor(tmp_path):
    net = _one_layer(tmp_path, (2, 4, 3, 3), 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }')
    net.params["bn"][0].data[...] = [1.0, -2.0, 3.0, 0.5]
    net.params["bn"][1].data[...] = [4.0, 1.0, 9.0, 2.0]
    net.params["bn"][2].data[...] = 4.0          # the blobs are sums: divide by it
    export_and_compare(net, tmp_path, {"data": np.random.RandomState(0).randn(2, 4, 3, 3)})


def test_rule_deconvolution_groups(tmp_path):
    _check_rule(tmp_path, (1, 4, 5, 5), 'layer { name: "d" type: "Deconvolution" bottom: "data" top: "d" '
                'convolution_param { num_output: 6 kernel_size: 4 stride: 2 pad: 1 group: 2 '
                'weight_filler { type: "gaussian" std: 1 } bias_filler { type: "gaussian" std: 1 } } }')


def test_rule_crop_offsets(tmp_path):
    _check_rule(tmp_path, (1, 2, 9, 10), 'layer { name: "c" type: "Crop" bottom: "data" bottom: "ref" top: "c" '
                'crop_param { axis: 2 offset: 2 offset: 3 } }',
                'layer { name: "ref" type: "DummyData" top: "ref" dummy_data_param { shape { dim: 1 dim: 2 '
                'dim: 4 dim: 5 } } }')


def test_rule_eltwise_coefficients(tmp_path):
    _check_rule(tmp_path, (2, 3, 4), 'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "data2" top: "e" '
                'eltwise_param { operation: SUM coeff: 0.5 coeff: -2 } }',
                'layer { name: "data2" type: "Power" bottom: "data" top: "data2" power_param { shift: 3 } }')


# -- what has no counterpart -------------------------------------------------------
@pytest.mark.parametrize("layer, kind", [
    ('layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "nowhere" layer: "X" } }',
     "Python"),
    ('layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" bottom: "label" top: "loss" }', "SoftmaxWithLoss"),
    ('layer { name: "acc" type: "Accuracy" bottom: "data" bottom: "label" top: "acc" }', "Accuracy"),
    ('layer { name: "spp" type: "SPP" bottom: "data4" top: "spp" spp_param { pyramid_height: 2 } }', "SPP"),
])
def test_a_layer_without_counterpart_stops_the_export_and_writes_nothing(tmp_path, monkeypatch, layer, kind):
    text = ('layer { name: "data" type: "Input" top: "data" top: "label" top: "data4" input_param { '
            'shape { dim: 2 dim: 5 } shape { dim: 2 } shape { dim: 2 dim: 1 dim: 4 dim: 4 } } }\n' + layer)
    if kind == "Python":
        from pycaffe_lite.layers import python as python_layer
        monkeypatch.setattr(python_layer.PythonLayer, "layer_setup", lambda self, b, t: None)
        monkeypatch.setattr(python_layer.PythonLayer, "reshape", lambda self, b, t: t[0].reshape(b[0].shape))
    net = _net_from(tmp_path, text)
    out = tmp_path / "model.onnx"
    with pytest.raises(onnx_export.ExportError) as e:
        caffe.export_onnx(net, str(out))
    name = layer.split('name: "')[1].split('"')[0]
    assert str(e.value).startswith("layer '%s' (%s) has no ONNX counterpart" % (name, kind))
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".onnx")]


# -- the command line ---------------------------------------------------------------
TRAIN_VAL_LIKE = '''name: "small"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mean_value: 10 mean_value: 20 mean_value: 30 scale: 0.5 }
  data_param { source: "/no/such/db" batch_size: 2 backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }
'''


DEPLOY_INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'


def _tool(args):
    return subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.export_onnx"] + args, capture_output=True,
                          text=True, cwd=REPO)


def test_command_line_with_a_data_layer_and_its_transform(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(TRAIN_VAL_LIKE)
    weights = tmp_path / "w.caffemodel"           # the same weights for both exports
    deploy = TRAIN_VAL_LIKE[TRAIN_VAL_LIKE.index('layer { name: "conv"'):]
    _net_from(tmp_path, DEPLOY_INPUT + deploy, "deploy.prototxt").save(str(weights))
    out = tmp_path / "net.onnx"
    res = _tool(["--model", str(model), "--weights", str(weights), "--output", str(out),
                 "--input_shape", "data=2,3,8,8", "--outputs", "conv"])
    assert res.returncode == 0, res.stderr
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["caffe.transform.data.mean_value"] == "10.0,20.0,30.0" and meta["caffe.transform.data.scale"] == "0.5"
    baked = tmp_path / "baked.onnx"
    res = _tool(["--model", str(model), "--weights", str(weights), "--output", str(baked),
                 "--input_shape", "data=2,3,8,8", "--bake_transform"])
    assert res.returncode == 0, res.stderr
    raw = np.random.RandomState(0).rand(2, 3, 8, 8).astype(np.float32) * 255
    plain = run_onnx(out, {"data": (raw - np.array([10, 20, 30], np.float32).reshape(1, 3, 1, 1)) * 0.5})
    (name,) = [i.name for i in onnx.load(str(baked)).graph.input]
    np.testing.assert_allclose(run_onnx(baked, {name: raw})["prob"], plain["prob"], rtol=1e-5, atol=1e-7)


def test_command_line_transformer_flags_bake_pycaffe_preprocessing(tmp_path):
    net, weights = _caffenet(tmp_path)
    out = tmp_path / "baked.onnx"
    res = _tool(["--model", os.path.join(REPO, "models/bvlc_reference_caffenet/deploy.prototxt"), "--weights",
                 str(weights), "--output", str(out), "--bake_transform", "--mean_value", "104,117,123",
                 "--raw_scale", "255", "--channel_swap", "2,1,0"])
    assert res.returncode == 0, res.stderr
    t = caffe.io.Transformer({"data": net.blobs["data"].data.shape})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([104.0, 117, 123]))
    images = np.random.RandomState(0).rand(10, 227, 227, 3).astype(np.float32)
    ours = net.forward(data=np.stack([t.preprocess("data", im) for im in images]))["prob"]
    (name,) = [i.name for i in onnx.load(str(out)).graph.input]
    np.testing.assert_allclose(run_onnx(out, {name: images})["prob"], ours, rtol=1e-4, atol=1e-6)


def test_command_line_errors_are_one_line(tmp_path):
    model = tmp_path / "net.prototxt"
    model.write_text(TRAIN_VAL_LIKE.replace('layer { name: "prob" type: "Softmax" bottom: "conv" top: "prob" }',
                                            'layer { name: "flat" type: "Flatten" bottom: "conv" top: "flat" }\n'
                                            'layer { name: "prob" type: "Accuracy" bottom: "flat" bottom: "label" '
                                            'top: "prob" }'))
    res = _tool(["--model", str(model), "--output", str(tmp_path / "x.onnx"), "--input_shape", "data=2,3,8,8",
                 "--input_shape", "label=2"])
    assert res.returncode == 2 and "layer 'prob' (Accuracy) has no ONNX counterpart" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "x.onnx").exists()
    res = _tool(["--model", str(model), "--output", str(tmp_path / "x.onnx"), "--input_shape", "nope=1"])
    assert res.returncode == 2 and "no data layer" in res.stderr

"""The prepared forward (plan.py) and inference memory: a replayed forward
leaves the same bits in every blob as a forward run layer by layer; what is
written from Python between forwards (inputs, weights, held views, reshapes)
is seen by the next one; weights are held once in the layout their primitive
reads, and a TEST net never allocates diffs; a .caffemodel read straight
into the blobs gives the values protobuf parses."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite import backend, caffemodel, protoio
from pycaffe_lite.kernels import dnnl

pytestmark = pytest.mark.skipif(not dnnl.available(), reason="the oneDNN engine is unavailable here: %s"
                                % dnnl.unavailable_reason())

# fused chains (one through tops of its own, so with blobs made on reading),
# pooling, LRN, a depthwise convolution, Concat, Eltwise+ReLU, and layers
# that run as themselves (InnerProduct, Dropout, Softmax)
NET = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 12 dim: 12 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 }
    bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "conv1/bn" type: "BatchNorm" bottom: "conv1" top: "conv1/bn" batch_norm_param { use_global_stats: true } }
layer { name: "conv1/scale" type: "Scale" bottom: "conv1/bn" top: "conv1/bn" scale_param { bias_term: true
  filler { type: "uniform" min: 0.5 max: 1.5 } bias_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1/bn" top: "conv1/bn" }
layer { name: "pool1" type: "Pooling" bottom: "conv1/bn" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }
layer { name: "a" type: "Convolution" bottom: "norm1" top: "a"
  convolution_param { num_output: 8 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "a/relu" type: "ReLU" bottom: "a" top: "a" }
layer { name: "b" type: "ConvolutionDepthwise" bottom: "norm1" top: "b"
  convolution_param { num_output: 8 group: 8 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "b/bn" type: "BatchNorm" bottom: "b" top: "b" batch_norm_param { use_global_stats: true } }
layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "cat" }
layer { name: "c" type: "Convolution" bottom: "norm1" top: "c"
  convolution_param { num_output: 16 kernel_size: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "sum" type: "Eltwise" bottom: "cat" bottom: "c" top: "sum" }
layer { name: "sum/relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "fc" type: "InnerProduct" bottom: "sum" top: "fc"
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
'''


@pytest.fixture(autouse=True)
def _dnnl_engine():
    backend.set_cpu_engine("dnnl")          # conftest restores the engine after each test


def _make(tmp_path, text=NET):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    caffe.set_random_seed(5)
    net = caffe.Net(str(path), caffe.TEST)
    rng = np.random.RandomState(2)
    for name in ("conv1/bn", "b/bn"):
        blobs = net.params[name]
        blobs[0].data[...] = rng.randn(*blobs[0].shape) * 0.2
        blobs[1].data[...] = rng.rand(*blobs[1].shape) + 0.5
        blobs[2].data[...] = 1.0
    return net


def _inputs(n=2):
    rng = np.random.RandomState(0)
    return [rng.randn(n, 4, 12, 12).astype(np.float32) for _ in range(3)]


def _forward(net, x):
    net.blobs["data"].data[...] = x
    net.forward()
    return net.blobs["prob"].data.copy()


def _layer_by_layer(net, x):
    """The forward without a plan: the net forgets its plan first."""
    net._forget_plan()
    out = _forward(net, x)
    net._forget_plan()
    return out


def _replays(net):
    return net._plan is not None and net._plan.replayed


def _replaying(tmp_path):
    """(net, input, output) once the net replays its forward on that input."""
    net = _make(tmp_path)
    x = _inputs()[0]
    for _ in range(4):
        out = _forward(net, x)
    assert _replays(net)
    return net, x, out


def test_a_replayed_forward_leaves_the_same_bits_in_every_blob(tmp_path):
    net = _make(tmp_path)
    xs = _inputs()
    reference = [_layer_by_layer(net, x) for x in xs]
    outs = [_forward(net, xs[i % 3]) for i in range(9)]
    assert _replays(net), "the forward was not replayed"
    # the chains fused here: ConvChains, one through a top of its own, one
    # adding ResNet-style into the Eltwise SUM's memory
    assert any(getattr(c, "residual", None) == "cat" for c in net._fused)
    for i, out in enumerate(outs):
        assert np.array_equal(out, reference[i % 3]), i
    # every blob (those the chain made lazy included) against a forward run
    # layer by layer on the same input, bit for bit
    _forward(net, xs[1])
    assert _replays(net)
    replayed = {k: b.data.copy() for k, b in net.blobs.items()}
    _layer_by_layer(net, xs[1])
    plain = {k: b.data.copy() for k, b in net.blobs.items()}
    assert replayed.keys() == plain.keys()
    for k in plain:
        assert np.array_equal(replayed[k], plain[k]), k


def test_blobs_a_fused_chain_skips_are_made_on_reading_after_a_replay(tmp_path):
    net, ref = _make(tmp_path), _make(tmp_path)
    xs = _inputs()
    replays = 0
    for i in range(8):
        x = xs[i % 3]
        _forward(net, x)
        replays += _replays(net)
        ref.blobs["data"].data[...] = x
        ref.forward(end="conv1")                 # conv1 alone: what the chain skipped
        assert np.array_equal(net.blobs["conv1"].data, ref.blobs["conv1"].data), i
    assert replays >= 4


def test_the_numpy_engine_agrees_with_a_replayed_forward(tmp_path):
    x = _inputs()[0]
    backend.set_cpu_engine("numpy")
    ref = _forward(_make(tmp_path), x)
    backend.set_cpu_engine("dnnl")
    net = _make(tmp_path)
    for _ in range(4):
        out = _forward(net, x)
    assert _replays(net)
    np.testing.assert_allclose(out, ref, rtol=0, atol=2e-5)


def test_weights_written_from_python_are_seen_by_the_next_forward(tmp_path):
    net, x, before = _replaying(tmp_path)
    for name in ("conv1", "conv1/bn", "conv1/scale", "b", "c", "fc"):
        blob = net.params[name][0]
        blob.data[...] = blob.data * 1.5 + 0.01
        after = _forward(net, x)
        assert not np.array_equal(after, before), name
        assert np.array_equal(after, _layer_by_layer(net, x)), name
        for _ in range(3):
            assert np.array_equal(_forward(net, x), after), name
        assert _replays(net), name
        before = after


def test_views_held_blobs_read_and_reshapes_fall_back_to_the_layer_by_layer_forward(tmp_path):
    net = _make(tmp_path)
    xs = _inputs()
    for _ in range(4):
        _forward(net, xs[0])
    assert _replays(net)
    # a numpy view of an activation held across forwards stays live, as in Caffe
    held = net.blobs["norm1"].data
    out = _forward(net, xs[1])
    assert np.array_equal(out, _layer_by_layer(net, xs[1]))
    _forward(net, xs[2])
    assert np.array_equal(held, net.blobs["norm1"].data)
    for _ in range(3):
        _forward(net, xs[2])
    assert _replays(net)
    del held
    # a blob read between forwards, in place written by the chain after it
    for x in xs:
        out = _forward(net, x)
        conv1 = net.blobs["conv1"].data.copy()          # made on reading (the chain skipped it)
        assert np.array_equal(out, _layer_by_layer(net, x))
        assert np.array_equal(conv1, net.blobs["conv1"].data)
    # a reshape: a new plan at the new shape
    net.blobs["data"].reshape(3, 4, 12, 12)
    net.reshape()
    x3 = np.random.RandomState(4).randn(3, 4, 12, 12).astype(np.float32)
    outs = [_forward(net, x3) for _ in range(4)]
    assert _replays(net)
    assert outs[-1].shape == (3, 10)
    assert all(np.array_equal(o, _layer_by_layer(net, x3)) for o in outs)


def test_a_callback_or_a_partial_forward_runs_layer_by_layer(tmp_path):
    net, x, ref = _replaying(tmp_path)
    seen = []
    net.after_forward(seen.append)
    net.blobs["data"].data[...] = x
    net.forward()
    assert seen == list(range(len(net.layers)))
    np.testing.assert_allclose(net.blobs["prob"].data, ref, rtol=0, atol=2e-6)
    net._callbacks["after_forward"].clear()
    net.blobs["data"].data[...] = x
    net.forward(end="pool1")
    assert np.array_equal(net.blobs["pool1"].data, _pool1_reference(tmp_path, x))


def _pool1_reference(tmp_path, x):
    other = _make(tmp_path)
    other.blobs["data"].data[...] = x
    other.forward(end="pool1")
    return other.blobs["pool1"].data.copy()


def test_activations_let_go_of_are_made_again_from_the_inputs_they_came_from(tmp_path):
    net = _make(tmp_path)
    xs = _inputs()
    refs = []
    for x in xs:
        ref = _make(tmp_path)
        ref.blobs["data"].data[...] = x
        ref.forward(blobs=list(ref.blobs))        # asks for every blob: it keeps them all
        refs.append({k: b.data.copy() for k, b in ref.blobs.items()})
        assert all(b._stale is None for b in ref.blobs.values())
    for _ in range(3):
        _forward(net, xs[0])
    # their memory went to the layers after them: fewer arrays than blobs
    arrays = {id(b._data_buf.blocked) for b in net.blobs.values() if b._data_buf.blocked is not None}
    released = [k for k, b in net.blobs.items() if b._stale is not None]
    assert len(released) >= 3
    assert len(arrays) < len(net.blobs) - len(released) + 2
    # an input written since then does not change what the forward left
    net.blobs["data"].data[...] = xs[2]
    for k, b in net.blobs.items():
        if k != "data":
            assert np.array_equal(b.data, refs[0][k]), k
    assert np.array_equal(net.blobs["data"].data, xs[2])
    # a partial forward on the new input: what it leaves is made from that
    net.forward(end="sum")
    ref = _make(tmp_path)
    ref.blobs["data"].data[...] = xs[2]
    ref.forward(blobs=["conv1"], end="sum")
    for k in ("conv1", "sum"):
        assert np.array_equal(net.blobs[k].data, ref.blobs[k].data), k
    # and a net whose blobs were read keeps them from then on
    _forward(net, xs[1])
    assert not any(b._stale == net._activations.remake for b in net.blobs.values())
    for k, b in net.blobs.items():
        assert np.array_equal(b.data, refs[1][k]), k


def test_a_net_that_would_not_give_the_same_values_again_keeps_its_activations(tmp_path):
    # a DummyData top drawn afresh on every forward: running it again would
    # draw other values
    text = NET.replace('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 12 '
                       'dim: 12 } } }', 'layer { name: "data" type: "DummyData" top: "data" dummy_data_param { '
                       'shape { dim: 2 dim: 4 dim: 12 dim: 12 } data_filler { type: "gaussian" } } }')
    net = _make(tmp_path, text)
    for _ in range(3):
        net.forward()
    assert not any(b._stale == net._activations.remake for b in net.blobs.values())
    data = net.blobs["data"].data.copy()
    other = _make(tmp_path, NET)
    for name, blobs in net.params.items():
        for i, b in enumerate(blobs):
            other.params[name][i].data[...] = b.data
    other.blobs["data"].data[...] = data
    other.forward(blobs=["norm1"])
    assert np.array_equal(net.blobs["norm1"].data, other.blobs["norm1"].data)


def test_inference_weights_are_held_once_and_diffs_never_allocated(tmp_path):
    net = _make(tmp_path)
    weights = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    for _ in range(3):
        _forward(net, _inputs()[0])
    # the convolutions' weights live only in the layout their primitive reads
    # (conv1's, smaller than its output, are folded with its BatchNorm into a
    # copy of their own)
    for name in ("a", "c"):
        assert net.params[name][0]._data_buf.host is None, name
    assert all(b._diff_buf.host is None for b in net.blobs.values())
    # and read back as they were
    for k, v in net.params.items():
        for i, b in enumerate(v):
            assert np.array_equal(b.data, weights[k][i]), (k, i)


def test_a_caffemodel_read_into_the_blobs_gives_what_protobuf_parses(tmp_path):
    net = _make(tmp_path)
    path = str(tmp_path / "w.caffemodel")
    net.save(path)
    # Caffe's own files carry `input` fields: the upgrade puts an Input layer in front
    param = protoio.read_net_binary(path)
    param.input.append("data")
    with open(path, "wb") as f:
        f.write(param.SerializeToString())
    skeleton, places = caffemodel.read_skeleton(path)
    assert len(skeleton.layer) == len(param.layer)
    assert all(len(b.data) == 0 for layer in skeleton.layer for b in layer.blobs)
    streamed = _make(tmp_path)
    parsed = _make(tmp_path)
    for target in (streamed, parsed):
        for v in target.params.values():
            for b in v:
                b.data[...] = 0
    streamed.copy_from(path)
    parsed.copy_from(protoio.read_net_binary(path))
    for k, v in net.params.items():
        for i, b in enumerate(v):
            assert np.array_equal(streamed.params[k][i].data, b.data), (k, i)
            assert np.array_equal(parsed.params[k][i].data, b.data), (k, i)


def test_a_caffemodel_the_walk_does_not_cover_is_parsed_whole(tmp_path):
    net = _make(tmp_path)
    param = net.to_proto()
    # unpacked values (old writers), and a damaged file
    blob = param.layer[1].blobs[0]
    values = np.asarray(blob.data, np.float32)
    raw = param.SerializeToString()
    path = tmp_path / "w.caffemodel"
    path.write_bytes(raw)
    assert caffemodel.read_skeleton(str(path)) is not None
    with_double = net.to_proto()
    with_double.layer[1].blobs[0].ClearField("data")
    with_double.layer[1].blobs[0].double_data.extend(values.astype(np.float64))
    path.write_bytes(with_double.SerializeToString())
    assert caffemodel.read_skeleton(str(path)) is None
    other = _make(tmp_path)
    other.params["conv1"][0].data[...] = 0
    other.copy_from(str(path))
    assert np.array_equal(other.params["conv1"][0].data, values.reshape(other.params["conv1"][0].shape))
    path.write_bytes(raw[:len(raw) // 2])
    assert caffemodel.read_skeleton(str(path)) is None
    with pytest.raises(caffe.FormatError, match="w.caffemodel"):
        other.copy_from(str(path))

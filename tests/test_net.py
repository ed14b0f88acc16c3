"""Net construction semantics: NetState rules, splits, loss weights,
need-backward analysis, shared parameters."""
import numpy as np
import pytest
from google.protobuf import text_format

import pycaffe_lite as caffe
from pycaffe_lite.net import state_meets_rule
from pycaffe_lite.proto import caffe_pb2 as pb


def net_from(text, phase=caffe.TEST, **kw):
    return caffe.Net(text_format.Parse(text, pb.NetParameter()), phase, **kw)


def rule(text):
    return text_format.Parse(text, pb.NetStateRule())


def state(phase=pb.TEST, level=0, stages=()):
    s = pb.NetState(phase=phase, level=level)
    s.stage.extend(stages)
    return s


@pytest.mark.parametrize("rule_text,st,expected", [
    ("phase: TRAIN", state(pb.TRAIN), True),
    ("phase: TRAIN", state(pb.TEST), False),
    ("min_level: 2", state(level=2), True),
    ("min_level: 2", state(level=1), False),
    ("max_level: 2", state(level=3), False),
    ("max_level: 2", state(level=-5), True),
    ('stage: "a" stage: "b"', state(stages=["a"]), False),
    ('stage: "a" stage: "b"', state(stages=["b", "a", "c"]), True),
    ('not_stage: "a"', state(stages=["a"]), False),
    ('not_stage: "a"', state(stages=["b"]), True),
    ('phase: TEST min_level: 1 stage: "x" not_stage: "y"', state(pb.TEST, 1, ["x"]), True),
    ('phase: TEST min_level: 1 stage: "x" not_stage: "y"', state(pb.TEST, 1, ["x", "y"]), False),
])
def test_state_meets_rule(rule_text, st, expected):
    assert state_meets_rule(st, rule(rule_text)) is expected


RULES = '''
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "a" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
layer { name: "b" type: "ReLU" bottom: "x" top: "b" include { stage: "deploy" } }
layer { name: "c" type: "ReLU" bottom: "x" top: "c" exclude { min_level: 2 } }
layer { name: "d" type: "ReLU" bottom: "x" top: "d" include { phase: TEST } include { stage: "s" } }
'''


@pytest.mark.parametrize("phase,level,stages,layers", [
    (caffe.TEST, 0, [], ["x", "x_x_0_split", "c", "d"]),
    (caffe.TRAIN, 0, [], ["x", "x_x_0_split", "a", "c"]),
    (caffe.TRAIN, 3, ["s"], ["x", "x_x_0_split", "a", "d"]),
    (caffe.TEST, 2, ["deploy"], ["x", "x_x_0_split", "b", "d"]),
])
def test_layers_filtered_by_state(phase, level, stages, layers):
    net = net_from(RULES, phase, level=level, stages=stages)
    assert net._layer_names == layers


def test_loss_weight_on_a_consumed_top_goes_to_the_split():
    net = net_from('''
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "sq" type: "Power" bottom: "x" top: "p" loss_weight: 0.5 power_param { power: 2 } }
        layer { name: "r" type: "ReLU" bottom: "p" top: "r" }''')
    assert net._layer_names == ["x", "sq", "p_sq_0_split", "r"]
    split = net.layer_dict["p_sq_0_split"]
    assert split.loss_weights == [0.5, 0.0]
    assert net.bottom_names["r"] == ["p_sq_0_split_1"]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    net.blobs["x"].data[...] = x
    net.forward()
    assert net._last_loss == pytest.approx(0.5 * (x ** 2).sum())


def test_need_backward_pruning():
    text = '''force_backward: false
        layer { name: "x" type: "Input" top: "x" top: "l" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
        layer { name: "frozen" type: "InnerProduct" bottom: "x" top: "f" param { lr_mult: 0 } param { lr_mult: 0 }
                inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
        layer { name: "ip" type: "InnerProduct" bottom: "f" top: "y"
                inner_product_param { num_output: 3 weight_filler { type: "gaussian" } } }
        layer { name: "side" type: "InnerProduct" bottom: "x" top: "side" propagate_down: false
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "y" bottom: "l" top: "loss" }'''
    net = net_from(text)
    need = dict(zip(net._layer_names, net._layer_need_backward))
    assert need["frozen"] is False          # lr_mult 0 and an input below: nothing to learn
    assert need["ip"] is True
    assert need["side"] is False            # does not lead to the loss
    net.blobs["l"].data[...] = [0, 2]
    net.blobs["x"].data[...] = 1
    net.forward()
    net.backward()
    assert not net.params["frozen"][0].diff.any()
    assert net.params["ip"][0].diff.any()
    assert not net.params["side"][0].diff.any()
    forced = net_from(text.replace("force_backward: false", "force_backward: true"))
    assert dict(zip(forced._layer_names, forced._layer_need_backward))["frozen"] is True


def test_shared_params_by_name_accumulate():
    net = net_from('''force_backward: true
        layer { name: "x" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "p" type: "InnerProduct" bottom: "a" top: "pa" param { name: "w" } param { name: "bias" }
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
        layer { name: "q" type: "InnerProduct" bottom: "b" top: "qb" param { name: "w" } param { name: "bias" }
                inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }''')
    assert net.params["p"][0] is net.params["q"][0]
    assert len(net.learnable_params) == 2
    a, b = np.ones((2, 3), np.float32), np.full((2, 3), 2, np.float32)
    net.forward(a=a, b=b)
    net.backward(pa=np.ones((2, 2)), qb=np.ones((2, 2)))
    np.testing.assert_allclose(net.params["p"][0].diff, np.full((2, 3), 6.0))


def test_shared_param_shape_mismatch_is_clear():
    with pytest.raises(caffe.ShapeError, match="'q'.*'w'"):
        net_from('''
        layer { name: "x" type: "Input" top: "a" top: "b" input_param { shape { dim: 2 dim: 3 } } }
        layer { name: "p" type: "InnerProduct" bottom: "a" top: "pa" param { name: "w" }
                inner_product_param { num_output: 2 bias_term: false } }
        layer { name: "q" type: "InnerProduct" bottom: "b" top: "qb" param { name: "w" }
                inner_product_param { num_output: 4 bias_term: false } }''')


def test_in_place_chain_backward_matches_out_of_place():
    base = '''force_backward: true
        layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 4 dim: 3 dim: 2 dim: 2 } } }
        layer { name: "bn" type: "BatchNorm" bottom: "x" top: "%s" batch_norm_param { use_global_stats: false } }
        layer { name: "sc" type: "Scale" bottom: "%s" top: "%s"
                scale_param { bias_term: true filler { type: "gaussian" } bias_filler { type: "gaussian" } } }
        layer { name: "pr" type: "PReLU" bottom: "%s" top: "%s" }'''
    results = []
    for names in [("x",) * 6, ("b", "b", "s", "s", "p")]:
        text = base % names if len(names) == 5 else base % names[:5]
        caffe.set_random_seed(5)
        net = net_from(text)
        x = np.random.RandomState(2).randn(4, 3, 2, 2).astype(np.float32)
        out_name = net.outputs[0]
        net.blobs["x"].data[...] = x
        net.forward()
        y = net.blobs[out_name].data.copy()
        dy = np.random.RandomState(3).randn(*y.shape).astype(np.float32)
        net.backward(**{out_name: dy})
        results.append((y, net.blobs["x"].diff.copy(), net.params["sc"][0].diff.copy()))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

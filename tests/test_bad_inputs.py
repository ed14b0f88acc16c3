"""Bad input files stop with Caffe's check as our clear error (a CaffeError
naming the file, record or field), at the point Caffe checks, and the command
lines say it in one line with exit status 2: damaged Datums and databases,
mean files, solver values, .solverstate fields, prototxt given a field twice,
a divergence in the last update, test_iter 0."""
import json
import math
import os
import shutil
import subprocess
import sys

import cv2
import lmdb
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.data.datum import hwc_to_datum
from pycaffe_lite.proto import caffe_pb2 as pb
from pycaffe_lite.solver import DivergenceError
from pycaffe_lite.tools import caffe as caffe_tool
from pycaffe_lite.tools import compute_image_mean

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_db(path, values):
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for i, v in enumerate(values):
            txn.put(b"%08d" % i, v)
    env.close()
    return str(path)


def good_datum(i=0, size=6):
    img = np.random.RandomState(i).randint(0, 256, (size, size, 3)).astype(np.uint8)
    return hwc_to_datum(img, i % 3).SerializeToString()


NET = '''layer { name: "data" type: "Data" top: "data" top: "label"
  transform_param { %(transform)s } data_param { source: "%(db)s" batch_size: 2 backend: LMDB } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2
  weight_filler { type: "xavier" } } }
'''


def net_over(tmp_path, db, transform=""):
    path = tmp_path / "net.prototxt"
    path.write_text(NET % dict(db=db, transform=transform))
    net = caffe.Net(str(path), caffe.TRAIN)
    net.forward()
    net.forward()
    return net


def assert_clear(error, *words):
    text = str(error.value)
    assert isinstance(error.value, caffe.CaffeError)
    for w in words:
        assert w in text, "%r not in %r" % (w, text)


# -- Datum records ---------------------------------------------------------------
@pytest.mark.parametrize("fields, words", [
    (dict(channels=0, height=6, width=6), ["0 x 6 x 6", "positive"]),
    (dict(channels=3, height=-6, width=6), ["3 x -6 x 6", "positive"]),
    (dict(channels=3, height=6, width=0), ["3 x 6 x 0", "positive"]),
])
def test_a_datum_with_non_positive_sizes(tmp_path, fields, words):
    bad = pb.Datum(label=1, **fields)
    db = write_db(tmp_path / "db", [bad.SerializeToString(), good_datum()])
    with pytest.raises(caffe.FormatError) as e:
        net_over(tmp_path, db)
    assert_clear(e, db, "00000000", *words)


def test_records_with_empty_values(tmp_path):
    db = write_db(tmp_path / "db", [good_datum(0), b"", good_datum(2)])
    with pytest.raises(caffe.FormatError) as e:
        net_over(tmp_path, db)
    assert_clear(e, db, "00000001", "no value")
    with pytest.raises(caffe.FormatError) as e:
        compute_image_mean.mean_of_db(db)
    assert_clear(e, db, "00000001", "no value")


@pytest.mark.parametrize("data, words", [(b"", ["holds no bytes"]), (b"\x89PNG garbage", ["OpenCV cannot read"])])
def test_encoded_datum_that_does_not_decode(tmp_path, data, words):
    bad = pb.Datum(encoded=True, data=data, label=0)
    db = write_db(tmp_path / "db", [bad.SerializeToString()])
    with pytest.raises(caffe.FormatError) as e:
        net_over(tmp_path, db)
    assert_clear(e, db, "00000000", *words)


def test_a_16_bit_png_in_an_encoded_datum(tmp_path):
    img = (np.random.RandomState(0).rand(6, 6, 3) * 65535).astype(np.uint16)
    ok, png = cv2.imencode(".png", img)
    db = write_db(tmp_path / "db", [pb.Datum(encoded=True, data=png.tobytes(), label=0).SerializeToString()])
    with pytest.raises(caffe.FormatError) as e:
        net_over(tmp_path, db)
    assert_clear(e, "unsigned byte", "uint16")


def test_compute_image_mean_of_keys_without_values(tmp_path, capsys):
    db = write_db(tmp_path / "db", [b"", b""])
    out = tmp_path / "mean.binaryproto"
    assert compute_image_mean.main([db, str(out)]) == 2
    err = capsys.readouterr().err
    assert "no value" in err and "Traceback" not in err and not out.exists()


# -- LMDB files --------------------------------------------------------------------
def _db_of(tmp_path, n=40):
    return write_db(tmp_path / "db", [good_datum(i, 16) for i in range(n)])


@pytest.mark.parametrize("keep", [0.5, 3 * 4096, 2 * 4096 + 100])
def test_a_truncated_data_mdb_in_both_tools(tmp_path, keep):
    db = _db_of(tmp_path)
    data = os.path.join(db, "data.mdb")
    with open(data, "r+b") as f:
        f.truncate(int(os.path.getsize(data) * keep) if keep < 1 else keep)
    # in processes of their own: a crash (SIGBUS) would take pytest with it
    code = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.compute_image_mean", db,
                           str(tmp_path / "m.binaryproto")], capture_output=True, text=True)
    assert code.returncode == 2 and "data.mdb is truncated" in code.stderr and "Traceback" not in code.stderr
    solver = tmp_path / "solver.prototxt"
    (tmp_path / "net.prototxt").write_text(NET % dict(db=db, transform="") +
                                           'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" '
                                           'bottom: "label" top: "loss" }')
    solver.write_text('net: "%s" base_lr: 0.01 max_iter: 2 lr_policy: "fixed" snapshot_prefix: "%s"'
                      % (tmp_path / "net.prototxt", tmp_path / "snap"))
    code = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.caffe", "train", "--solver=" + str(solver)],
                          capture_output=True, text=True)
    assert code.returncode == 2 and "data.mdb is truncated" in code.stderr and "Traceback" not in code.stderr


def test_a_damaged_page(tmp_path):
    db = _db_of(tmp_path)
    data = os.path.join(db, "data.mdb")
    raw = bytearray(open(data, "rb").read())
    raw[3 * 4096 + 10:3 * 4096 + 16] = b"\xff" * 6            # the flags and bounds of a page past the metas
    open(data, "wb").write(bytes(raw))
    with pytest.raises(caffe.FormatError) as e:
        list(iter(lambda r=__import__("pycaffe_lite.data.db", fromlist=["Reader"]).Reader(db): r.next(), None))
    assert_clear(e, db, "damaged")


def test_a_page_number_past_the_file_is_an_error_not_a_crash(tmp_path):
    # bytes inserted in the middle: page references now point past the end
    db = _db_of(tmp_path)
    data = os.path.join(db, "data.mdb")
    raw = open(data, "rb").read()
    open(data, "wb").write(raw[:9000] + b"\x00" * 17 + raw[9000:])
    code = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.compute_image_mean", db],
                          capture_output=True, text=True)
    assert code.returncode in (0, 2) and "Traceback" not in code.stderr, code.stderr
    assert code.returncode == 0 or db in code.stderr


def test_a_record_count_that_disagrees_with_the_tree(tmp_path):
    # both meta pages claim 2**48 records: the mean must not go round the 6 it has forever
    from pycaffe_lite.data import lmdb_read
    db = _db_of(tmp_path)
    data = os.path.join(db, "data.mdb")
    raw = bytearray(open(data, "rb").read())
    for page in (0, 1):
        at = page * 4096 + lmdb_read.META_DB + lmdb_read.DB_SIZE + 32
        raw[at:at + 8] = (2 ** 48).to_bytes(8, "little")
    open(data, "wb").write(bytes(raw))
    code = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.compute_image_mean", db],
                          capture_output=True, text=True, timeout=120)
    assert code.returncode == 2 and "Traceback" not in code.stderr, code.stderr
    assert db in code.stderr and "counts 281474976710656 records" in code.stderr


# -- mean files ---------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 0, 6, 6), (1, 3, -6, 6), (0, 3, 6, 6)])
def test_a_mean_file_with_non_positive_sizes(tmp_path, shape):
    proto = pb.BlobProto(num=shape[0], channels=shape[1], height=shape[2], width=shape[3])
    proto.data.extend([0.0] * 108)
    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(proto.SerializeToString())
    db = write_db(tmp_path / "db", [good_datum()])
    with pytest.raises(caffe.CaffeError) as e:
        net_over(tmp_path, db, 'mean_file: "%s"' % mean)
    assert_clear(e, str(mean))
    with pytest.raises(caffe.CaffeError):
        caffe.io.blobproto_to_array(proto)


# -- solver files -------------------------------------------------------------------
SOLVER = '''net_param {
  layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {
    shape { dim: 2 dim: 3 } shape { dim: 2 } data_filler { type: "gaussian" std: 1 }
    data_filler { type: "constant" value: 1 } } }
  layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
    inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
  layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
}
base_lr: 0.01
max_iter: 4
display: 1
snapshot_prefix: "%(prefix)s"
%(extra)s
'''


def solver_file(tmp_path, extra, name="solver.prototxt"):
    path = tmp_path / name
    path.write_text(SOLVER % dict(prefix=tmp_path / "snap", extra=extra))
    return str(path)


@pytest.mark.parametrize("extra, words", [
    ('lr_policy: "nope"', ["lr_policy", "'nope' is not a learning rate policy"]),
    ('lr_policy: ""', ["lr_policy", "is not a learning rate policy"]),
    ('lr_policy: "step" stepsize: 0', ["stepsize", "positive", "step"]),
    ('lr_policy: "sigmoid" gamma: 0.1 stepsize: -2', ["stepsize", "sigmoid"]),
    ('lr_policy: "exp" gamma: -0.5', ["gamma", "negative"]),
    ('lr_policy: "fixed" average_loss: 0', ["average_loss", "at least 1"]),
    ('lr_policy: "fixed" iter_size: 0', ["iter_size", "at least 1"]),
    ('lr_policy: "fixed" type: "AdaGrad" momentum: 0.9', ["momentum", "AdaGrad"]),
    ('lr_policy: "fixed" type: "RMSProp" rms_decay: 1.5', ["rms_decay"]),
    ('lr_policy: "fixed" test_net_param { layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 1 } } } }',
     ["test_iter must be given once per test net"]),
    ('lr_policy: "fixed" test_iter: 1 test_net_param { layer { name: "x" type: "Input" top: "x" input_param { '
     'shape { dim: 1 } } } }', ["test_interval", "positive"]),
])
def test_solver_values_caffe_checks_at_construction(tmp_path, extra, words):
    with pytest.raises(caffe.ConfigError) as e:
        caffe.get_solver(solver_file(tmp_path, extra))
    assert_clear(e, "solver.prototxt", *words)


def test_the_command_line_says_it_in_one_line(tmp_path, capsys):
    assert caffe_tool.main(["train", "--solver=" + solver_file(tmp_path, 'lr_policy: "step" stepsize: 0')]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "stepsize" in lines[0] and "Traceback" not in err and "Iteration" not in err


def test_a_field_given_twice_is_refused_with_its_place(tmp_path):
    path = solver_file(tmp_path, 'lr_policy: "fixed"\nsolver_mode: CPU\nsolver_mode: CPU')
    with pytest.raises(caffe.FormatError) as e:
        caffe.get_solver(path)
    last = len(open(path).read().splitlines())
    assert_clear(e, "solver.prototxt:%d:" % last, "solver_mode")
    net = tmp_path / "net.prototxt"
    net.write_text('name: "a"\nname: "b"\n')
    with pytest.raises(caffe.FormatError) as e:
        caffe.Net(str(net), caffe.TEST)
    assert_clear(e, "net.prototxt:2:", "name")


def test_a_nul_byte_in_snapshot_prefix(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text((SOLVER % dict(prefix="snap\\000x", extra='lr_policy: "fixed" snapshot: 2')))
    with pytest.raises(caffe.ConfigError) as e:
        caffe.get_solver(str(path))
    assert_clear(e, "NUL")


def test_test_iter_0_prints_no_test_output(tmp_path, capsys):
    extra = ('lr_policy: "fixed" test_iter: 0 test_interval: 2 test_net_param { layer { name: "x" type: "DummyData" '
             'top: "x" dummy_data_param { shape { dim: 1 } } } layer { name: "s" type: "Power" bottom: "x" top: "y" } }')
    s = caffe.get_solver(solver_file(tmp_path, extra))
    s.solve()
    err = capsys.readouterr().err
    assert "Testing net (#0)" in err and "Test net output" not in err and "nan" not in err


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nan_after_the_last_update_writes_no_nan_snapshot(tmp_path, capsys):
    s = caffe.get_solver(solver_file(tmp_path, 'lr_policy: "fixed"'))
    # a gradient so large that only the last of the 4 updates overflows the weights
    original = s.net.forward_backward

    def huge():
        loss = original()
        assert math.isfinite(float(loss))
        if s.iter == s.param.max_iter - 1:
            for b in s.net.learnable_params:
                b.diff[...] = 1e38
            s.param.base_lr = 1e10
        return loss
    s.net.forward_backward = huge
    with pytest.raises(DivergenceError) as e:
        s.solve()
    assert "NaN or infinite" in str(e.value) and "no snapshot" in str(e.value)
    assert not list(tmp_path.glob("snap_iter_*.caffemodel"))


# -- .solverstate ---------------------------------------------------------------------
def _state(tmp_path, extra='lr_policy: "multistep" stepvalue: 2 gamma: 0.1 snapshot: 2'):
    s = caffe.get_solver(solver_file(tmp_path, extra))
    s.step(2)
    path = s.snapshot()
    return extra, pb.SolverState.FromString(open(path, "rb").read())


@pytest.mark.parametrize("edit, words", [
    (lambda st: setattr(st, "random_state", b"\xff\xfe not utf-8"), ["random_state"]),
    (lambda st: setattr(st, "random_state", b"{not json"), ["random_state"]),
    (lambda st: setattr(st, "random_state", json.dumps({"bit_generator": "MT19937", "state": {}}).encode()),
     ["random_state", "PCG64"]),
    (lambda st: setattr(st, "random_state", json.dumps({"bit_generator": "PCG64", "state": {"state": "x"}}).encode()),
     ["random_state"]),
    (lambda st: setattr(st, "current_step", 5), ["current_step is 5", "multistep"]),
    (lambda st: setattr(st, "current_step", -1), ["current_step is -1"]),
])
def test_garbled_solverstate_fields(tmp_path, edit, words):
    extra, state = _state(tmp_path)
    edit(state)
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(state.SerializeToString())
    s = caffe.get_solver(solver_file(tmp_path, extra, "again.prototxt"))
    with pytest.raises(caffe.FormatError) as e:
        s.restore(str(bad))
    assert_clear(e, str(bad), *words)


def test_a_state_without_our_fields_resumes_as_caffes_would(tmp_path):
    extra, state = _state(tmp_path)
    state.ClearField("random_state")
    del state.data_state[:]
    plain = tmp_path / "plain.solverstate"
    plain.write_bytes(state.SerializeToString())
    s = caffe.get_solver(solver_file(tmp_path, extra, "again.prototxt"))
    s.restore(str(plain))
    assert s.iter == 2
    s.step(1)
    assert math.isfinite(s.smoothed_loss)


# -- an empty batch ---------------------------------------------------------------------
EMPTY = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 0 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 4 kernel_size: 3 group: 1 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param { num_output: 2 } }
force_backward: true
'''


def test_an_empty_batch_runs_through_and_leaves_weights_alone(tmp_path, both_engines):
    path = tmp_path / "net.prototxt"
    path.write_text(EMPTY)
    net = caffe.Net(str(path), caffe.TRAIN)
    before = {k: [b.data.copy() for b in v] for k, v in net.params.items()}
    net.forward()
    net.backward()
    assert net.blobs["conv"].data.shape == (0, 4, 4, 4) and net.blobs["ip"].data.shape == (0, 2)
    assert net.blobs["data"].diff.shape == (0, 3, 6, 6)
    for k, v in net.params.items():
        for b, old in zip(v, before[k]):
            assert np.array_equal(b.data, old), k
            assert not b.diff.any(), k


# -- found by the fuzzer ---------------------------------------------------------------
def test_an_lstm_too_wide_for_a_blob_axis(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('''layer { name: "x" type: "Input" top: "x" top: "cont"
  input_param { shape { dim: 2 dim: 1 dim: 3 } shape { dim: 2 dim: 1 } } }
layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" recurrent_param { num_output: 2147483647 } }
''')
    with pytest.raises(caffe.ShapeError) as e:
        caffe.Net(str(path), caffe.TEST)
    assert_clear(e, "net.prototxt", "lstm", "8589934588", "2147483647")


def test_a_step_past_the_largest_iteration(tmp_path):
    extra, state = _state(tmp_path)
    state.iter = 2 ** 31 - 1
    last = tmp_path / "last.solverstate"
    last.write_bytes(state.SerializeToString())
    s = caffe.get_solver(solver_file(tmp_path, extra, "again.prototxt"))
    s.restore(str(last))
    with pytest.raises(caffe.ConfigError) as e:
        s.step(1)
    assert_clear(e, "iteration 2147483647", ".solverstate")
    assert s.iter == 2 ** 31 - 1


def test_an_inner_product_over_no_values_gives_its_bias(tmp_path, both_engines):
    # Caffe's GEMM over K = 0 adds nothing: each row is the bias
    path = tmp_path / "net.prototxt"
    path.write_text('''layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 2 dim: 0 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y"
  inner_product_param { num_output: 4 bias_filler { type: "constant" value: 0.5 } } }
force_backward: true
''')
    net = caffe.Net(str(path), caffe.TRAIN)
    net.forward()
    assert net.blobs["y"].data.shape == (2, 4) and (net.blobs["y"].data == 0.5).all()
    net.blobs["y"].diff[...] = 1
    net.backward()
    assert net.blobs["x"].diff.shape == (2, 0, 3) and (net.params["ip"][1].diff == 2).all()


def test_a_damaged_state_leaves_the_solver_as_it_was(tmp_path):
    extra, state = _state(tmp_path)
    state.random_state = b"{not json"
    bad = tmp_path / "bad.solverstate"
    bad.write_bytes(state.SerializeToString())
    s = caffe.get_solver(solver_file(tmp_path, extra, "again.prototxt"))
    weights = [b.data.copy() for b in s.net.learnable_params]
    with pytest.raises(caffe.FormatError):
        s.restore(str(bad))
    assert s.iter == 0 and s.current_step == 0
    for b, w in zip(s.net.learnable_params, weights):
        assert np.array_equal(b.data, w)

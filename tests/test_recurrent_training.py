"""An LRCN-style captioner (Embed -> LSTM -> InnerProduct -> SoftmaxWithLoss
over T steps) trained under the solver: the loss falls, a snapshot resumes
bit for bit (sequences carried across batches included), and the
.caffemodel round-trips."""
import os

import h5py
import numpy as np
import pytest

import pycaffe_lite as caffe

T, STREAMS, VOCAB, ROWS = 6, 4, 7, 60

NET = '''name: "captioner"
layer { name: "data" type: "HDF5Data" top: "input_sentence" top: "cont_sentence" top: "target_sentence"
  hdf5_data_param { source: "%(list)s" batch_size: %(T)d } }
layer { name: "embed" type: "Embed" bottom: "input_sentence" top: "embedded"
  embed_param { num_output: 8 input_dim: %(V)d bias_term: false weight_filler { type: "uniform" min: -0.3 max: 0.3 } } }
layer { name: "lstm" type: "%(cell)s" bottom: "embedded" bottom: "cont_sentence" top: "lstm"
  recurrent_param { num_output: 16 weight_filler { type: "uniform" min: -0.3 max: 0.3 }
                    bias_filler { type: "constant" value: 0 } } }
layer { name: "predict" type: "InnerProduct" bottom: "lstm" top: "predict"
  inner_product_param { num_output: %(V)d axis: 2 weight_filler { type: "uniform" min: -0.3 max: 0.3 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target_sentence" top: "loss"
  softmax_param { axis: 2 } loss_param { ignore_label: -1 } }
'''

SOLVER = '''net: "%(net)s"
base_lr: 1
momentum: 0.9
lr_policy: "fixed"
clip_gradients: 5
display: 10
max_iter: %(max_iter)d
snapshot: 20
snapshot_prefix: "%(prefix)s"
solver_mode: CPU
random_seed: 3
'''


def make_data(folder):
    """Streams of tokens where each token follows from the one before
    (next = 3 * token + 1 mod V); sequences of length 5 restart with cont 0,
    and they run on across the batch boundaries (cont 1 at t = 0)."""
    rng = np.random.RandomState(0)
    tokens = np.zeros((ROWS, STREAMS), np.float32)
    cont = np.ones((ROWS, STREAMS), np.float32)
    for s in range(STREAMS):
        for r in range(ROWS):
            if (r + s) % 5 == 0:
                tokens[r, s], cont[r, s] = rng.randint(VOCAB), 0
            else:
                tokens[r, s] = (3 * tokens[r - 1, s] + 1) % VOCAB
    target = (3 * tokens + 1) % VOCAB
    path = os.path.join(folder, "train.h5")
    with h5py.File(path, "w") as f:
        f["input_sentence"], f["cont_sentence"], f["target_sentence"] = tokens, cont, target
    with open(os.path.join(folder, "train.txt"), "w") as f:
        f.write(path + "\n")
    return os.path.join(folder, "train.txt")


def solver_file(tmp_path, cell, max_iter, prefix="snap"):
    listing = make_data(str(tmp_path))
    net = tmp_path / "net.prototxt"
    net.write_text(NET % {"list": listing, "T": T, "V": VOCAB, "cell": cell})
    path = tmp_path / ("solver_%d.prototxt" % max_iter)
    path.write_text(SOLVER % {"net": net, "max_iter": max_iter, "prefix": tmp_path / prefix})
    return str(path)


def weights(net):
    return {name: [b.data.copy() for b in blobs] for name, blobs in net.params.items()}


@pytest.mark.parametrize("cell", ["LSTM", "RNN"])
def test_captioner_learns_and_resumes_bit_for_bit(tmp_path, cell):
    solver = caffe.get_solver(solver_file(tmp_path, cell, 40))
    losses = []
    for _ in range(40):
        solver.step(1)
        losses.append(float(solver.net.blobs["loss"].data))
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    assert len(solver.net.params["lstm"]) == (3 if cell == "LSTM" else 5)
    final = weights(solver.net)

    resumed = caffe.get_solver(solver_file(tmp_path, cell, 40))
    resumed.restore(str(tmp_path / "snap_iter_20.solverstate"))
    assert resumed.iter == 20
    resumed.step(20)
    for name, blobs in weights(resumed.net).items():
        for a, b in zip(blobs, final[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_lstm_caffemodel_round_trip(tmp_path):
    solver = caffe.get_solver(solver_file(tmp_path, "LSTM", 5))
    solver.step(5)
    path = str(tmp_path / "lstm.caffemodel")
    solver.net.save(path)
    back = caffe.Net(str(tmp_path / "net.prototxt"), caffe.TRAIN, weights=path)
    shapes = [b.shape for b in back.params["lstm"]]
    assert shapes == [(64, 8), (64,), (64, 16)]        # W_xc, b_c, W_hc: Caffe's order and shapes
    for name, blobs in weights(solver.net).items():
        for a, b in zip(blobs, back.params[name]):
            np.testing.assert_array_equal(a, b.data)
    again = str(tmp_path / "again.caffemodel")
    back.save(again)
    assert open(path, "rb").read() == open(again, "rb").read()
    # The same forward from both (cont 0 at t = 0, so no carried state).
    solver.net.forward()
    out = solver.net.blobs["predict"].data.copy()
    back.forward()
    assert out.shape == back.blobs["predict"].data.shape

"""Programs written for pycaffe run unchanged (`import caffe`) through
`python -m pycaffe_lite.run`, on a model trained here to real accuracy,
saved and reloaded: the way packages that ship a trained Caffe model use
pycaffe (GLOG_minloglevel set before the import, Net(model, phase int,
weights=...), load_image of a BytesIO just written, forward_all(blobs=...)),
and pycaffe's module layout (caffe.proto.caffe_pb2, caffe.io, caffe.draw,
caffe.net_spec, caffe._caffe, ...)."""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A program of the kind packages ship with their model: this text is ours.
PACKAGE_STYLE = r'''
import os
import sys
os.environ["GLOG_minloglevel"] = "2"          # before the import, as such packages do

from io import BytesIO
import numpy as np
from PIL import Image
from caffe import Net
from caffe.io import Transformer, load_image, blobproto_to_array
from caffe.proto import caffe_pb2

work = sys.argv[1]
mean = caffe_pb2.BlobProto()
mean.ParseFromString(open(os.path.join(work, "data/digits/mean.binaryproto"), "rb").read())
net = Net(os.path.join(work, "models/digits/deploy.prototxt"), 1, weights=sys.argv[2])
transformer = Transformer({"data": net.blobs["data"].data.shape})
transformer.set_transpose("data", (2, 0, 1))
transformer.set_mean("data", blobproto_to_array(mean)[0])      # a whole-image mean
transformer.set_raw_scale("data", 255)
transformer.set_channel_swap("data", (2, 1, 0))
right = total = 0
for line in open(os.path.join(work, "data/digits/val.txt")):
    name, label = line.split()
    picture = Image.open(os.path.join(work, "images/val", name)).convert("RGB")
    encoded = BytesIO()
    picture.save(encoded, format="PNG")          # left at its end, as the packages leave it
    x = transformer.preprocess("data", load_image(encoded))[None]
    out = net.forward_all(blobs=["prob"], **{net.inputs[0]: x})["prob"][0]
    right += int(out.argmax() == int(label))
    total += 1
print("accuracy %.4f over %d" % (right / float(total), total))
'''

LAYOUT = r'''
import caffe
import caffe.draw
import caffe.io
from caffe import layers as L, params as P
from caffe.proto import caffe_pb2
from caffe.coord_map import crop
from caffe.net_spec import NetSpec
from caffe._caffe import layer_type_list
from caffe.pycaffe import Net, SGDSolver
assert caffe.TRAIN == caffe_pb2.TRAIN and "Convolution" in layer_type_list()
assert caffe.Net is Net and hasattr(caffe.io, "Transformer") and hasattr(caffe.draw, "draw_net")
n = NetSpec()
n.data = L.Input(shape=dict(dim=[1, 1, 8, 8]))
n.conv = L.Convolution(n.data, num_output=2, kernel_size=3)
print(type(n.to_proto()).__name__, caffe.__name__)
'''


def _run(args, **env):
    full = {k: v for k, v in os.environ.items() if not k.startswith("GLOG_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "pycaffe_lite.run"] + args, capture_output=True, text=True,
                          cwd=REPO, env=full, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The brew demo's digits model, trained to real accuracy and saved."""
    work = tmp_path_factory.mktemp("trained") / "brew"
    res = subprocess.run([sys.executable, "-m", "pycaffe_lite.tools.brew_demo", str(work), "--iterations=200"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return work, str(work / "models/digits/digits_train_iter_200.caffemodel")


@pytest.mark.slow
def test_a_package_style_program_runs_unchanged_on_a_trained_model(trained, tmp_path):
    work, weights = trained
    script = tmp_path / "classify_like_a_package.py"
    script.write_text(PACKAGE_STYLE)
    res = _run([str(script), str(work), weights])
    assert res.returncode == 0, res.stderr[-3000:]
    accuracy = float(res.stdout.split()[1])
    assert accuracy > 0.85, res.stdout
    # GLOG_minloglevel, set by the program before `import caffe`, silenced the INFO lines
    assert "Initializing net" not in res.stderr and not res.stderr.strip(), res.stderr[-2000:]


def test_pycaffe_module_layout(tmp_path):
    script = tmp_path / "layout.py"
    script.write_text(LAYOUT)
    res = _run([str(script)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split() == ["NetParameter", "pycaffe_lite"]


def test_the_runner_without_a_program_says_how_to_use_it():
    res = _run([])
    assert res.returncode == 2 and "python -m pycaffe_lite.run script.py" in res.stdout

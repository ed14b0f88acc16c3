"""The "Brewing ImageNet" recipe, end to end, on data small enough for a laptop:
scikit-learn's handwritten digits written out as image files in the ImageNet
folder layout (train/<synset>/*.png, val/*.png with a ground-truth file).

    python examples/digits/brew_digits.py WORKDIR

prepares WORKDIR (images, lists, LMDBs, mean, nets, solver) and prints the
commands for training, resuming and timing. Needs scikit-learn."""
import os
import sys

import cv2
import numpy as np

from pycaffe_lite.tools import compute_image_mean, convert_imageset, make_imagenet_lists

NET = '''name: "DigitNet"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { crop_size: 32 mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/train_lmdb" batch_size: 50 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { crop_size: 32 mean_file: "data/digits/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "examples/digits/val_lmdb" batch_size: 59 backend: LMDB } }
%s
layer { name: "accuracy" type: "Accuracy" bottom: "fc3" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc3" bottom: "label" top: "loss" }
'''

TRUNK = '''layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 16 kernel_size: 5 weight_filler { type: "gaussian" std: 0.05 }
                      bias_filler { type: "constant" value: 0 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 32 pad: 2 kernel_size: 5 group: 2 weight_filler { type: "gaussian" std: 0.05 }
                      bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 64 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu3" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "drop1" type: "Dropout" bottom: "fc1" top: "fc1" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc3" type: "InnerProduct" bottom: "fc1" top: "fc3"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" value: 0 } } }
'''

DEPLOY = '''name: "DigitNet"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 10 dim: 3 dim: 32 dim: 32 } } }
%s
layer { name: "prob" type: "Softmax" bottom: "fc3" top: "prob" }
''' % TRUNK

SOLVER = '''net: "models/digits/train_val.prototxt"
test_iter: 5
test_interval: 100
base_lr: 0.02
lr_policy: "step"
gamma: 0.1
stepsize: 250
display: 20
max_iter: 300
momentum: 0.9
weight_decay: 0.0005
snapshot: 100
snapshot_prefix: "models/digits/digits_train"
solver_mode: CPU
random_seed: 1
'''


def write_digit_images(root):
    """train/<synset>/*.png and val/*.png from sklearn's digits, 36x36 colour."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    synsets = ["n%08d" % (90 - d) for d in range(10)]        # ASCII order is not digit order
    rng = np.random.RandomState(0)
    order = rng.permutation(len(digits.images))
    val_ids = set(order[:295].tolist())
    truth = []
    for i, (img, target) in enumerate(zip(digits.images, digits.target)):
        big = cv2.resize((img * 255.0 / 16).astype(np.uint8), (36, 36), interpolation=cv2.INTER_LINEAR)
        colour = np.repeat(big[:, :, None], 3, axis=2)
        if i in val_ids:
            name = "val_%05d.png" % i
            cv2.imwrite(os.path.join(root, "val", name), colour)
            truth.append("%s %s" % (name, synsets[target]))
        else:
            folder = os.path.join(root, "train", synsets[target])
            os.makedirs(folder, exist_ok=True)
            cv2.imwrite(os.path.join(folder, "%s_%05d.png" % (synsets[target], i)), colour)
    with open(os.path.join(root, "val_ground_truth.txt"), "w") as f:
        f.write("\n".join(truth) + "\n")
    return synsets


def prepare(workdir):
    """Steps 1-3 of the recipe inside workdir (which becomes the project root)."""
    os.makedirs(os.path.join(workdir, "images", "val"), exist_ok=True)
    here = os.getcwd()
    os.chdir(workdir)
    try:
        synsets = write_digit_images("images")
        assert make_imagenet_lists.main(["--train_dir", "images/train", "--val_dir", "images/val",
                                         "--val_ground_truth", "images/val_ground_truth.txt",
                                         "--out_dir", "data/digits"]) == 0
        os.makedirs("examples/digits", exist_ok=True)
        assert convert_imageset.main(["--shuffle", "--seed=3", "images/train/", "data/digits/train.txt",
                                      "examples/digits/train_lmdb"]) == 0
        assert convert_imageset.main(["images/val/", "data/digits/val.txt", "examples/digits/val_lmdb"]) == 0
        assert compute_image_mean.main(["examples/digits/train_lmdb", "data/digits/mean.binaryproto"]) == 0
        os.makedirs("models/digits", exist_ok=True)
        with open("models/digits/train_val.prototxt", "w") as f:
            f.write(NET % TRUNK)
        with open("models/digits/deploy.prototxt", "w") as f:
            f.write(DEPLOY)
        with open("models/digits/solver.prototxt", "w") as f:
            f.write(SOLVER)
    finally:
        os.chdir(here)
    return synsets


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    prepare(sys.argv[1])
    print("Prepared %s. From there:" % sys.argv[1])
    print("  python -m pycaffe_lite.tools.caffe train --solver=models/digits/solver.prototxt")
    print("  python -m pycaffe_lite.tools.caffe train --solver=models/digits/solver.prototxt "
          "--snapshot=models/digits/digits_train_iter_100.solverstate")
    print("  python -m pycaffe_lite.tools.caffe time --model=models/digits/deploy.prototxt")

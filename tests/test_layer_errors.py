"""Bad input to the layers added with the full catalogue: each error names the
layer and says what to change."""
import numpy as np
import pytest

import pycaffe_lite as caffe
from pycaffe_lite.errors import CaffeError, ConfigError, FormatError, ShapeError


def net_with(tmp_path, inputs, layer, phase=caffe.TEST):
    text = "".join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (name, name, " ".join("dim: %d" % d for d in shape)) for name, shape in inputs.items())
    path = tmp_path / "net.prototxt"
    path.write_text(text + layer)
    return caffe.Net(str(path), phase)


def test_reduction_axis_out_of_range(tmp_path):
    with pytest.raises(ShapeError) as e:
        net_with(tmp_path, {"x": (2, 3, 4)}, 'layer { name: "red" type: "Reduction" bottom: "x" top: "y" '
                                            'reduction_param { axis: 3 } }')
    assert "layer 'red'" in str(e.value) and "axis 3 is out of range" in str(e.value) and "[-3, 2]" in str(e.value)


def test_tile_needs_positive_tiles(tmp_path):
    with pytest.raises(ConfigError, match=r"layer 'tile'.*tiles must be at least 1, got 0"):
        net_with(tmp_path, {"x": (2, 3)}, 'layer { name: "tile" type: "Tile" bottom: "x" top: "y" '
                                         'tile_param { tiles: 0 } }')


def test_filter_selector_of_the_wrong_length(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'f'.*selector has 3 entries but bottom \(4, 2\) has 4 items"):
        net_with(tmp_path, {"x": (4, 2), "sel": (3,)}, 'layer { name: "f" type: "Filter" bottom: "x" bottom: "sel" '
                                                       'top: "y" }')


def test_embed_index_beyond_input_dim(tmp_path):
    net = net_with(tmp_path, {"idx": (2, 3)}, 'layer { name: "emb" type: "Embed" bottom: "idx" top: "y" '
                                              'embed_param { num_output: 4 input_dim: 5 } }')
    net.blobs["idx"].data[...] = [[0, 1, 4], [2, 5, 3]]
    with pytest.raises(ShapeError) as e:
        net.forward()
    assert "layer 'emb'" in str(e.value) and "[0, 5)" in str(e.value) and "got 5" in str(e.value)
    net.blobs["idx"].data[...] = [[0, 1, 4], [2, 1.5, 3]]
    with pytest.raises(ShapeError, match="whole numbers"):
        net.forward()


def test_infogain_matrix_of_the_wrong_size(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'loss'.*holds 9 values; with 4 classes it must be 4 x 4"):
        net_with(tmp_path, {"x": (5, 4), "label": (5,), "H": (3, 3)},
                 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "H" top: "l" }')


def test_infogain_source_missing(tmp_path):
    with pytest.raises(FormatError, match=r"layer 'loss'.*source.*no such file"):
        net_with(tmp_path, {"x": (5, 4), "label": (5,)},
                 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" top: "l" '
                 'infogain_loss_param { source: "%s" } }' % (tmp_path / "nope.binaryproto"))


def test_lstm_cont_shape_must_match(tmp_path):
    with pytest.raises(ShapeError) as e:
        net_with(tmp_path, {"x": (5, 2, 3), "cont": (5, 3)},
                 'layer { name: "lstm" type: "LSTM" bottom: "x" bottom: "cont" top: "h" '
                 'recurrent_param { num_output: 4 } }')
    assert "layer 'lstm'" in str(e.value) and "cont must be (T, N) = (5, 2)" in str(e.value)


def test_nd_convolution_kernel_for_the_wrong_number_of_axes(tmp_path):
    with pytest.raises(ConfigError) as e:
        net_with(tmp_path, {"x": (2, 3, 5, 6, 5)},
                 'layer { name: "conv3d" type: "Convolution" bottom: "x" top: "y" '
                 'convolution_param { num_output: 2 kernel_size: 3 kernel_size: 3 } }')
    assert "layer 'conv3d'" in str(e.value)
    assert "kernel_size must be given once, or once per spatial axis: it is given 2 times for a bottom with 3" \
        in str(e.value)


def test_kernel_h_only_in_2d(tmp_path):
    with pytest.raises(ConfigError, match=r"layer 'c'.*kernel_h/kernel_w can only be used for 2-D"):
        net_with(tmp_path, {"x": (2, 3, 5, 6, 5)}, 'layer { name: "c" type: "Convolution" bottom: "x" top: "y" '
                                                   'convolution_param { num_output: 2 kernel_h: 3 kernel_w: 3 } }')


def test_clip_needs_both_bounds(tmp_path):
    with pytest.raises(ConfigError, match=r"layer 'clip'.*needs both min and max"):
        net_with(tmp_path, {"x": (2, 3)}, 'layer { name: "clip" type: "Clip" bottom: "x" top: "y" '
                                         'clip_param { min: 0 } }')


def test_spp_pyramid_too_high_for_the_input(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'spp'.*pyramid level 2: 4 bins do not fit a 5x5 input"):
        net_with(tmp_path, {"x": (1, 2, 5, 5)}, 'layer { name: "spp" type: "SPP" bottom: "x" top: "y" '
                                               'spp_param { pyramid_height: 3 } }')


def test_argmax_top_k_larger_than_the_axis(tmp_path):
    with pytest.raises(ShapeError, match=r"layer 'am'.*top_k \(4\) is larger than the 3 values"):
        net_with(tmp_path, {"x": (2, 3, 2)}, 'layer { name: "am" type: "ArgMax" bottom: "x" top: "y" '
                                            'argmax_param { top_k: 4 axis: 1 } }')


def test_embed_refuses_backward_into_its_indices(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('force_backward: true\n'
                    'layer { name: "idx" type: "Input" top: "idx" input_param { shape { dim: 3 } } }\n'
                    'layer { name: "emb" type: "Embed" bottom: "idx" top: "y" embed_param { num_output: 2 '
                    'input_dim: 4 } }\n')
    net = caffe.Net(str(path), caffe.TEST)
    net.forward()
    with pytest.raises(CaffeError, match=r"layer 'emb'.*cannot backpropagate to the indices.*propagate_down: false"):
        net.backward(y=np.ones((3, 2), np.float32))


def test_layer_type_list_is_caffes():
    """The 61 types BVLC Caffe registers (layer_factory.cpp and REGISTER_LAYER_CLASS)."""
    caffes = """AbsVal Accuracy ArgMax BNLL BatchNorm BatchReindex Bias Clip Concat ContrastiveLoss Convolution Crop
    Data Deconvolution Dropout DummyData ELU Eltwise Embed EuclideanLoss Exp Filter Flatten HDF5Data HDF5Output
    HingeLoss Im2col ImageData InfogainLoss InnerProduct Input LRN LSTM LSTMUnit Log MVN MemoryData
    MultinomialLogisticLoss PReLU Parameter Pooling Power Python RNN ReLU Reduction Reshape SPP Scale Sigmoid
    SigmoidCrossEntropyLoss Silence Slice Softmax SoftmaxWithLoss Split Swish TanH Threshold Tile WindowData""".split()
    assert len(caffes) == 61
    assert caffe.layer_type_list() == sorted(caffes + FORK_TYPES)


# The forks' types, by fork: SSD; Fast/Faster R-CNN; R-FCN; DeepLab/PSPNet;
# SegNet; ShuffleNet; SENet's Axpy; the MobileNet forks; OpenCV's own.
FORK_TYPES = """Normalize NormalizeBBox Permute PriorBox DetectionOutput
    ROIPooling SmoothL1Loss PSROIPooling Interp Upsample ShuffleChannel Axpy
    DepthwiseConvolution ConvolutionDepthwise ReLU6 Proposal MultiBoxLoss DetectionEvaluate AnnotatedData
    Identity Mish HardSwish HardSigmoid Softplus Sqrt Reciprocal Erf Gelu Celu Selu Sin Cos Tan Ceil Floor
    Round Sign""".split()

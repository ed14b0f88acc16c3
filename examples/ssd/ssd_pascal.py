"""SSD300 on VGG-16 for PASCAL VOC, written as the SSD fork's
examples/ssd/ssd_pascal.py writes it: the train, test and deploy nets and
the solver, built with caffe.model_libs. Run it with pycaffe_lite
(python examples/ssd/ssd_pascal.py OUT_DIR) or unchanged through
`python -m pycaffe_lite.run`; it writes the files and starts nothing.

The settings are the fork's published ones (300x300, 21 classes, six
sources from conv4_3 to conv9_2, the seven batch samplers, the photometric
distortions and expansion, MAX_NEGATIVE mining, 11-point mAP)."""
import math
import os
import sys

import caffe
from caffe import layers as L, params as P
from caffe.model_libs import (CreateAnnotatedDataLayer, CreateMultiBoxHead, ConvBNLayer, VGGNetBody,
                              make_if_not_exist)
from caffe.proto import caffe_pb2

RESIZE = 300
NUM_CLASSES = 21
SOURCES = ['conv4_3', 'fc7', 'conv6_2', 'conv7_2', 'conv8_2', 'conv9_2']
STEPS = [8, 16, 32, 64, 100, 300]
ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
NORMALIZATIONS = [20, -1, -1, -1, -1, -1]
PRIOR_VARIANCE = [0.1, 0.1, 0.2, 0.2]
NEG_POS_RATIO = 3.0
LOC_WEIGHT = (NEG_POS_RATIO + 1.0) / 4.0


def prior_sizes(min_dim=RESIZE, min_ratio=20, max_ratio=90, sources=len(SOURCES)):
    """SSD's scales: conv4_3 at 10%..20% of the image, the others spread
    evenly from min_ratio to max_ratio percent."""
    step = int(math.floor((max_ratio - min_ratio) / (sources - 2)))
    mins = [min_dim * 10 / 100.0] + [min_dim * r / 100.0 for r in range(min_ratio, max_ratio + 1, step)]
    maxs = [min_dim * 20 / 100.0] + [min_dim * (r + step) / 100.0 for r in range(min_ratio, max_ratio + 1, step)]
    return mins, maxs


def batch_samplers():
    """The original image once, then crops of 30-100% scale and aspect 1/2-2
    that overlap some object by at least 0.1 ... 0.9, or by at most 1."""
    crop = {'min_scale': 0.3, 'max_scale': 1.0, 'min_aspect_ratio': 0.5, 'max_aspect_ratio': 2.0}
    samplers = [{'sampler': {}, 'max_trials': 1, 'max_sample': 1}]
    for constraint in ([('min_jaccard_overlap', v) for v in (0.1, 0.3, 0.5, 0.7, 0.9)]
                       + [('max_jaccard_overlap', 1.0)]):
        samplers.append({'sampler': dict(crop), 'sample_constraint': dict([constraint]), 'max_trials': 50,
                         'max_sample': 1})
    return samplers


def transform(train):
    resize = {'prob': 1, 'resize_mode': P.Resize.WARP, 'height': RESIZE, 'width': RESIZE,
              'interp_mode': ([P.Resize.LINEAR, P.Resize.AREA, P.Resize.NEAREST, P.Resize.CUBIC, P.Resize.LANCZOS4]
                              if train else [P.Resize.LINEAR])}
    if not train:
        return {'mean_value': [104, 117, 123], 'resize_param': resize}
    return {'mirror': True, 'mean_value': [104, 117, 123], 'resize_param': resize,
            'distort_param': {'brightness_prob': 0.5, 'brightness_delta': 32, 'contrast_prob': 0.5,
                              'contrast_lower': 0.5, 'contrast_upper': 1.5, 'hue_prob': 0.5, 'hue_delta': 18,
                              'saturation_prob': 0.5, 'saturation_lower': 0.5, 'saturation_upper': 1.5,
                              'random_order_prob': 0.0},
            'expand_param': {'prob': 0.5, 'max_expand_ratio': 4.0},
            'emit_constraint': {'emit_type': caffe_pb2.EmitConstraint.CENTER}}


def add_extra_layers(net, use_batchnorm=False, lr_mult=1):
    """conv6_1/2 ... conv9_1/2 after the last layer: 1x1 squeezes and 3x3
    convolutions down to 1x1 (the fork's AddExtraLayers)."""
    from_layer = net.keys()[-1]
    for name, out, ks, pad, stride in (("conv6_1", 256, 1, 0, 1), ("conv6_2", 512, 3, 1, 2),
                                       ("conv7_1", 128, 1, 0, 1), ("conv7_2", 256, 3, 1, 2),
                                       ("conv8_1", 128, 1, 0, 1), ("conv8_2", 256, 3, 0, 1),
                                       ("conv9_1", 128, 1, 0, 1), ("conv9_2", 256, 3, 0, 1)):
        ConvBNLayer(net, from_layer, name, use_batchnorm, True, out, ks, pad, stride, lr_mult=lr_mult)
        from_layer = name
    return net


def body(net, use_batchnorm=False, lr_mult=1):
    VGGNetBody(net, from_layer='data', fully_conv=True, reduced=True, dilated=True, dropout=False)
    add_extra_layers(net, use_batchnorm, lr_mult=lr_mult)
    mins, maxs = prior_sizes()
    return CreateMultiBoxHead(net, data_layer='data', from_layers=SOURCES, use_batchnorm=use_batchnorm,
                              min_sizes=mins, max_sizes=maxs, aspect_ratios=ASPECT_RATIOS, steps=STEPS,
                              normalizations=NORMALIZATIONS, num_classes=NUM_CLASSES, share_location=True,
                              flip=True, clip=False, prior_variance=PRIOR_VARIANCE, kernel_size=3, pad=1,
                              lr_mult=lr_mult)


MULTIBOX_LOSS = {'loc_loss_type': P.MultiBoxLoss.SMOOTH_L1, 'conf_loss_type': P.MultiBoxLoss.SOFTMAX,
                 'loc_weight': LOC_WEIGHT, 'num_classes': NUM_CLASSES, 'share_location': True,
                 'match_type': P.MultiBoxLoss.PER_PREDICTION, 'overlap_threshold': 0.5,
                 'use_prior_for_matching': True, 'background_label_id': 0, 'use_difficult_gt': True,
                 'mining_type': P.MultiBoxLoss.MAX_NEGATIVE, 'neg_pos_ratio': NEG_POS_RATIO, 'neg_overlap': 0.5,
                 'code_type': P.PriorBox.CENTER_SIZE, 'ignore_cross_boundary_bbox': False}


def train_net(train_data, label_map_file, batch_size=32):
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(train_data, batch_size=batch_size, train=True, output_label=True,
                                                   label_map_file=label_map_file, transform_param=transform(True),
                                                   batch_sampler=batch_samplers())
    mbox = body(net)
    mbox.append(net.label)
    net["mbox_loss"] = L.MultiBoxLoss(*mbox, multibox_loss_param=MULTIBOX_LOSS,
                                      loss_param={'normalization': P.Loss.VALID},
                                      include=dict(phase=caffe_pb2.Phase.Value('TRAIN')),
                                      propagate_down=[True, True, False, False])
    return net


def test_net(test_data, label_map_file, name_size_file, output_dir, batch_size=8, num_test_image=4952):
    net = caffe.NetSpec()
    net.data, net.label = CreateAnnotatedDataLayer(test_data, batch_size=batch_size, train=False, output_label=True,
                                                   label_map_file=label_map_file, transform_param=transform(False))
    mbox = body(net)
    net["mbox_conf_reshape"] = L.Reshape(net["mbox_conf"], shape=dict(dim=[0, -1, NUM_CLASSES]))
    net["mbox_conf_softmax"] = L.Softmax(net["mbox_conf_reshape"], axis=2)
    net["mbox_conf_flatten"] = L.Flatten(net["mbox_conf_softmax"], axis=1)
    mbox[1] = net["mbox_conf_flatten"]
    net.detection_out = L.DetectionOutput(*mbox, detection_output_param={
        'num_classes': NUM_CLASSES, 'share_location': True, 'background_label_id': 0,
        'nms_param': {'nms_threshold': 0.45, 'top_k': 400},
        'save_output_param': {'output_directory': output_dir, 'output_name_prefix': "comp4_det_test_",
                              'output_format': "VOC", 'label_map_file': label_map_file,
                              'name_size_file': name_size_file, 'num_test_image': num_test_image},
        'keep_top_k': 200, 'confidence_threshold': 0.01, 'code_type': P.PriorBox.CENTER_SIZE},
        include=dict(phase=caffe_pb2.Phase.Value('TEST')))
    net.detection_eval = L.DetectionEvaluate(net.detection_out, net.label, detection_evaluate_param={
        'num_classes': NUM_CLASSES, 'background_label_id': 0, 'overlap_threshold': 0.5,
        'evaluate_difficult_gt': False, 'name_size_file': name_size_file},
        include=dict(phase=caffe_pb2.Phase.Value('TEST')))
    return net


def deploy_net(test, name):
    """The test net less its data layer and its evaluation, with an input."""
    param = test.to_proto()
    del param.layer[0]
    del param.layer[-1]
    param.name = name
    param.input.extend(['data'])
    param.input_shape.extend([caffe_pb2.BlobShape(dim=[1, 3, RESIZE, RESIZE])])
    return param


def solver(train_file, test_file, snapshot_prefix, base_lr=0.00004 * 25.0 / LOC_WEIGHT, test_iter=619):
    return caffe_pb2.SolverParameter(
        train_net=train_file, test_net=[test_file], snapshot_prefix=snapshot_prefix, base_lr=base_lr,
        weight_decay=0.0005, lr_policy="multistep", stepvalue=[80000, 100000, 120000], gamma=0.1, momentum=0.9,
        iter_size=1, max_iter=120000, snapshot=80000, display=10, average_loss=10, type="SGD",
        solver_mode=P.Solver.CPU, device_id=0, debug_info=False, snapshot_after_train=True,
        test_iter=[test_iter], test_interval=10000, eval_type="detection", ap_version="11point",
        test_initialization=False)


def main(out_dir, data_root="examples/VOC0712", label_map_file="data/VOC0712/labelmap_voc.prototxt",
         name_size_file="data/VOC0712/test_name_size.txt"):
    model = "VGG_VOC0712_SSD_{0}x{0}".format(RESIZE)
    make_if_not_exist(out_dir)
    files = {k: os.path.join(out_dir, k + ".prototxt") for k in ("train", "test", "deploy", "solver")}
    with open(files["train"], "w") as f:
        print('name: "{}_train"'.format(model), file=f)
        print(train_net(data_root + "/VOC0712_trainval_lmdb", label_map_file).to_proto(), file=f)
    test = test_net(data_root + "/VOC0712_test_lmdb", label_map_file, name_size_file,
                    os.path.join(out_dir, "results"))
    with open(files["test"], "w") as f:
        print('name: "{}_test"'.format(model), file=f)
        print(test.to_proto(), file=f)
    with open(files["deploy"], "w") as f:
        print(deploy_net(test, model + "_deploy"), file=f)
    with open(files["solver"], "w") as f:
        print(solver(files["train"], files["test"], os.path.join(out_dir, model)), file=f)
    return files


if __name__ == "__main__":
    for path in main(sys.argv[1] if len(sys.argv) > 1 else "models/VGGNet/VOC0712/SSD_300x300").values():
        print(path)

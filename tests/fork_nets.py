"""Deploy nets with the architectures of models published with Caffe's forks
(MobileNet-SSD, ShuffleNet v1 and v2, SE-ResNet, Fast R-CNN, a PSPNet-style
pyramid with Interp, a SegNet-style encoder-decoder with Upsample), built
with NetSpec: the layer mix, parameters and shapes are theirs (read from
their published prototxts), the text and the weights are ours. PSPNet and
SegNet publish their own BN layer, which is not Caffe's; BatchNorm + Scale
stand in for it."""
from pycaffe_lite import layers as L, params as P
from zoo_nets import Builder

MAX, AVE = P.Pooling.MAX, P.Pooling.AVE
CENTER_SIZE = P.PriorBox.CENTER_SIZE


class ForkBuilder(Builder):
    def unit(self, name, bottom, nout, ks, stride=1, group=1, relu=True, kind="Convolution"):
        """Convolution (no bias) + BatchNorm + Scale [+ ReLU], the forks' building block."""
        conv = self.add(name, getattr(L, kind)(bottom, convolution_param=dict(
            num_output=nout, kernel_size=ks, stride=stride, pad=ks // 2, group=group, bias_term=False,
            weight_filler=dict(type="msra"))))
        return self.bn_scale(name, conv, relu)


def mobilenet_ssd(size=300, classes=21):
    """chuanqi305's MobileNet-SSD deploy net: MobileNet v1 with six SSD heads."""
    b = ForkBuilder((1, 3, size, size))
    x = b.unit("conv0", b.n.data, 32, 3, 2)
    channels, feats = 32, {}
    for i, (nout, stride) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] +
                                       [(512, 1)] * 5 + [(1024, 2), (1024, 1)]):
        x = b.unit("conv%d/dw" % (i + 1), x, channels, 3, stride, group=channels)
        x = b.unit("conv%d" % (i + 1), x, nout, 1)
        channels = nout
        feats[i + 1] = x
    sources = [("conv11", feats[11]), ("conv13", feats[13])]
    for k, (mid, out) in enumerate([(256, 512), (128, 256), (128, 256), (64, 128)]):
        name = "conv%d" % (14 + k)
        x = b.unit(name + "_1", x, mid, 1)
        x = b.unit(name + "_2", x, out, 3, 2)
        sources.append((name + "_2", x))
    heads = [(60, None, [2]), (105, 150, [2, 3]), (150, 195, [2, 3]), (195, 240, [2, 3]), (240, 285, [2, 3]),
             (285, 300, [2, 3])]
    locs, confs, priors = [], [], []
    for (name, src), (lo, hi, ratios) in zip(sources, heads):
        n_priors = (2 if hi else 1) + 2 * len(ratios)
        for kind, width, out in (("loc", 4, locs), ("conf", classes, confs)):
            y = b.add(name + "_mbox_" + kind, L.Convolution(src, num_output=n_priors * width, kernel_size=1,
                                                            weight_filler=dict(type="msra"),
                                                            bias_filler=dict(type="constant", value=0)))
            y = b.add(name + "_mbox_%s_perm" % kind, L.Permute(y, order=[0, 2, 3, 1]))
            out.append(b.add(name + "_mbox_%s_flat" % kind, L.Flatten(y, axis=1)))
        box = dict(min_size=float(lo), aspect_ratio=[float(r) for r in ratios], flip=True, clip=False,
                   variance=[0.1, 0.1, 0.2, 0.2], offset=0.5)
        if hi:
            box["max_size"] = float(hi)
        priors.append(b.add(name + "_mbox_priorbox", L.PriorBox(src, b.n.data, prior_box_param=box)))
    loc = b.add("mbox_loc", L.Concat(*locs, axis=1))
    conf = b.add("mbox_conf", L.Concat(*confs, axis=1))
    prior = b.add("mbox_priorbox", L.Concat(*priors, axis=2))
    conf = b.add("mbox_conf_reshape", L.Reshape(conf, shape=dict(dim=[0, -1, classes])))
    conf = b.add("mbox_conf_softmax", L.Softmax(conf, axis=2))
    conf = b.add("mbox_conf_flatten", L.Flatten(conf, axis=1))
    b.add("detection_out", L.DetectionOutput(loc, conf, prior, detection_output_param=dict(
        num_classes=classes, share_location=True, background_label_id=0,
        nms_param=dict(nms_threshold=0.45, top_k=100), code_type=CENTER_SIZE, keep_top_k=100,
        confidence_threshold=0.25)))
    return b.n.to_proto()


def shufflenet_v1(size=224, groups=3):
    """farmingyard's ShuffleNet 1x (g = 3): grouped 1x1 convolutions, a
    channel shuffle, a ConvolutionDepthwise 3x3, Eltwise or (downsampling)
    Concat with an average-pooled shortcut."""
    b = ForkBuilder((1, 3, size, size))
    x = b.unit("conv1", b.n.data, 24, 3, 2)
    x = b.pool("pool1", x, MAX, kernel_size=3, stride=2)
    channels = 24
    for stage, (width, repeats) in enumerate([(240, 4), (480, 8), (960, 4)]):
        for i in range(repeats):
            name = "resx%d_%d" % (stage + 2, i + 1)
            down = i == 0
            out = width - channels if down else width
            g1 = 1 if stage == 0 and down else groups
            y = b.unit(name + "_conv1", x, width // 4, 1, group=g1)
            y = b.add(name + "_shuffle", L.ShuffleChannel(y, group=groups))
            y = b.unit(name + "_conv2", y, width // 4, 3, 2 if down else 1, relu=False,
                       kind="ConvolutionDepthwise")
            y = b.unit(name + "_conv3", y, out, 1, group=groups, relu=False)
            if down:
                short = b.pool(name + "_match", x, AVE, kernel_size=3, stride=2)
                x = b.add(name + "_concat", L.Concat(short, y))
            else:
                x = b.add(name + "_elewise", L.Eltwise(x, y))
            x = b.add(name + "_relu", L.ReLU(x, in_place=True))
            channels = width
    x = b.pool("pool_ave", x, AVE, global_pooling=True)
    return b.softmax(b.add("fc1000", L.Convolution(x, num_output=1000, kernel_size=1,
                                                   weight_filler=dict(type="msra"))))


def shufflenet_v2(size=224):
    """ShuffleNet v2 1x as the same repository publishes it: a Slice channel
    split, ConvolutionDepthwise, Concat and ShuffleChannel (group 2)."""
    b = ForkBuilder((1, 3, size, size))
    x = b.unit("conv1", b.n.data, 24, 3, 2)
    x = b.pool("pool1", x, MAX, kernel_size=3, stride=2)
    channels = 24
    for stage, (width, repeats) in enumerate([(116, 4), (232, 8), (464, 4)]):
        half = width // 2
        for i in range(repeats):
            name = "branch%d_%d" % (stage + 1, i + 1)
            if i == 0:
                left = b.unit(name + "_1_conv1", x, channels, 3, 2, relu=False, kind="ConvolutionDepthwise")
                left = b.unit(name + "_1_conv2", left, half, 1)
                right = b.unit(name + "_2_conv1", x, half, 1)
            else:
                left, right = L.Slice(x, ntop=2, slice_point=[half], axis=1)
                b.add(name + "_1", left)
                b.add(name + "_2", right)
                right = b.unit(name + "_2_conv1", right, half, 1)
            right = b.unit(name + "_2_conv2", right, half, 3, 2 if i == 0 else 1, relu=False,
                           kind="ConvolutionDepthwise")
            right = b.unit(name + "_2_conv3", right, half, 1)
            x = b.add(name + "_concat", L.Concat(left, right))
            x = b.add(name + "_shuffle", L.ShuffleChannel(x, group=2))
            channels = width
    x = b.unit("conv5", x, 1024, 1)
    x = b.pool("pool_ave", x, AVE, global_pooling=True)
    return b.softmax(b.add("fc1000", L.Convolution(x, num_output=1000, kernel_size=1,
                                                   weight_filler=dict(type="msra"))))


def se_resnet(size=224, blocks=(3, 4, 6, 3)):
    """hujie-frank's SE-ResNet-50: each bottleneck's squeeze-excitation
    (global pooling, 1x1 down + ReLU, 1x1 up + Sigmoid) joins the shortcut
    through Axpy (scale, residual, shortcut)."""
    b = ForkBuilder((1, 3, size, size))
    x = b.unit("conv1/7x7_s2", b.n.data, 64, 7, 2)
    x = b.pool("pool1/3x3_s2", x, MAX, kernel_size=3, stride=2)
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for i in range(count):
            name = "conv%d_%d" % (stage + 2, i + 1)
            stride = 2 if i == 0 and stage > 0 else 1
            short = b.unit(name + "_1x1_proj", x, 4 * width, 1, stride, relu=False) if i == 0 else x
            y = b.unit(name + "_1x1_reduce", x, width, 1, stride)
            y = b.unit(name + "_3x3", y, width, 3)
            y = b.unit(name + "_1x1_increase", y, 4 * width, 1, relu=False)
            se = b.pool(name + "_global_pool", y, AVE, global_pooling=True)
            se = b.conv(name + "_1x1_down", se, width // 4, 1)
            se = b.conv(name + "_1x1_up", se, 4 * width, 1, relu=False)
            se = b.add(name + "_prob", L.Sigmoid(se, in_place=True))
            x = b.add(name, L.Axpy(se, y, short))
            x = b.add(name + "/relu", L.ReLU(x, in_place=True))
    x = b.pool("pool5/7x7_s1", x, AVE, kernel_size=7, stride=1)
    return b.softmax(b.add("classifier", L.InnerProduct(x, num_output=1000, weight_filler=dict(type="msra"))))


def fast_rcnn(size=227, rois=5, classes=21):
    """Fast R-CNN's CaffeNet test net: conv1-5 over the image, ROIPooling
    6x6 at 1/16 of each region, fc6-fc7, class scores and box deltas."""
    b = Builder((1, 3, size, size))
    b.n.rois = L.Input(shape=dict(dim=[rois, 5]))
    x = b.conv("conv1", b.n.data, 96, 11, 4)
    x = b.add("norm1", L.LRN(b.pool("pool1", x, MAX, kernel_size=3, stride=2), local_size=5, alpha=1e-4,
                              beta=0.75))
    x = b.conv("conv2", x, 256, 5, pad=2, group=2)
    x = b.add("norm2", L.LRN(b.pool("pool2", x, MAX, kernel_size=3, stride=2), local_size=5, alpha=1e-4,
                              beta=0.75))
    x = b.conv("conv3", x, 384, 3, pad=1)
    x = b.conv("conv4", x, 384, 3, pad=1, group=2)
    x = b.conv("conv5", x, 256, 3, pad=1, group=2)
    x = b.add("roi_pool5", L.ROIPooling(x, b.n.rois, pooled_w=6, pooled_h=6, spatial_scale=0.0625))
    for name in ("fc6", "fc7"):
        x = b.add(name, L.InnerProduct(x, num_output=4096, weight_filler=dict(type="gaussian", std=0.005)))
        x = b.add("relu" + name[2:], L.ReLU(x, in_place=True))
        x = b.add("drop" + name[2:], L.Dropout(x, dropout_ratio=0.5, in_place=True))
    score = b.add("cls_score", L.InnerProduct(x, num_output=classes, weight_filler=dict(type="gaussian", std=0.01)))
    b.add("bbox_pred", L.InnerProduct(x, num_output=4 * classes, weight_filler=dict(type="gaussian", std=0.001)))
    b.add("cls_prob", L.Softmax(score))
    return b.n.to_proto()


def pspnet_style(size=97, classes=21):
    """PSPNet's pyramid pooling head on a small dilated trunk: pooled
    branches at bins 1, 2, 3, 6, each 1x1 conv + BN, resized back by Interp
    (height/width), concatenated, then the classifier, zoomed by Interp."""
    b = ForkBuilder((1, 3, size, size))
    x = b.unit("conv1_1_3x3_s2", b.n.data, 32, 3, 2)
    x = b.unit("conv1_2_3x3", x, 32, 3)
    x = b.pool("pool1_3x3_s2", x, MAX, kernel_size=3, stride=2, pad=1)
    x = b.unit("conv2_3x3", x, 64, 3, 2)
    trunk = x = b.add("conv5_3", L.Convolution(x, num_output=64, kernel_size=3, pad=2, dilation=2,
                                               weight_filler=dict(type="msra")))
    side = 13                     # the trunk's output size for size 97
    branches = [trunk]
    for bins in (1, 2, 3, 6):
        k = side // bins
        name = "conv5_3_pool%d" % bins
        y = b.pool(name, trunk, AVE, kernel_size=k, stride=k)
        y = b.unit(name + "_conv", y, 16, 1)
        branches.append(b.add(name + "_interp", L.Interp(y, height=side, width=side)))
    x = b.add("conv5_3_concat", L.Concat(*branches))
    x = b.unit("conv5_4", x, 32, 3)
    x = b.add("conv6", L.Convolution(x, num_output=classes, kernel_size=1, weight_filler=dict(type="msra")))
    b.add("conv6_interp", L.Interp(x, zoom_factor=8))
    return b.n.to_proto()


def segnet_style(size=(48, 64), classes=11):
    """SegNet's encoder-decoder: MAX pooling with its mask as a second top,
    Upsample by that mask (scale 2, or upsample_h/w where pooling rounded
    up), convolution + BN + ReLU on both sides."""
    b = ForkBuilder((1, 3) + size)
    x = b.n.data
    masks = []
    h, w = size
    for k, width in enumerate((16, 32, 32)):     # the decoder below mirrors these widths
        x = b.unit("conv%d_1" % (k + 1), x, width, 3)
        pooled, mask = L.Pooling(x, ntop=2, pool=MAX, kernel_size=2, stride=2)
        x = b.add("pool%d" % (k + 1), pooled)
        b.add("pool%d_mask" % (k + 1), mask)
        masks.append((x, mask, (h, w)))
        h, w = (h + 1) // 2, (w + 1) // 2
    widths = (16, 32, 32)
    for k in reversed(range(3)):
        _, mask, (uh, uw) = masks[k]
        up = dict(scale=2) if uh % 2 == 0 and uw % 2 == 0 else dict(scale=2, upsample_h=uh, upsample_w=uw)
        x = b.add("upsample%d" % (k + 1), L.Upsample(x, mask, **up))
        x = b.unit("conv%d_1_D" % (k + 1), x, widths[k - 1] if k else classes, 3, relu=k > 0)
    b.add("prob", L.Softmax(x))
    return b.n.to_proto()


NETS = {"mobilenet_ssd": mobilenet_ssd, "shufflenet_v1": shufflenet_v1, "shufflenet_v2": shufflenet_v2,
        "se_resnet": se_resnet, "fast_rcnn": fast_rcnn, "pspnet_style": pspnet_style,
        "segnet_style": segnet_style}

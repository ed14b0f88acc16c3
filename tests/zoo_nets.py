"""Deploy nets with the architectures of widely used model-zoo models
(GoogLeNet, ResNet-50, SqueezeNet 1.1, MobileNet v1 layer for layer; an FCN
head, NIN, an Inception-v3 block),
built with NetSpec: the layer mix and the shapes are theirs, the text and the
weights are ours."""
import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P

MAX, AVE = P.Pooling.MAX, P.Pooling.AVE


class Builder:
    """A NetSpec that names each layer as it is added and chains in-place
    layers, so every layer can be looked up by its name afterwards."""

    def __init__(self, shape):
        self.n = caffe.NetSpec()
        self.n.data = L.Input(shape=dict(dim=list(shape)))

    def add(self, name, top):
        setattr(self.n, name, top)
        return top

    def conv(self, name, bottom, nout, ks, stride=1, pad=0, group=1, bias=True, relu=True):
        extra = {} if bias else dict(bias_term=False)
        top = self.add(name, L.Convolution(bottom, num_output=nout, kernel_size=ks, stride=stride, pad=pad,
                                           group=group, weight_filler=dict(type="xavier"),
                                           bias_filler=dict(type="constant", value=0.1), **extra))
        return self.add(name + "_relu", L.ReLU(top, in_place=True)) if relu else top

    def bn_scale(self, name, bottom, relu=True):
        top = self.add(name + "_bn", L.BatchNorm(bottom, use_global_stats=True, in_place=True))
        top = self.add(name + "_scale", L.Scale(top, bias_term=True, in_place=True))
        return self.add(name + "_relu", L.ReLU(top, in_place=True)) if relu else top

    def pool(self, name, bottom, method, **kw):
        return self.add(name, L.Pooling(bottom, pool=method, **kw))

    def softmax(self, bottom):
        self.add("prob", L.Softmax(bottom))
        return self.n.to_proto()


def googlenet(size=224):
    b = Builder((1, 3, size, size))
    x = b.conv("conv1", b.n.data, 64, 7, 2, 3)
    x = b.pool("pool1", x, MAX, kernel_size=3, stride=2)
    x = b.add("norm1", L.LRN(x, local_size=5, alpha=1e-4, beta=0.75))
    x = b.conv("conv2_reduce", x, 64, 1)
    x = b.conv("conv2", x, 192, 3, pad=1)
    x = b.add("norm2", L.LRN(x, local_size=5, alpha=1e-4, beta=0.75))
    x = b.pool("pool2", x, MAX, kernel_size=3, stride=2)
    inception = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), None,
                 ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
                 ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
                 ("4e", 256, 160, 320, 32, 128, 128), None,
                 ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)]
    pools = iter(("pool3", "pool4"))
    for cfg in inception:
        if cfg is None:
            x = b.pool(next(pools), x, MAX, kernel_size=3, stride=2)
            continue
        name, c1, r3, c3, r5, c5, proj = cfg
        one = b.conv(name + "_1x1", x, c1, 1)
        three = b.conv(name + "_3x3", b.conv(name + "_3x3_reduce", x, r3, 1), c3, 3, pad=1)
        five = b.conv(name + "_5x5", b.conv(name + "_5x5_reduce", x, r5, 1), c5, 5, pad=2)
        pooled = b.pool(name + "_pool", x, MAX, kernel_size=3, stride=1, pad=1)
        x = b.add(name + "_output", L.Concat(one, three, five, b.conv(name + "_pool_proj", pooled, proj, 1)))
    x = b.pool("pool5", x, AVE, kernel_size=7, stride=1)
    x = b.add("drop", L.Dropout(x, dropout_ratio=0.4, in_place=True))
    return b.softmax(b.add("classifier", L.InnerProduct(x, num_output=1000, weight_filler=dict(type="xavier"))))


def resnet50(size=224, blocks=(3, 4, 6, 3)):
    b = Builder((1, 3, size, size))
    x = b.bn_scale("conv1", b.conv("conv1", b.n.data, 64, 7, 2, 3, relu=False))
    x = b.pool("pool1", x, MAX, kernel_size=3, stride=2)
    for stage, (count, width) in enumerate(zip(blocks, (64, 128, 256, 512))):
        for i in range(count):
            name = "res%d%s" % (stage + 2, "abcdef"[i])
            stride = 2 if i == 0 and stage > 0 else 1

            def unit(suffix, bottom, nout, ks, s=1, pad=0, relu=True):
                conv = b.conv(name + suffix, bottom, nout, ks, s, pad, bias=False, relu=False)
                return b.bn_scale(name + suffix, conv, relu)
            shortcut = unit("_branch1", x, 4 * width, 1, stride, relu=False) if i == 0 else x
            y = unit("_branch2a", x, width, 1, stride)
            y = unit("_branch2b", y, width, 3, pad=1)
            y = unit("_branch2c", y, 4 * width, 1, relu=False)
            x = b.add(name + "_relu", L.ReLU(b.add(name, L.Eltwise(shortcut, y)), in_place=True))
    x = b.pool("pool5", x, AVE, kernel_size=7, stride=1)
    return b.softmax(b.add("fc1000", L.InnerProduct(x, num_output=1000, weight_filler=dict(type="xavier"))))


def squeezenet(size=227):
    b = Builder((1, 3, size, size))
    x = b.pool("pool1", b.conv("conv1", b.n.data, 64, 3, 2), MAX, kernel_size=3, stride=2)
    fires = [(16, 64), (16, 64), None, (32, 128), (32, 128), None, (48, 192), (48, 192), (64, 256), (64, 256)]
    for k, cfg in enumerate(fires):
        if cfg is None:
            x = b.pool("pool%d" % k, x, MAX, kernel_size=3, stride=2)
            continue
        squeeze, expand = cfg
        name = "fire%d" % (k + 2)
        s = b.conv(name + "_squeeze1x1", x, squeeze, 1)
        x = b.add(name + "_concat", L.Concat(b.conv(name + "_expand1x1", s, expand, 1),
                                             b.conv(name + "_expand3x3", s, expand, 3, pad=1)))
    x = b.add("drop9", L.Dropout(x, dropout_ratio=0.5, in_place=True))
    x = b.conv("conv10", x, 1000, 1)
    return b.softmax(b.pool("pool10", x, AVE, global_pooling=True))


def mobilenet(size=224):
    b = Builder((1, 3, size, size))

    def unit(name, bottom, nout, ks, stride, group):
        return b.bn_scale(name, b.conv(name, bottom, nout, ks, stride, ks // 2, group, bias=False, relu=False))
    x = unit("conv1", b.n.data, 32, 3, 2, 1)
    channels = 32
    for i, (nout, stride) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] +
                                       [(512, 1)] * 5 + [(1024, 2), (1024, 1)]):
        x = unit("conv%d_dw" % (i + 2), x, channels, 3, stride, channels)     # depthwise
        x = unit("conv%d_sep" % (i + 2), x, nout, 1, 1, 1)
        channels = nout
    x = b.pool("pool6", x, AVE, global_pooling=True)
    return b.softmax(b.conv("fc7", x, 1000, 1, relu=False))


def fcn(size=64):
    """FCN-32s's shape in small: pad 100 on the first convolution, a learned
    upsampling Deconvolution, and a Crop back onto the input."""
    b = Builder((1, 3, size, size))
    x = b.pool("pool1", b.conv("conv1", b.n.data, 16, 3, pad=100), MAX, kernel_size=2, stride=2)
    x = b.pool("pool2", b.conv("conv2", x, 32, 3, pad=1), MAX, kernel_size=2, stride=2)
    x = b.add("drop6", L.Dropout(b.conv("fc6", x, 64, 7), dropout_ratio=0.5, in_place=True))
    x = b.conv("score_fr", x, 21, 1, relu=False)
    x = b.add("upscore", L.Deconvolution(x, convolution_param=dict(
        num_output=21, kernel_size=8, stride=4, bias_term=False, weight_filler=dict(type="gaussian", std=0.1))))
    b.add("score", L.Crop(x, b.n.data, axis=2, offset=19))
    return b.n.to_proto()


def nin(size=32):
    b = Builder((2, 3, size, size))
    x = b.conv("cccp1", b.conv("conv1", b.n.data, 32, 5, pad=2), 32, 1)
    x = b.add("drop1", L.Dropout(b.pool("pool1", x, MAX, kernel_size=3, stride=2), in_place=True))
    x = b.pool("pool2", b.conv("conv2", x, 64, 5, pad=2), AVE, kernel_size=3, stride=2)
    x = b.conv("cccp2", x, 10, 1)
    return b.softmax(b.pool("pool3", x, AVE, global_pooling=True))


def inception_v3_block(size=35):
    """Inception-v3's factorized convolutions: 1x7 and 7x1 kernels with
    kernel_h/kernel_w and pad_h/pad_w, average pooling with padding."""
    b = Builder((1, 32, size, size))

    def asym(name, bottom, nout, kh, kw):
        conv = b.add(name, L.Convolution(bottom, num_output=nout, kernel_h=kh, kernel_w=kw, pad_h=kh // 2,
                                         pad_w=kw // 2, weight_filler=dict(type="xavier"),
                                         bias_filler=dict(type="constant", value=0.1)))
        return b.add(name + "_relu", L.ReLU(conv, in_place=True))
    x = b.n.data
    one = b.conv("b1_1x1", x, 48, 1)
    seven = asym("b2_7x1", asym("b2_1x7", b.conv("b2_reduce", x, 24, 1), 24, 1, 7), 32, 7, 1)
    pooled = b.pool("b3_pool", x, AVE, kernel_size=3, stride=1, pad=1)
    x = b.add("mixed", L.Concat(one, seven, b.conv("b3_proj", pooled, 16, 1)))
    x = b.pool("reduce", b.conv("reduce_3x3", x, 64, 3, stride=2), MAX, kernel_size=3, stride=2)
    return b.softmax(b.add("fc", L.InnerProduct(x, num_output=10, weight_filler=dict(type="xavier"))))


def fcn8s_head(size=48):
    """FCN-8s's skip fusion: a per-class bilinear Deconvolution (group equal
    to the classes), Crop with an offset onto a pooled layer, Eltwise SUM."""
    b = Builder((1, 3, size, size))
    x = b.conv("conv1", b.n.data, 16, 3, pad=1)
    pool1 = b.pool("pool1", x, MAX, kernel_size=2, stride=2)
    pool2 = b.pool("pool2", b.conv("conv2", pool1, 32, 3, pad=1), MAX, kernel_size=2, stride=2)
    score2 = b.conv("score2", pool2, 5, 1, relu=False)
    up = b.add("upscore2", L.Deconvolution(score2, convolution_param=dict(
        num_output=5, group=5, kernel_size=4, stride=2, bias_term=False, weight_filler=dict(type="bilinear"))))
    score1 = b.conv("score1", pool1, 5, 1, relu=False)
    crop = b.add("upscore2c", L.Crop(up, score1, axis=2, offset=1))
    fused = b.add("fuse", L.Eltwise(score1, crop, operation=P.Eltwise.SUM))
    full = b.add("upscore", L.Deconvolution(fused, convolution_param=dict(
        num_output=5, group=5, kernel_size=4, stride=2, bias_term=False, weight_filler=dict(type="bilinear"))))
    b.add("score", L.Crop(full, b.n.data, axis=2, offset=1))
    return b.n.to_proto()


NETS = dict(googlenet=googlenet, resnet50=resnet50, squeezenet=squeezenet, mobilenet=mobilenet, fcn=fcn, nin=nin,
            inception_v3_block=inception_v3_block, fcn8s_head=fcn8s_head)

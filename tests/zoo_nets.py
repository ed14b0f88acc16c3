"""Deploy nets with the architectures of widely used model-zoo models
(GoogLeNet, ResNet-50, SqueezeNet 1.1, MobileNet v1, an FCN head, NIN),
built with NetSpec: the layer mix and the shapes are theirs, the text and the
weights are ours."""
import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P

def _input(n, shape):
    n.data = L.Input(shape=dict(dim=list(shape)))

def conv(bottom, nout, ks, stride=1, pad=0, group=1, bias=True, **kw):
    extra = {} if bias else dict(bias_term=False)
    return L.Convolution(bottom, num_output=nout, kernel_size=ks, stride=stride, pad=pad, group=group,
                         weight_filler=dict(type="xavier"), bias_filler=dict(type="constant", value=0.1), **extra, **kw)

def conv_relu(bottom, nout, ks, stride=1, pad=0, group=1):
    c = conv(bottom, nout, ks, stride, pad, group)
    r = L.ReLU(c, in_place=True)
    return c, r

def googlenet(size=224):
    n = caffe.NetSpec(); _input(n, (1, 3, size, size))
    n.conv1, n.relu1 = conv_relu(n.data, 64, 7, 2, 3)
    n.pool1 = L.Pooling(n.relu1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2r, n.relu2r = conv_relu(n.norm1, 64, 1)
    n.conv2, n.relu2 = conv_relu(n.relu2r, 192, 3, pad=1)
    n.norm2 = L.LRN(n.relu2, local_size=5, alpha=1e-4, beta=0.75)
    n.pool2 = L.Pooling(n.norm2, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool2
    cfg = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64), "pool",
           ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64), ("4e", 256, 160, 320, 32, 128, 128), "pool",
           ("5a", 256, 160, 320, 32, 128, 128), ("5b", 384, 192, 384, 48, 128, 128)]
    for k, c in enumerate(cfg):
        if c == "pool":
            x = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2); setattr(n, "pool%d" % k, x); continue
        name, a, br, b, cr, cc, d = c
        b1, _ = conv_relu(x, a, 1); setattr(n, name + "_1x1", b1); setattr(n, name + "_r1", _); b1 = _
        b2r, _ = conv_relu(x, br, 1); setattr(n, name + "_3x3r", b2r); setattr(n, name + "_r2", _)
        b2, _2 = conv_relu(_, b, 3, pad=1); setattr(n, name + "_3x3", b2); setattr(n, name + "_r3", _2); b2 = _2
        b3r, _ = conv_relu(x, cr, 1); setattr(n, name + "_5x5r", b3r); setattr(n, name + "_r4", _)
        b3, _2 = conv_relu(_, cc, 5, pad=2); setattr(n, name + "_5x5", b3); setattr(n, name + "_r5", _2); b3 = _2
        p = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1); setattr(n, name + "_pool", p)
        b4, _ = conv_relu(p, d, 1); setattr(n, name + "_pproj", b4); setattr(n, name + "_r6", _); b4 = _
        x = L.Concat(b1, b2, b3, b4); setattr(n, name + "_out", x)
    n.pool5 = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.drop = L.Dropout(n.pool5, dropout_ratio=0.4, in_place=True)
    n.fc = L.InnerProduct(n.drop, num_output=1000, weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.fc)
    return n.to_proto()

def resnet(size=224, blocks=(3, 4, 6, 3)):
    n = caffe.NetSpec(); _input(n, (1, 3, size, size))
    def bn_scale(x, name, relu=True):
        bn = L.BatchNorm(x, use_global_stats=True, in_place=True); setattr(n, "bn_" + name, bn)
        sc = L.Scale(bn, bias_term=True, in_place=True); setattr(n, "scale_" + name, sc)
        if relu:
            sc = L.ReLU(sc, in_place=True); setattr(n, name + "_relu", sc)
        return sc
    n.conv1 = conv(n.data, 64, 7, 2, 3, bias=True); c1 = bn_scale(n.conv1, "conv1")
    n.pool1 = L.Pooling(c1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool1
    widths = [64, 128, 256, 512]
    for s, (nb, w) in enumerate(zip(blocks, widths)):
        for bi in range(nb):
            name = "res%d%s" % (s + 2, chr(97 + bi))
            stride = 2 if (bi == 0 and s > 0) else 1
            if bi == 0:
                br1 = conv(x, 4 * w, 1, stride, bias=False); setattr(n, name + "_branch1", br1); br1 = bn_scale(br1, name + "_branch1", relu=False)
            else:
                br1 = x
            a = conv(x, w, 1, stride, bias=False); setattr(n, name + "_2a", a); a = bn_scale(a, name + "_2a")
            b = conv(a, w, 3, 1, 1, bias=False); setattr(n, name + "_2b", b); b = bn_scale(b, name + "_2b")
            c = conv(b, 4 * w, 1, bias=False); setattr(n, name + "_2c", c); c = bn_scale(c, name + "_2c", relu=False)
            x = L.Eltwise(br1, c); setattr(n, name, x)
            x = L.ReLU(x, in_place=True); setattr(n, name + "_relu", x)
    n.pool5 = L.Pooling(x, pool=P.Pooling.AVE, kernel_size=7, stride=1)
    n.fc1000 = L.InnerProduct(n.pool5, num_output=1000, weight_filler=dict(type="xavier"))
    n.prob = L.Softmax(n.fc1000)
    return n.to_proto()

def squeezenet(size=227):
    n = caffe.NetSpec(); _input(n, (1, 3, size, size))
    n.conv1, n.relu_conv1 = conv_relu(n.data, 64, 3, 2)
    n.pool1 = L.Pooling(n.relu_conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    x = n.pool1
    for i, se in enumerate([(16, 64), (16, 64), "pool", (32, 128), (32, 128), "pool", (48, 192), (48, 192), (64, 256), (64, 256)]):
        if se == "pool":
            x = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=2); setattr(n, "pool%d" % i, x); continue
        f = "fire%d" % i
        s, e = se
        sq, r = conv_relu(x, s, 1); setattr(n, f + "_squeeze", sq); setattr(n, f + "_rs", r)
        e1, r1 = conv_relu(r, e, 1); setattr(n, f + "_e1", e1); setattr(n, f + "_re1", r1)
        e3, r3 = conv_relu(r, e, 3, pad=1); setattr(n, f + "_e3", e3); setattr(n, f + "_re3", r3)
        x = L.Concat(r1, r3); setattr(n, f + "_concat", x)
    n.drop9 = L.Dropout(x, dropout_ratio=0.5, in_place=True)
    n.conv10, n.relu10 = conv_relu(n.drop9, 1000, 1)
    n.pool10 = L.Pooling(n.relu10, pool=P.Pooling.AVE, global_pooling=True)
    n.prob = L.Softmax(n.pool10)
    return n.to_proto()

def mobilenet(size=224):
    n = caffe.NetSpec(); _input(n, (1, 3, size, size))
    def cbr(x, nout, ks, stride, group, name):
        c = conv(x, nout, ks, stride, ks // 2, group, bias=False); setattr(n, name, c)
        b = L.BatchNorm(c, use_global_stats=True, in_place=True); setattr(n, name + "_bn", b)
        b = L.Scale(b, bias_term=True, in_place=True); setattr(n, name + "_scale", b)
        b = L.ReLU(b, in_place=True); setattr(n, name + "_relu", b)
        return b
    x = cbr(n.data, 32, 3, 2, 1, "conv1")
    cin = 32
    for i, (cout, s) in enumerate([(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (1024, 2), (1024, 1)]):
        x = cbr(x, cin, 3, s, cin, "conv%d_dw" % (i + 2))
        x = cbr(x, cout, 1, 1, 1, "conv%d_sep" % (i + 2))
        cin = cout
    n.pool6 = L.Pooling(x, pool=P.Pooling.AVE, global_pooling=True)
    n.fc7 = conv(n.pool6, 1000, 1)
    n.prob = L.Softmax(n.fc7)
    return n.to_proto()

def fcn(size=64):
    n = caffe.NetSpec(); _input(n, (1, 3, size, size))
    n.conv1_1, n.relu1_1 = conv_relu(n.data, 16, 3, pad=100)
    n.pool1 = L.Pooling(n.relu1_1, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.conv2, n.relu2 = conv_relu(n.pool1, 32, 3, pad=1)
    n.pool2 = L.Pooling(n.relu2, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.fc6, n.relu6 = conv_relu(n.pool2, 64, 7)
    n.drop6 = L.Dropout(n.relu6, dropout_ratio=0.5, in_place=True)
    n.score_fr = conv(n.drop6, 21, 1)
    n.upscore = L.Deconvolution(n.score_fr, convolution_param=dict(num_output=21, kernel_size=8, stride=4, bias_term=False,
                                weight_filler=dict(type="gaussian", std=0.1)), param=[dict(lr_mult=0)])
    n.score = L.Crop(n.upscore, n.data, axis=2, offset=19)
    return n.to_proto()

def nin(size=32):
    n = caffe.NetSpec(); _input(n, (2, 3, size, size))
    n.conv1, n.r1 = conv_relu(n.data, 32, 5, pad=2)
    n.cccp1, n.r2 = conv_relu(n.r1, 32, 1)
    n.pool1 = L.Pooling(n.r2, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.drop = L.Dropout(n.pool1, in_place=True)
    n.conv2, n.r3 = conv_relu(n.drop, 64, 5, pad=2)
    n.pool2 = L.Pooling(n.r3, pool=P.Pooling.AVE, kernel_size=3, stride=2)
    n.cccp2, n.r4 = conv_relu(n.pool2, 10, 1)
    n.pool3 = L.Pooling(n.r4, pool=P.Pooling.AVE, global_pooling=True)
    n.prob = L.Softmax(n.pool3)
    return n.to_proto()

NETS = dict(googlenet=googlenet, resnet50=resnet, squeezenet=squeezenet, mobilenet=mobilenet, fcn=fcn, nin=nin)

"""The SSD fork's net builders (its python/caffe/model_libs.py), on NetSpec:
the same functions, arguments, layer names and parameters, so that a script
in the style of examples/ssd/ssd_pascal.py writes the same prototxt with us
as with the fork. MobileNetBody is ours, in the layout of the MobileNet-SSD
models (conv0, conv1/dw, conv1, ... conv13)."""
import os

from .net_spec import layers as L, params as P
from .proto import caffe_pb2


def check_if_exist(path):
    return os.path.exists(path)


def make_if_not_exist(path):
    os.makedirs(path, exist_ok=True)


def UnpackVariable(var, num):
    """var as a list of num values: itself when it is one, else repeated."""
    if isinstance(var, list) and len(var) == num:
        return var
    if isinstance(var, list):
        assert len(var) == 1, "expected 1 or %d values, got %d" % (num, len(var))
        return var * num
    return [var] * num


def _frozen(lr_mult, n):
    return [dict(lr_mult=lr_mult, decay_mult=0) for _ in range(n)]


def ConvBNLayer(net, from_layer, out_layer, use_bn, use_relu, num_output, kernel_size, pad, stride, dilation=1,
                use_scale=True, lr_mult=1, conv_prefix='', conv_postfix='', bn_prefix='', bn_postfix='_bn',
                scale_prefix='', scale_postfix='_scale', bias_prefix='', bias_postfix='_bias', group=1,
                **bn_params):
    """Convolution, then (use_bn) BatchNorm and Scale (or Bias) in place, then
    (use_relu) ReLU in place. Without batch norm the convolution has a bias
    (lr 2x, no decay) and xavier weights; with it no bias and gaussian 0.01.
    group is ours (depthwise convolutions); the fork's callers leave it 1."""
    if use_bn:
        conv_kwargs = {'param': [dict(lr_mult=lr_mult, decay_mult=1)],
                       'weight_filler': dict(type='gaussian', std=0.01), 'bias_term': False}
        eps = bn_params.get('eps', 0.001)
        if bn_params.get('use_global_stats', False):
            # statistics fixed, and so are the scale and bias after them
            bn_kwargs = {'param': _frozen(0, 3), 'eps': eps, 'use_global_stats': True}
            affine_lr = 0
        else:
            bn_kwargs = {'param': _frozen(0, 3), 'eps': eps,
                         'moving_average_fraction': bn_params.get('moving_average_fraction', 0.999)}
            affine_lr = lr_mult
    else:
        conv_kwargs = {'param': [dict(lr_mult=lr_mult, decay_mult=1), dict(lr_mult=2 * lr_mult, decay_mult=0)],
                       'weight_filler': dict(type='xavier'), 'bias_filler': dict(type='constant', value=0)}
    if group != 1:
        conv_kwargs['group'] = group
    conv_name = '{}{}{}'.format(conv_prefix, out_layer, conv_postfix)
    kernel_h, kernel_w = UnpackVariable(kernel_size, 2)
    pad_h, pad_w = UnpackVariable(pad, 2)
    stride_h, stride_w = UnpackVariable(stride, 2)
    if kernel_h == kernel_w:
        net[conv_name] = L.Convolution(net[from_layer], num_output=num_output, kernel_size=kernel_h, pad=pad_h,
                                       stride=stride_h, **conv_kwargs)
    else:
        net[conv_name] = L.Convolution(net[from_layer], num_output=num_output, kernel_h=kernel_h, kernel_w=kernel_w,
                                       pad_h=pad_h, pad_w=pad_w, stride_h=stride_h, stride_w=stride_w,
                                       **conv_kwargs)
    if dilation > 1:
        net.update(conv_name, {'dilation': dilation})
    if use_bn:
        bn_name = '{}{}{}'.format(bn_prefix, out_layer, bn_postfix)
        net[bn_name] = L.BatchNorm(net[conv_name], in_place=True, **bn_kwargs)
        if use_scale:
            net['{}{}{}'.format(scale_prefix, out_layer, scale_postfix)] = L.Scale(
                net[bn_name], in_place=True, bias_term=True, param=_frozen(affine_lr, 2),
                filler=dict(type='constant', value=1.0), bias_filler=dict(type='constant', value=0.0))
        else:
            net['{}{}{}'.format(bias_prefix, out_layer, bias_postfix)] = L.Bias(
                net[bn_name], in_place=True, param=_frozen(affine_lr, 1), filler=dict(type='constant', value=0.0))
    if use_relu:
        net['{}_relu'.format(conv_name)] = L.ReLU(net[conv_name], in_place=True)


def ResBody(net, from_layer, block_name, out2a, out2b, out2c, stride, use_branch1, dilation=1, **bn_param):
    """A ResNet bottleneck named as MSRA's: res<block>_branch1/2a/2b/2c with
    bn<block>_..., scale<block>_..., then res<block> and res<block>_relu."""
    names = dict(conv_prefix='res{}_'.format(block_name), conv_postfix='', bn_prefix='bn{}_'.format(block_name),
                 bn_postfix='', scale_prefix='scale{}_'.format(block_name), scale_postfix='', use_scale=True)
    prefix = names['conv_prefix']
    if use_branch1:
        ConvBNLayer(net, from_layer, 'branch1', use_bn=True, use_relu=False, num_output=out2c, kernel_size=1, pad=0,
                    stride=stride, **dict(names, **bn_param))
        branch1 = prefix + 'branch1'
    else:
        branch1 = from_layer
    ConvBNLayer(net, from_layer, 'branch2a', use_bn=True, use_relu=True, num_output=out2a, kernel_size=1, pad=0,
                stride=stride, **dict(names, **bn_param))
    pad = (3 + (dilation - 1) * 2 - 1) // 2
    ConvBNLayer(net, prefix + 'branch2a', 'branch2b', use_bn=True, use_relu=True, num_output=out2b, kernel_size=3,
                pad=pad, stride=1, dilation=dilation, **dict(names, **bn_param))
    ConvBNLayer(net, prefix + 'branch2b', 'branch2c', use_bn=True, use_relu=False, num_output=out2c, kernel_size=1,
                pad=0, stride=1, **dict(names, **bn_param))
    res_name = 'res{}'.format(block_name)
    net[res_name] = L.Eltwise(net[branch1], net[prefix + 'branch2c'])
    net['{}_relu'.format(res_name)] = L.ReLU(net[res_name], in_place=True)


def InceptionTower(net, from_layer, tower_name, layer_params, **bn_param):
    """Layers one after another, named <tower>/<name>: Pooling for names with
    'pool', else ConvBNLayer (BatchNorm + Bias, ReLU)."""
    for param in layer_params:
        param = dict(param)
        tower_layer = '{}/{}'.format(tower_name, param.pop('name'))
        if 'pool' in tower_layer:
            net[tower_layer] = L.Pooling(net[from_layer], **param)
        else:
            param.update(bn_param)
            ConvBNLayer(net, from_layer, tower_layer, use_bn=True, use_relu=True, use_scale=False, **param)
        from_layer = tower_layer
    return net[from_layer]


def CreateAnnotatedDataLayer(source, batch_size=32, backend=P.Data.LMDB, output_label=True, train=True,
                             label_map_file='', anno_type=None, transform_param={}, batch_sampler=[{}]):
    """The AnnotatedData layer named 'data' for the TRAIN or TEST phase."""
    phase = caffe_pb2.Phase.Value('TRAIN' if train else 'TEST')
    annotated = {'label_map_file': label_map_file, 'batch_sampler': batch_sampler}
    if anno_type is not None:
        annotated['anno_type'] = anno_type
    return L.AnnotatedData(name="data", annotated_data_param=annotated,
                           data_param=dict(batch_size=batch_size, backend=backend, source=source),
                           ntop=2 if output_label else 1, include=dict(phase=phase), transform_param=transform_param)


_PLAIN_CONV = {'param': [dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
               'weight_filler': dict(type='xavier'), 'bias_filler': dict(type='constant', value=0)}


def _freeze(net, freeze_layers, kwargs):
    frozen = dict(kwargs, param=[dict(lr_mult=0, decay_mult=0), dict(lr_mult=0, decay_mult=0)])
    names = net.keys()
    for name in freeze_layers:
        if name in names:
            net.update(name, frozen)


def _fully_conv(net, bottom, dilation, dilated, reduced, dropout, kwargs):
    """fc6/fc7 as convolutions (SSD's reduced VGG: 1024 channels, dilated 3x3)."""
    if reduced:
        dilation, kernel_size, num_output = dilation * (6 if dilated else 3), 3, 1024
    else:
        dilation, kernel_size, num_output = dilation * (2 if dilated else 1), 7, 4096
    pad = (kernel_size + (dilation - 1) * (kernel_size - 1) - 1) // 2
    net.fc6 = L.Convolution(bottom, num_output=num_output, pad=pad, kernel_size=kernel_size, dilation=dilation,
                            **kwargs)
    net.relu6 = L.ReLU(net.fc6, in_place=True)
    if dropout:
        net.drop6 = L.Dropout(net.relu6, dropout_ratio=0.5, in_place=True)
    net.fc7 = L.Convolution(net.relu6, num_output=1024 if reduced else 4096, kernel_size=1, **kwargs)
    net.relu7 = L.ReLU(net.fc7, in_place=True)
    if dropout:
        net.drop7 = L.Dropout(net.relu7, dropout_ratio=0.5, in_place=True)


def VGGNetBody(net, from_layer, need_fc=True, fully_conv=False, reduced=False, dilated=False, nopool=False,
               dropout=True, freeze_layers=[], dilate_pool4=False):
    """VGG-16 after `from_layer`, as SSD uses it (fully_conv, reduced,
    dilated: fc6 a dilated 3x3 convolution of 1024 channels)."""
    kwargs = dict(_PLAIN_CONV)
    assert from_layer in net.keys()
    blocks = [(1, 64, 2), (2, 128, 2), (3, 256, 3), (4, 512, 3)]
    x = net[from_layer]
    dilation = 1
    for b, width, count in blocks:
        for i in range(1, count + 1):
            conv = 'conv{}_{}'.format(b, i)
            net[conv] = L.Convolution(x, num_output=width, pad=1, kernel_size=3, **kwargs)
            x = net['relu{}_{}'.format(b, i)] = L.ReLU(net[conv], in_place=True)
        if nopool:
            name = 'conv{}_{}'.format(b, count + 1)
            net[name] = L.Convolution(x, num_output=width, pad=1, kernel_size=3, stride=2, **kwargs)
        elif b == 4 and dilate_pool4:
            name = 'pool4'
            net[name] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
            dilation = 2
        else:
            name = 'pool{}'.format(b)
            net[name] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        x = net[name]
    pad = (3 + (dilation - 1) * 2 - 1) // 2
    for i in range(1, 4):
        conv = 'conv5_{}'.format(i)
        net[conv] = L.Convolution(x, num_output=512, pad=pad, kernel_size=3, dilation=dilation, **kwargs)
        x = net['relu5_{}'.format(i)] = L.ReLU(net[conv], in_place=True)
    if need_fc:
        if nopool:
            name = 'conv5_4'
            net[name] = L.Convolution(x, num_output=512, pad=1, kernel_size=3, stride=1 if dilated else 2, **kwargs)
        elif dilated:
            name = 'pool5'
            net[name] = L.Pooling(x, pool=P.Pooling.MAX, pad=1, kernel_size=3, stride=1)
        else:
            name = 'pool5'
            net[name] = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=2, stride=2)
        if fully_conv:
            _fully_conv(net, net[name], dilation, dilated, reduced, dropout, kwargs)
        else:
            net.fc6 = L.InnerProduct(net.pool5, num_output=4096)
            net.relu6 = L.ReLU(net.fc6, in_place=True)
            if dropout:
                net.drop6 = L.Dropout(net.relu6, dropout_ratio=0.5, in_place=True)
            net.fc7 = L.InnerProduct(net.relu6, num_output=4096)
            net.relu7 = L.ReLU(net.fc7, in_place=True)
            if dropout:
                net.drop7 = L.Dropout(net.relu7, dropout_ratio=0.5, in_place=True)
    _freeze(net, freeze_layers, kwargs)
    return net


def _resnet_body(net, from_layer, blocks3, blocks4, use_pool5, use_dilation_conv5, bn_param):
    ConvBNLayer(net, from_layer, 'conv1', use_bn=True, use_relu=True, num_output=64, kernel_size=7, pad=3, stride=2,
                conv_prefix='', conv_postfix='', bn_prefix='bn_', bn_postfix='', scale_prefix='scale_',
                scale_postfix='', **bn_param)
    net.pool1 = L.Pooling(net.conv1, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    ResBody(net, 'pool1', '2a', out2a=64, out2b=64, out2c=256, stride=1, use_branch1=True, **bn_param)
    ResBody(net, 'res2a', '2b', out2a=64, out2b=64, out2c=256, stride=1, use_branch1=False, **bn_param)
    ResBody(net, 'res2b', '2c', out2a=64, out2b=64, out2c=256, stride=1, use_branch1=False, **bn_param)
    from_layer = 'res2c'
    for stage, width, count in (('3', 128, blocks3), ('4', 256, blocks4)):
        ResBody(net, from_layer, stage + 'a', out2a=width, out2b=width, out2c=4 * width, stride=2, use_branch1=True,
                **bn_param)
        from_layer = 'res{}a'.format(stage)
        for i in range(1, count + 1):
            block = '{}b{}'.format(stage, i)
            ResBody(net, from_layer, block, out2a=width, out2b=width, out2c=4 * width, stride=1, use_branch1=False,
                    **bn_param)
            from_layer = 'res' + block
    stride, dilation = (1, 2) if use_dilation_conv5 else (2, 1)
    ResBody(net, from_layer, '5a', out2a=512, out2b=512, out2c=2048, stride=stride, use_branch1=True,
            dilation=dilation, **bn_param)
    ResBody(net, 'res5a', '5b', out2a=512, out2b=512, out2c=2048, stride=1, use_branch1=False, dilation=dilation,
            **bn_param)
    ResBody(net, 'res5b', '5c', out2a=512, out2b=512, out2c=2048, stride=1, use_branch1=False, dilation=dilation,
            **bn_param)
    if use_pool5:
        net.pool5 = L.Pooling(net.res5c, pool=P.Pooling.AVE, global_pooling=True)
    return net


def ResNet101Body(net, from_layer, use_pool5=True, use_dilation_conv5=False, **bn_param):
    return _resnet_body(net, from_layer, 3, 22, use_pool5, use_dilation_conv5, bn_param)


def ResNet152Body(net, from_layer, use_pool5=True, use_dilation_conv5=False, **bn_param):
    return _resnet_body(net, from_layer, 7, 35, use_pool5, use_dilation_conv5, bn_param)


def MobileNetBody(net, from_layer, width=1.0, use_bn=True, **bn_param):
    """MobileNet v1 after `from_layer`, named as the MobileNet-SSD models:
    conv0 (3x3, stride 2), then conv<i>/dw (depthwise 3x3) and conv<i>
    (pointwise) for i = 1..13, each with /bn, /scale and _relu."""
    def unit(bottom, name, num_output, kernel_size, stride, group=1):
        ConvBNLayer(net, bottom, name, use_bn=use_bn, use_relu=True, num_output=num_output, kernel_size=kernel_size,
                    pad=kernel_size // 2, stride=stride, group=group, bn_postfix='/bn', scale_postfix='/scale',
                    **bn_param)
        return name
    channels = int(32 * width)
    x = unit(from_layer, 'conv0', channels, 3, 2)
    plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for i, (out, stride) in enumerate(plan, 1):
        x = unit(x, 'conv{}/dw'.format(i), channels, 3, stride, group=channels)
        channels = int(out * width)
        x = unit(x, 'conv{}'.format(i), channels, 1, 1)
    return net


def CreateMultiBoxHead(net, data_layer="data", num_classes=[], from_layers=[], use_objectness=False,
                       normalizations=[], use_batchnorm=True, lr_mult=1, use_scale=True, min_sizes=[], max_sizes=[],
                       prior_variance=[0.1], aspect_ratios=[], steps=[], img_height=0, img_width=0,
                       share_location=True, flip=True, clip=True, offset=0.5, inter_layer_depth=[], kernel_size=1,
                       pad=0, conf_postfix='', loc_postfix='', **bn_param):
    """SSD's prediction heads: per source layer an optional Normalize and
    intermediate convolution, loc and conf convolutions (permuted to NHWC
    and flattened) and a PriorBox; then the Concat of each kind. Returns
    [mbox_loc, mbox_conf, mbox_priorbox(, mbox_objectness)]."""
    assert num_classes, "must provide num_classes"
    assert num_classes > 0, "num_classes must be positive number"
    for name, values in (("normalizations", normalizations), ("max_sizes", max_sizes),
                         ("aspect_ratios", aspect_ratios), ("steps", steps), ("inter_layer_depth", inter_layer_depth)):
        if values:
            assert len(from_layers) == len(values), "from_layers and %s should have same length" % name
    assert len(from_layers) == len(min_sizes), "from_layers and min_sizes should have same length"
    assert data_layer in net.keys(), "data_layer is not in net's layers"

    def listed(v):
        return v if isinstance(v, list) else [v]

    def head(from_layer, kind, outputs, postfix, out):
        name = "{}_mbox_{}{}".format(from_layer, kind, postfix)
        ConvBNLayer(net, from_layer, name, use_bn=use_batchnorm, use_relu=False, lr_mult=lr_mult,
                    num_output=outputs, kernel_size=kernel_size, pad=pad, stride=1, **bn_param)
        net[name + "_perm"] = L.Permute(net[name], order=[0, 2, 3, 1])
        net[name + "_flat"] = L.Flatten(net[name + "_perm"], axis=1)
        out.append(net[name + "_flat"])

    priors, locs, confs, objectness = [], [], [], []
    for i, from_layer in enumerate(from_layers):
        if normalizations and normalizations[i] != -1:
            norm_name = "{}_norm".format(from_layer)
            net[norm_name] = L.Normalize(net[from_layer], scale_filler=dict(type="constant", value=normalizations[i]),
                                         across_spatial=False, channel_shared=False)
            from_layer = norm_name
        if inter_layer_depth and inter_layer_depth[i] > 0:
            inter_name = "{}_inter".format(from_layer)
            ConvBNLayer(net, from_layer, inter_name, use_bn=use_batchnorm, use_relu=True, lr_mult=lr_mult,
                        num_output=inter_layer_depth[i], kernel_size=3, pad=1, stride=1, **bn_param)
            from_layer = inter_name
        min_size = listed(min_sizes[i])
        aspect_ratio = listed(aspect_ratios[i]) if len(aspect_ratios) > i else []
        max_size = listed(max_sizes[i]) if len(max_sizes) > i else []
        if max_size:
            assert len(max_size) == len(min_size), "max_size and min_size should have same length."
        per_location = ((2 if max_size else 1) + len(aspect_ratio)) * len(min_size)
        if flip:
            per_location += len(aspect_ratio) * len(min_size)
        step = steps[i] if len(steps) > i else []
        head(from_layer, "loc", per_location * 4 * (1 if share_location else num_classes), loc_postfix, locs)
        head(from_layer, "conf", per_location * num_classes, conf_postfix, confs)
        name = "{}_mbox_priorbox".format(from_layer)
        net[name] = L.PriorBox(net[from_layer], net[data_layer], min_size=min_size, clip=clip,
                               variance=prior_variance, offset=offset)
        if max_size:
            net.update(name, {'max_size': max_size})
        if aspect_ratio:
            net.update(name, {'aspect_ratio': aspect_ratio, 'flip': flip})
        if step:
            net.update(name, {'step': step})
        if img_height != 0 and img_width != 0:
            net.update(name, {'img_size': img_height} if img_height == img_width
                       else {'img_h': img_height, 'img_w': img_width})
        priors.append(net[name])
        if use_objectness:
            head(from_layer, "objectness", per_location * 2, '', objectness)
    net["mbox_loc"] = L.Concat(*locs, axis=1)
    net["mbox_conf"] = L.Concat(*confs, axis=1)
    net["mbox_priorbox"] = L.Concat(*priors, axis=2)
    out = [net["mbox_loc"], net["mbox_conf"], net["mbox_priorbox"]]
    if use_objectness:
        net["mbox_objectness"] = L.Concat(*objectness, axis=1)
        out.append(net["mbox_objectness"])
    return out

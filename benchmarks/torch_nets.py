"""The same net in PyTorch, for side-by-side timings: a torch.nn.Module built
from a pycaffe_lite Net (its layers' geometry and its weights), written the
way a PyTorch user would (BatchNorm followed by Scale becomes one affine
BatchNorm2d). Covers the layer types of tests/zoo_nets.py and CaffeNet."""
import numpy as np


def to_torch(net, torch):
    nn = torch.nn
    F = torch.nn.functional

    class CaffeModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.steps = []          # (fn, bottoms, tops)
            self.mods = nn.ModuleList()
            self.inputs = list(net.inputs)
            self.outputs = list(net.outputs)

        def forward(self, *xs):
            blobs = dict(zip(self.inputs, xs))
            for fn, bottoms, tops in self.steps:
                out = fn(*[blobs[b] for b in bottoms])
                if len(tops) == 1:
                    blobs[tops[0]] = out
                else:
                    for t, o in zip(tops, out):
                        blobs[t] = o
            return [blobs[o] for o in self.outputs]

    m = CaffeModule()
    names = net._layer_names
    params = net._param.layer
    skip = set()

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))

    for i, (name, lp, layer) in enumerate(zip(names, params, net.layers)):
        if i in skip or lp.type in ("Input",):
            continue
        b, t = list(lp.bottom), list(lp.top)
        kind = lp.type
        if kind in ("Convolution", "Deconvolution"):
            if kind == "Convolution":
                conv = nn.Conv2d(layer.channels, layer.num_output, layer.kernel, layer.stride, layer.pad,
                                 layer.dilation, layer.group, bias=layer.bias_term)
            else:
                conv = nn.ConvTranspose2d(layer.channels, layer.num_output, layer.kernel, layer.stride, layer.pad,
                                          groups=layer.group, bias=layer.bias_term, dilation=layer.dilation)
            with torch.no_grad():
                conv.weight.copy_(tensor(layer.blobs[0].data))
                if layer.bias_term:
                    conv.bias.copy_(tensor(layer.blobs[1].data))
            m.mods.append(conv)
            m.steps.append((conv, b, t))
        elif kind == "InnerProduct":
            lin = nn.Linear(layer.k, layer.n_out, bias=len(layer.blobs) > 1)
            with torch.no_grad():
                w = layer.blobs[0].data
                lin.weight.copy_(tensor(w.T if layer.transpose else w))
                if len(layer.blobs) > 1:
                    lin.bias.copy_(tensor(layer.blobs[1].data))
            m.mods.append(lin)
            m.steps.append((lambda x, lin=lin: lin(torch.flatten(x, 1)), b, t))
        elif kind == "ReLU":
            slope = lp.relu_param.negative_slope
            m.steps.append(((lambda x: F.relu(x, inplace=True)) if not slope else
                            (lambda x, s=slope: F.leaky_relu(x, s, inplace=True)), b, t))
        elif kind == "Pooling":
            p = lp.pooling_param
            ceil = p.round_mode == 0
            if p.pool == 0:
                m.steps.append((lambda x, l=layer, c=ceil: F.max_pool2d(x, l.kernel, l.stride, l.pad, ceil_mode=c),
                                b, t))
            else:
                m.steps.append((lambda x, l=layer, c=ceil: F.avg_pool2d(x, l.kernel, l.stride, l.pad, ceil_mode=c),
                                b, t))
        elif kind == "LRN":
            p = lp.lrn_param
            m.steps.append((lambda x, p=p: F.local_response_norm(x, p.local_size, p.alpha, p.beta, p.k), b, t))
        elif kind == "Concat":
            m.steps.append((lambda *xs, a=lp.concat_param.axis: torch.cat(xs, a), b, t))
        elif kind == "Eltwise":
            m.steps.append((lambda *xs: sum(xs[1:], xs[0]), b, t))
        elif kind == "BatchNorm":
            c = layer.blobs[0].shape[0]
            nxt = params[i + 1] if i + 1 < len(params) else None
            affine = nxt is not None and nxt.type == "Scale" and list(nxt.bottom) == t
            bn = nn.BatchNorm2d(c, eps=layer.eps, momentum=1 - layer.maf, affine=affine)
            f = float(layer.blobs[2].data[0])
            f = 0.0 if f == 0 else 1.0 / f
            with torch.no_grad():
                bn.running_mean.copy_(tensor(layer.blobs[0].data * f))
                bn.running_var.copy_(tensor(layer.blobs[1].data * f))
                if affine:
                    scale = net.layers[i + 1]
                    bn.weight.copy_(tensor(scale.blobs[0].data))
                    bn.bias.copy_(tensor(scale.blobs[1].data) if len(scale.blobs) > 1 else torch.zeros(c))
                    skip.add(i + 1)
            m.mods.append(bn)
            m.steps.append((bn, b, t))
        elif kind == "Scale":
            w = tensor(layer.blobs[0].data).reshape(1, -1, 1, 1)
            bias = tensor(layer.blobs[1].data).reshape(1, -1, 1, 1) if len(layer.blobs) > 1 else 0
            m.steps.append((lambda x, w=w, bias=bias: x * w + bias, b, t))
        elif kind in ("Dropout",):
            drop = nn.Dropout(lp.dropout_param.dropout_ratio)
            m.mods.append(drop)
            m.steps.append((drop, b, t))
        elif kind == "Split":
            m.steps.append((lambda x, n=len(t): [x] * n, b, t))
        elif kind == "Softmax":
            m.steps.append((lambda x: F.softmax(x, 1), b, t))
        elif kind == "SoftmaxWithLoss":
            m.steps.append((lambda x, y: F.cross_entropy(x, y.long()), b, t))
        else:
            raise NotImplementedError("no PyTorch twin for layer type %s" % kind)
    return m

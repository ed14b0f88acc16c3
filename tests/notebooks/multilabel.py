# pascal-multilabel-with-datalayer: a Python data layer feeding the solver
# (a small net and synthetic images stand in for CaffeNet and PASCAL).
import os.path as osp
import numpy as np
import pycaffe_lite as caffe
from pycaffe_lite import layers as L, params as P

workdir = './multilabel_workdir'
import os
os.makedirs(workdir, exist_ok=True)


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group,
                         weight_filler=dict(type='xavier'))
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout):
    fc = L.InnerProduct(bottom, num_output=nout, weight_filler=dict(type='xavier'))
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def smallnet_multilabel(data_layer_params, datalayer):
    # setup the python data layer
    n = caffe.NetSpec()
    n.data, n.label = L.Python(module='synthetic_multilabel_datalayers', layer=datalayer,
                               ntop=2, param_str=str(data_layer_params))
    # the net itself
    n.conv1, n.relu1 = conv_relu(n.data, 3, 16, pad=1)
    n.pool1 = max_pool(n.relu1, 2, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool1, 64)
    n.score = L.InnerProduct(n.relu6, num_output=4, weight_filler=dict(type='xavier'))
    n.loss = L.SigmoidCrossEntropyLoss(n.score, n.label)
    return str(n.to_proto())


with open(osp.join(workdir, 'trainnet.prototxt'), 'w') as f:
    data_layer_params = dict(batch_size=32, split='train', seed=3)
    f.write(smallnet_multilabel(data_layer_params, 'SyntheticMultilabelDataLayerSync'))
with open(osp.join(workdir, 'valnet.prototxt'), 'w') as f:
    data_layer_params = dict(batch_size=32, split='val', seed=3)
    f.write(smallnet_multilabel(data_layer_params, 'SyntheticMultilabelDataLayerSync'))
with open(osp.join(workdir, 'solver.prototxt'), 'w') as f:
    f.write('train_net: "%s"\ntest_net: "%s"\ntest_iter: 1\ntest_interval: 1000000\nbase_lr: 0.05\n'
            'lr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.0005\ndisplay: 50\nmax_iter: 10000\n'
            'snapshot: 0\nsolver_mode: CPU\nrandom_seed: 1\ntest_initialization: false\n'
            % (osp.join(workdir, 'trainnet.prototxt'), osp.join(workdir, 'valnet.prototxt')))

caffe.set_mode_cpu()
solver = caffe.SGDSolver(osp.join(workdir, 'solver.prototxt'))
solver.test_nets[0].share_with(solver.net)
solver.step(1)
image_index = 0
gtlist = solver.net.blobs['label'].data[image_index, ...].astype(int)
print('Ground truth: ', [i for i, v in enumerate(gtlist) if v])


def hamming_distance(gt, est):
    return sum([1 for (g, e) in zip(gt, est) if g == e]) / float(len(gt))


def check_accuracy(net, num_batches, batch_size=32):
    acc = 0.0
    for t in range(num_batches):
        net.forward()
        gts = net.blobs['label'].data
        ests = net.blobs['score'].data > 0
        for gt, est in zip(gts, ests):  # for each ground truth and estimated label vector
            acc += hamming_distance(gt, est)
    return acc / (num_batches * batch_size)


print('before', '{0:.4f}'.format(check_accuracy(solver.test_nets[0], 5)))
for itt in range(3):
    solver.step(50)
    print('itt:{:3d}'.format((itt + 1) * 50), 'accuracy:{0:.4f}'.format(check_accuracy(solver.test_nets[0], 5)))

# 02-fine-tuning, with stand-ins: a random-weight CaffeNet for the ImageNet
# weights, generated images in five "styles", small batches and few steps.
import os
import sys
import tempfile
import numpy as np
import pycaffe_lite as caffe
from pycaffe_lite import layers as L
from pycaffe_lite import params as P
from pycaffe_lite.proto import caffe_pb2

weights, mean_file, train_list, test_list = sys.argv[1:5]
NUM_STYLE_LABELS = 5
BATCH = 4
caffe.set_mode_cpu()

weight_param = dict(lr_mult=1, decay_mult=1)
bias_param = dict(lr_mult=2, decay_mult=0)
learned_param = [weight_param, bias_param]
frozen_param = [dict(lr_mult=0)] * 2


def conv_relu(bottom, ks, nout, stride=1, pad=0, group=1, param=learned_param,
              weight_filler=dict(type='gaussian', std=0.01), bias_filler=dict(type='constant', value=0.1)):
    conv = L.Convolution(bottom, kernel_size=ks, stride=stride, num_output=nout, pad=pad, group=group,
                         param=param, weight_filler=weight_filler, bias_filler=bias_filler)
    return conv, L.ReLU(conv, in_place=True)


def fc_relu(bottom, nout, param=learned_param, weight_filler=dict(type='gaussian', std=0.005),
            bias_filler=dict(type='constant', value=0.1)):
    fc = L.InnerProduct(bottom, num_output=nout, param=param, weight_filler=weight_filler, bias_filler=bias_filler)
    return fc, L.ReLU(fc, in_place=True)


def max_pool(bottom, ks, stride=1):
    return L.Pooling(bottom, pool=P.Pooling.MAX, kernel_size=ks, stride=stride)


def caffenet(data, label=None, train=True, num_classes=1000, classifier_name='fc8', learn_all=False):
    """Returns a NetSpec specifying CaffeNet, following the original proto text
       specification (./models/bvlc_reference_caffenet/train_val.prototxt)."""
    n = caffe.NetSpec()
    n.data = data
    param = learned_param if learn_all else frozen_param
    n.conv1, n.relu1 = conv_relu(n.data, 11, 96, stride=4, param=param)
    n.pool1 = max_pool(n.relu1, 3, stride=2)
    n.norm1 = L.LRN(n.pool1, local_size=5, alpha=1e-4, beta=0.75)
    n.conv2, n.relu2 = conv_relu(n.norm1, 5, 256, pad=2, group=2, param=param)
    n.pool2 = max_pool(n.relu2, 3, stride=2)
    n.norm2 = L.LRN(n.pool2, local_size=5, alpha=1e-4, beta=0.75)
    n.conv3, n.relu3 = conv_relu(n.norm2, 3, 384, pad=1, param=param)
    n.conv4, n.relu4 = conv_relu(n.relu3, 3, 384, pad=1, group=2, param=param)
    n.conv5, n.relu5 = conv_relu(n.relu4, 3, 256, pad=1, group=2, param=param)
    n.pool5 = max_pool(n.relu5, 3, stride=2)
    n.fc6, n.relu6 = fc_relu(n.pool5, 4096, param=param)
    if train:
        n.drop6 = fc7input = L.Dropout(n.relu6, in_place=True)
    else:
        fc7input = n.relu6
    n.fc7, n.relu7 = fc_relu(fc7input, 4096, param=param)
    if train:
        n.drop7 = fc8input = L.Dropout(n.relu7, in_place=True)
    else:
        fc8input = n.relu7
    # always learn fc8 (param=learned_param)
    fc8 = L.InnerProduct(fc8input, num_output=num_classes, param=learned_param)
    # give fc8 the name specified by argument `classifier_name`
    n.__setattr__(classifier_name, fc8)
    if not train:
        n.probs = L.Softmax(fc8)
    if label is not None:
        n.label = label
        n.loss = L.SoftmaxWithLoss(fc8, n.label)
        n.acc = L.Accuracy(fc8, n.label)
    # write the net to a temporary file and return its filename
    with tempfile.NamedTemporaryFile(mode='w', delete=False) as f:
        f.write(str(n.to_proto()))
        return f.name


dummy_data = L.DummyData(shape=dict(dim=[1, 3, 227, 227]))
imagenet_net_filename = caffenet(data=dummy_data, train=False)
imagenet_net = caffe.Net(imagenet_net_filename, weights, caffe.TEST)


def style_net(train=True, learn_all=False, subset=None):
    if subset is None:
        subset = 'train' if train else 'test'
    source = train_list if subset == 'train' else test_list
    transform_param = dict(mirror=train, crop_size=227, mean_file=mean_file)
    style_data, style_label = L.ImageData(transform_param=transform_param, source=source, batch_size=BATCH,
                                          new_height=256, new_width=256, ntop=2)
    return caffenet(data=style_data, label=style_label, train=train, num_classes=NUM_STYLE_LABELS,
                    classifier_name='fc8_flickr', learn_all=learn_all)


untrained_style_net = caffe.Net(style_net(train=False, subset='train'), weights, caffe.TEST)
untrained_style_net.forward()
style_data_batch = untrained_style_net.blobs['data'].data.copy()
style_label_batch = np.array(untrained_style_net.blobs['label'].data, dtype=np.int32)
print('batch', style_data_batch.shape, style_label_batch.tolist())
# The copied layers hold the ImageNet weights; the new classifier does not exist there.
print('conv1 copied', int(np.array_equal(untrained_style_net.params['conv1'][0].data,
                                         imagenet_net.params['conv1'][0].data)))


def solver(train_net_path, test_net_path=None, base_lr=0.001):
    s = caffe_pb2.SolverParameter()
    # Specify locations of the train and (maybe) test networks.
    s.train_net = train_net_path
    if test_net_path is not None:
        s.test_net.append(test_net_path)
        s.test_interval = 1000  # Test after every 1000 training iterations.
        s.test_iter.append(100)  # Test on 100 batches each time we test.
    s.iter_size = 1
    s.max_iter = 100000     # # of times to update the net (training iterations)
    s.type = 'SGD'
    s.base_lr = base_lr
    s.lr_policy = 'step'
    s.gamma = 0.1
    s.stepsize = 20000
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 1000
    s.snapshot = 10000
    s.snapshot_prefix = os.path.abspath('finetune_flickr_style')
    s.solver_mode = caffe_pb2.SolverParameter.GPU
    with tempfile.NamedTemporaryFile(mode='w', delete=False) as f:
        f.write(str(s))
        return f.name


def run_solvers(niter, solvers, disp_interval=10):
    """Run solvers for niter iterations, returning the loss and accuracy recorded each iteration."""
    blobs = ('loss', 'acc')
    loss, acc = ({name: np.zeros(niter) for name, _ in solvers} for _ in blobs)
    for it in range(niter):
        for name, s in solvers:
            s.step(1)  # run a single SGD step in Caffe
            loss[name][it], acc[name][it] = (s.net.blobs[b].data.copy() for b in blobs)
        if it % disp_interval == 0 or it + 1 == niter:
            loss_disp = '; '.join('%s: loss=%.3f, acc=%2d%%' % (n, loss[n][it], np.round(100 * acc[n][it]))
                                  for n, _ in solvers)
            print('%3d) %s' % (it, loss_disp))
    # Save the learned weights from both nets.
    weight_dir = tempfile.mkdtemp()
    weights = {}
    for name, s in solvers:
        filename = 'weights.%s.caffemodel' % name
        weights[name] = os.path.join(weight_dir, filename)
        s.net.save(weights[name])
    return loss, acc, weights


niter = 2
style_solver_filename = solver(style_net(train=True))
style_solver = caffe.get_solver(style_solver_filename)
style_solver.net.copy_from(weights)
frozen_before = style_solver.net.params['conv1'][0].data.copy()
fc8_before = style_solver.net.params['fc8_flickr'][0].data.copy()
print('Running solvers for %d iterations...' % niter)
solvers = [('pretrained', style_solver)]
loss, acc, finetuned_weights = run_solvers(niter, solvers)
print('Done.')
print('frozen conv1 unchanged', int(np.array_equal(style_solver.net.params['conv1'][0].data, frozen_before)))
print('fc8_flickr learned', int(not np.array_equal(style_solver.net.params['fc8_flickr'][0].data, fc8_before)))
test_net = caffe.Net(style_net(train=False), finetuned_weights['pretrained'], caffe.TEST)
print('reloaded fc8_flickr', int(np.array_equal(test_net.params['fc8_flickr'][0].data,
                                                style_solver.net.params['fc8_flickr'][0].data)))

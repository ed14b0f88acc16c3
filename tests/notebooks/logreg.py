# brewing-logreg (the HDF5 + NetSpec + solver part), shortened schedule;
# the split and the solver are seeded so that the test's bound is stable.
import os
import numpy as np
import h5py
import sklearn.datasets
import sklearn.linear_model
import sklearn.model_selection
import pycaffe_lite as caffe
from pycaffe_lite import layers as L
from pycaffe_lite import params as P
from pycaffe_lite.proto import caffe_pb2

X, y = sklearn.datasets.make_classification(
    n_samples=10000, n_features=4, n_redundant=0, n_informative=2,
    n_clusters_per_class=2, hypercube=False, random_state=0
)
# Split into train and test
X, Xt, y, yt = sklearn.model_selection.train_test_split(X, y, random_state=0)
clf = sklearn.linear_model.SGDClassifier(loss='log_loss', max_iter=1000, tol=1e-3, penalty='l2', alpha=5e-4,
                                         class_weight='balanced', random_state=0)
clf.fit(X, y)
yt_pred = clf.predict(Xt)
print('sklearn accuracy: {:.3f}'.format(np.mean(yt == yt_pred)))

# Write out the data to HDF5 files in a temp directory.
dirname = os.path.abspath('./examples/hdf5_classification/data')
if not os.path.exists(dirname):
    os.makedirs(dirname)
train_filename = os.path.join(dirname, 'train.h5')
test_filename = os.path.join(dirname, 'test.h5')
# HDF5DataLayer source should be a file containing a list of HDF5 filenames.
# To show this off, we'll list the same data file twice.
with h5py.File(train_filename, 'w') as f:
    f['data'] = X
    f['label'] = y.astype(np.float32)
with open(os.path.join(dirname, 'train.txt'), 'w') as f:
    f.write(train_filename + '\n')
    f.write(train_filename + '\n')
# HDF5 is pretty efficient, but can be further compressed.
comp_kwargs = {'compression': 'gzip', 'compression_opts': 1}
with h5py.File(test_filename, 'w') as f:
    f.create_dataset('data', data=Xt, **comp_kwargs)
    f.create_dataset('label', data=yt.astype(np.float32), **comp_kwargs)
with open(os.path.join(dirname, 'test.txt'), 'w') as f:
    f.write(test_filename + '\n')


def logreg(hdf5, batch_size):
    # logistic regression: data, matrix multiplication, and 2-class softmax loss
    n = caffe.NetSpec()
    n.data, n.label = L.HDF5Data(batch_size=batch_size, source=hdf5, ntop=2)
    n.ip1 = L.InnerProduct(n.data, num_output=2, weight_filler=dict(type='xavier'))
    n.accuracy = L.Accuracy(n.ip1, n.label)
    n.loss = L.SoftmaxWithLoss(n.ip1, n.label)
    return n.to_proto()


train_net_path = 'examples/hdf5_classification/logreg_auto_train.prototxt'
with open(train_net_path, 'w') as f:
    f.write(str(logreg('examples/hdf5_classification/data/train.txt', 10)))
test_net_path = 'examples/hdf5_classification/logreg_auto_test.prototxt'
with open(test_net_path, 'w') as f:
    f.write(str(logreg('examples/hdf5_classification/data/test.txt', 10)))


def solver(train_net_path, test_net_path):
    s = caffe_pb2.SolverParameter()
    # Specify locations of the train and test networks.
    s.train_net = train_net_path
    s.test_net.append(test_net_path)
    s.test_interval = 1000  # Test after every 1000 training iterations.
    s.test_iter.append(250)  # Test 250 "batches" each time we test.
    s.max_iter = 2000      # # of times to update the net (training iterations)
    s.base_lr = 0.01
    s.lr_policy = 'step'
    s.gamma = 0.1
    s.stepsize = 5000
    s.momentum = 0.9
    s.weight_decay = 5e-4
    s.display = 1000
    s.snapshot = 10000
    s.snapshot_prefix = 'examples/hdf5_classification/data/train'
    s.solver_mode = caffe_pb2.SolverParameter.CPU
    s.random_seed = 0xCAFFE
    return s


solver_path = 'examples/hdf5_classification/logreg_solver.prototxt'
with open(solver_path, 'w') as f:
    f.write(str(solver(train_net_path, test_net_path)))

caffe.set_mode_cpu()
solver = caffe.get_solver(solver_path)
solver.solve()
accuracy = 0
batch_size = solver.test_nets[0].blobs['data'].num
test_iters = int(len(Xt) / batch_size)
for i in range(test_iters):
    solver.test_nets[0].forward()
    accuracy += solver.test_nets[0].blobs['accuracy'].data
accuracy /= test_iters
print("Accuracy: {:.3f}".format(accuracy))

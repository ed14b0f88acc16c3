"""Stand-in for the notebook's pascal_multilabel_datalayers: a Python data
layer that makes batches of 3 x 16 x 16 images, each holding any of four
patterns (bars, a blob, a checker corner, a colour cast), and their
multi-hot labels."""
import numpy as np

import pycaffe_lite as caffe

NUM_LABELS = 4


def make_image(rng, labels):
    im = rng.uniform(0, 0.2, (3, 16, 16)).astype(np.float32)
    if labels[0]:
        im[:, :, 2:4] += 0.8
    if labels[1]:
        im[:, 10:14, 10:14] += 0.8
    if labels[2]:
        im[:, :4, :4] += np.indices((4, 4)).sum(axis=0) % 2 * 0.8
    if labels[3]:
        im[2] += 0.5
    return im


class SyntheticMultilabelDataLayerSync(caffe.Layer):
    def setup(self, bottom, top):
        self.top_names = ['data', 'label']
        params = eval(self.param_str)
        self.batch_size = params['batch_size']
        self.rng = np.random.RandomState(params.get('seed', 0) + (0 if params['split'] == 'train' else 1000))
        top[0].reshape(self.batch_size, 3, 16, 16)
        top[1].reshape(self.batch_size, NUM_LABELS)

    def forward(self, bottom, top):
        for itt in range(self.batch_size):
            labels = self.rng.randint(0, 2, NUM_LABELS)
            top[0].data[itt, ...] = make_image(self.rng, labels)
            top[1].data[itt, ...] = labels

    def reshape(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass

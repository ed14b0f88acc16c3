"""pycaffe's Classifier: resize, crop (10 oversampled crops by default),
preprocess and forward a list of images, returning class probabilities."""
import numpy as np

from . import io
from .net import TEST, Net


def input_transformer(net, mean=None, input_scale=None, raw_scale=None, channel_swap=None):
    """The Transformer of a net's first input, H x W x K images in, as
    pycaffe's Classifier and Detector configure it."""
    in_ = net.inputs[0]
    t = io.Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


class Classifier(Net):
    def __init__(self, model_file, pretrained_file, image_dims=None, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        in_ = self.inputs[0]
        self.transformer = input_transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[in_].data.shape[2:])
        self.image_dims = np.array(image_dims if image_dims is not None else self.crop_dims)

    def predict(self, inputs, oversample=True):
        """inputs: H x W x K images -> (N, classes) predictions."""
        inputs = list(inputs)
        k = inputs[0].shape[2]
        batch = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], k), np.float32)
        for i, im in enumerate(inputs):
            batch[i] = io.resize_image(im, self.image_dims)
        if oversample:
            batch = io.oversample(batch, self.crop_dims)
        else:
            center = self.image_dims / 2.0
            box = np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])
            box = box.astype(int)
            batch = batch[:, box[0]:box[2], box[1]:box[3], :]
        in_ = self.inputs[0]
        net_in = np.stack([self.transformer.preprocess(in_, im) for im in batch])
        predictions = self.forward_all(**{in_: net_in})[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape(len(predictions) // 10, 10, -1).mean(axis=1)
        return predictions

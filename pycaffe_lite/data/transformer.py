"""Caffe's DataTransformer, vectorized over a batch: crop (random in TRAIN,
centred in TEST), mirror (random, in every phase as in Caffe), mean image or per-channel mean
values, then scale, as out = (pixel - mean) * scale in float32."""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import protoio
from ..blob import repeated_floats, proto_shape
from ..errors import FormatError, ConfigError, ShapeError
from ..proto import caffe_pb2 as pb


def load_mean_file(path):
    """The mean image (C, H, W) float32 from a .binaryproto."""
    proto = protoio.read_blob_proto(path)
    shape = proto_shape(proto)
    values = repeated_floats(proto, "data")
    if len(shape) == 4 and shape[0] == 1:
        shape = shape[1:]
    if any(d <= 0 for d in shape):
        raise ShapeError("%s: the mean's shape %s has a size that is not positive; the file is damaged or not a "
                         "mean image" % (path, shape))
    if len(shape) != 3 or int(np.prod(shape)) != values.size:
        raise ShapeError("%s: the mean must be 1 x C x H x W, got shape %s with %d values"
                         % (path, shape, values.size))
    mean = np.asarray(values, np.float32).reshape(shape)
    bad = ~np.isfinite(mean)
    if bad.any():
        c, h, w = (int(v) for v in np.argwhere(bad)[0])
        raise FormatError("%s: the mean image holds %d NaN or infinite values (the first at channel %d, row %d, "
                          "column %d: %s); every image would become NaN. Compute the mean again "
                          "(compute_image_mean)" % (path, int(bad.sum()), c, h, w, mean[c, h, w]))
    return mean


class DataTransformer:
    def __init__(self, param, phase, rng):
        self.param = param
        self.train = phase == pb.TRAIN
        self.rng = rng
        self.crop = int(param.crop_size)
        self.scale = np.float32(param.scale)
        self.mean_image = None
        self.mean_values = None
        if param.HasField("mean_file") and len(param.mean_value):
            raise ConfigError("transform_param: give either mean_file or mean_value, not both")
        if not np.isfinite(self.scale) or not np.isfinite(np.asarray(param.mean_value, np.float32)).all():
            raise ConfigError("transform_param: scale %s and mean_value %s must be finite numbers; a NaN or infinity "
                              "would make every image NaN" % (param.scale, list(param.mean_value)))
        if param.HasField("mean_file"):
            self.mean_image = load_mean_file(param.mean_file)
        elif len(param.mean_value):
            self.mean_values = np.asarray(param.mean_value, np.float32)

    def output_shape(self, c, h, w):
        if self.crop:
            if self.crop > h or self.crop > w:
                raise ShapeError("crop_size %d is larger than the %dx%d images" % (self.crop, h, w))
            return (c, self.crop, self.crop)
        return (c, h, w)

    def _check_mean(self, c, h, w):
        if self.mean_image is not None and self.mean_image.shape != (c, h, w):
            raise ShapeError("mean_file %s is %s but the images are %s; the mean must have the size of the "
                             "stored images (before cropping)" % (self.param.mean_file, self.mean_image.shape,
                                                                  (c, h, w)))
        if self.mean_values is not None and len(self.mean_values) not in (1, c):
            raise ShapeError("give one mean_value, or one per channel (%d), not %d"
                             % (c, len(self.mean_values)))

    def offsets(self, n, h, w):
        """Per-image crop offsets and mirror flags for a batch."""
        if self.crop:
            if self.train:
                h_off = self.rng.integers(0, h - self.crop + 1, size=n)
                w_off = self.rng.integers(0, w - self.crop + 1, size=n)
            else:
                h_off = np.full(n, (h - self.crop) // 2)
                w_off = np.full(n, (w - self.crop) // 2)
        else:
            h_off = w_off = np.zeros(n, dtype=np.int64)
        # Caffe mirrors at random in every phase (only the crop is centred in TEST).
        mirror = self.rng.integers(0, 2, size=n).astype(bool) if self.param.mirror \
            else np.zeros(n, dtype=bool)
        return h_off, w_off, mirror

    def transform(self, images, out=None):
        """images: (N, C, H, W) uint8 or float -> (N, C, crop, crop) float32."""
        n, c, h, w = images.shape
        self._check_mean(c, h, w)
        self.output_shape(c, h, w)
        h_off, w_off, mirror = self.offsets(n, h, w)
        self.last_offsets = (h_off, w_off, mirror)
        if self.crop:
            k = self.crop
            idx = np.arange(n)
            crops = sliding_window_view(images, (k, k), axis=(2, 3))[idx, :, h_off, w_off]
            x = crops.astype(np.float32)
            if self.mean_image is not None:
                means = sliding_window_view(self.mean_image, (k, k), axis=(1, 2))[:, h_off, w_off]
                x -= means.transpose(1, 0, 2, 3)
        else:
            x = images.astype(np.float32)
            if self.mean_image is not None:
                x -= self.mean_image
        if self.mean_values is not None:
            x -= self.mean_values.reshape(1, -1, 1, 1) if len(self.mean_values) > 1 else self.mean_values[0]
        if self.scale != 1:
            x *= self.scale
        if mirror.any():
            x[mirror] = x[mirror][..., ::-1]
        if out is not None:
            out[...] = x
            return out
        return x

"""pycaffe's caffe.io: array <-> protobuf helpers, image loading and resizing,
and the Transformer that turns H x W x K images into net inputs."""
import numpy as np

from .blob import proto_shape, repeated_floats
from .data.datum import decode_datum
from .errors import ConfigError, ShapeError
from .proto import caffe_pb2

# ---------------------------------------------------------------- protobuf helpers


def blobproto_to_array(blob, return_diff=False):
    """A BlobProto as an array (legacy 4-D protos keep their N x C x H x W shape)."""
    values = repeated_floats(blob, "diff" if return_diff else "data")
    return np.array(values, dtype=np.float32).reshape(proto_shape(blob))


def array_to_blobproto(arr, diff=None):
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(np.asarray(arr, np.float64).ravel().tolist())
    if diff is not None:
        blob.diff.extend(np.asarray(diff, np.float64).ravel().tolist())
    return blob


def arraylist_to_blobprotovector_str(arraylist):
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(a) for a in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(text):
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(text)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr, label=None):
    """A C x H x W array as a Datum: uint8 arrays as bytes, others as float_data."""
    arr = np.asarray(arr)
    if arr.ndim != 3:
        raise ShapeError("array_to_datum needs a C x H x W array, got shape %s" % (arr.shape,))
    datum = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(float).ravel().tolist())
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum):
    return decode_datum(datum)


# ---------------------------------------------------------------- images


def load_image(filename, color=True):
    """An image as H x W x K float32 in [0, 1], RGB order (pycaffe's convention)."""
    import cv2
    img = cv2.imread(filename, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise IOError("cannot read image %s" % filename)
    if img.dtype == np.uint16:
        img = img.astype(np.float32) / 65535.0
    else:
        img = img.astype(np.float32) / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    if img.shape[2] == 3:
        img = img[:, :, ::-1]                     # OpenCV's BGR -> RGB
        if not color:
            img = (img @ np.array([0.2125, 0.7154, 0.0721], np.float32))[:, :, None]
    elif color:
        img = np.tile(img, (1, 1, 3))
    return np.ascontiguousarray(img)


def resize_image(im, new_dims, interp_order=1):
    """Resize H x W x K to new_dims (height, width); bilinear by default."""
    import cv2
    h, w = int(new_dims[0]), int(new_dims[1])
    if im.shape[:2] == (h, w):
        return im.astype(np.float32)
    interp = {0: cv2.INTER_NEAREST, 1: cv2.INTER_LINEAR}.get(interp_order, cv2.INTER_CUBIC)
    src = np.asarray(im, np.float32)
    # OpenCV resizes at most 4 channels at a time.
    parts = [cv2.resize(src[:, :, i:i + 4], (w, h), interpolation=interp) for i in range(0, src.shape[2], 4)]
    parts = [p[:, :, None] if p.ndim == 2 else p for p in parts]
    return np.concatenate(parts, axis=2)


def oversample(images, crop_dims):
    """10 crops per image: 4 corners and the centre, and their mirror images."""
    images = list(images)
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    center = im_shape[:2] / 2.0
    h_idx = (0, im_shape[0] - crop_dims[0])
    w_idx = (0, im_shape[1] - crop_dims[1])
    boxes = [(i, j, i + crop_dims[0], j + crop_dims[1]) for i in h_idx for j in w_idx]
    c = np.tile(center, (1, 2))[0] + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    boxes.append(tuple(c.astype(int)))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for y0, x0, y1, x1 in boxes:
            crops[ix] = im[int(y0):int(y1), int(x0):int(x1), :]
            ix += 1
        crops[ix:ix + 5] = crops[ix - 5:ix, :, ::-1, :]
        ix += 5
    return crops


# ---------------------------------------------------------------- Transformer


class Transformer:
    """Turns H x W x K images into the C x H x W float inputs of a net, by
    input name: resize, transpose, channel swap, raw scale, mean, input scale."""

    def __init__(self, inputs):
        self.inputs = dict(inputs)
        self.transpose, self.channel_swap, self.raw_scale = {}, {}, {}
        self.mean, self.input_scale = {}, {}

    def _check(self, in_):
        if in_ not in self.inputs:
            raise ConfigError("%s is not one of the net inputs: %s" % (in_, list(self.inputs)))

    def preprocess(self, in_, data):
        self._check(in_)
        x = np.asarray(data).astype(np.float32, copy=True)
        in_dims = tuple(self.inputs[in_][2:])
        if x.shape[:2] != in_dims:
            x = resize_image(x, in_dims)
        if in_ in self.transpose:
            x = x.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            x = x[self.channel_swap[in_], :, :]
        if in_ in self.raw_scale:
            x *= self.raw_scale[in_]
        if in_ in self.mean:
            x -= self.mean[in_]
        if in_ in self.input_scale:
            x *= self.input_scale[in_]
        return x

    def deprocess(self, in_, data):
        self._check(in_)
        x = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            x /= self.input_scale[in_]
        if in_ in self.mean:
            x += self.mean[in_]
        if in_ in self.raw_scale:
            x /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            x = x[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            x = x.transpose(np.argsort(self.transpose[in_]))
        return x

    def set_transpose(self, in_, order):
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ConfigError("transpose order needs as many axes as the input has (%d)"
                              % (len(self.inputs[in_]) - 1))
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_, order):
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise ConfigError("channel swap needs one entry per channel (%d)" % self.inputs[in_][1])
        self.channel_swap[in_] = list(order)

    def set_raw_scale(self, in_, scale):
        self._check(in_)
        self.raw_scale[in_] = np.float32(scale)

    def set_mean(self, in_, mean):
        """Mean per channel (C,) or a whole image (C, H, W) of the input's shape."""
        self._check(in_)
        mean = np.asarray(mean, np.float32)
        if mean.ndim == 1:
            if mean.shape[0] != self.inputs[in_][1]:
                raise ShapeError("mean has %d channels, the input %d" % (mean.shape[0], self.inputs[in_][1]))
            mean = mean[:, None, None]
        elif mean.shape != tuple(self.inputs[in_][1:]):
            raise ShapeError("mean shape %s does not fit the input %s; crop or resize it first"
                             % (mean.shape, tuple(self.inputs[in_][1:])))
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        self._check(in_)
        self.input_scale[in_] = np.float32(scale)

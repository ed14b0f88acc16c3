"""pycaffe's caffe.io: array <-> protobuf helpers, image loading and resizing,
and the Transformer that turns H x W x K images into net inputs."""
import os

import numpy as np

from .blob import proto_shape, repeated_floats
from .data.datum import decode_datum
from .errors import ConfigError, ShapeError
from .proto import caffe_pb2

# ---------------------------------------------------------------- protobuf helpers


def blobproto_to_array(blob, return_diff=False):
    """A BlobProto as a float64 array, as pycaffe returns it (legacy 4-D
    protos keep their N x C x H x W shape)."""
    values = repeated_floats(blob, "diff" if return_diff else "data")
    shape = proto_shape(blob)
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.float64)) != values.size:
        raise ShapeError("the BlobProto's shape %s does not hold its %d %s values (a damaged or hand-edited "
                         "file?)" % (shape, values.size, "diff" if return_diff else "data"))
    return np.array(values, dtype=np.float64).reshape(shape)


def array_to_blobproto(arr, diff=None):
    arr = np.asarray(arr)
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
    """C x H x W: uint8 from the bytes, float64 from float_data (pycaffe's
    types); an encoded Datum is decoded."""
    arr = decode_datum(datum)
    return arr.astype(np.float64) if arr.dtype != np.uint8 else arr


# ---------------------------------------------------------------- images


def _image_bytes(source):
    """The encoded bytes of an image given as scikit-image's imread takes it:
    a path (str or os.PathLike), a URL, or a file-like object."""
    if hasattr(source, "read"):
        # from its start, as imread's readers (Pillow, imageio) read one,
        # e.g. a BytesIO just written to
        if getattr(source, "seekable", lambda: False)():
            source.seek(0)
        return source.read(), getattr(source, "name", "the file object")
    name = os.fspath(source)
    if isinstance(name, bytes):
        name = os.fsdecode(name)
    if "://" in name.split(os.sep)[0] or name.startswith(("http://", "https://", "ftp://", "file://")):
        from urllib.request import urlopen
        try:
            with urlopen(name) as response:
                return response.read(), name
        except OSError as e:
            raise IOError("cannot fetch image %s: %s" % (name, e)) from None
    try:
        with open(name, "rb") as f:
            return f.read(), name
    except OSError as e:
        raise IOError("cannot read image %s: %s" % (name, e.strerror or e)) from None


def _decode(data, name):
    """H x W (x K) array from encoded bytes: OpenCV, or Pillow for what
    OpenCV does not read (scikit-image reads both)."""
    import cv2
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is not None:
        if img.ndim == 3:
            img = img[:, :, [2, 1, 0, 3][:img.shape[2]]]         # OpenCV's BGR(A) -> RGB(A)
        return img
    try:
        import io as _io
        from PIL import Image
        with Image.open(_io.BytesIO(data)) as pil:
            if pil.mode not in ("L", "RGB", "RGBA", "I;16"):
                pil = pil.convert("RGBA" if "A" in pil.mode else "RGB")
            return np.asarray(pil)
    except Exception:
        raise IOError("cannot read image %s: it is empty or not an image OpenCV or Pillow can decode"
                      % name) from None


def load_image(filename, color=True):
    """An image as H x W x K float32 in [0, 1], RGB order, as pycaffe loads it
    (scikit-image's imread + img_as_float): K is 3 with color, else 1 (grey
    by 0.2125 R + 0.7154 G + 0.0721 B, RGBA first blended onto white).
    `filename` is a path, a URL or a file-like object, as for imread."""
    img = _decode(*_image_bytes(filename))
    if img.dtype == np.uint16 and img.ndim == 3:
        img = (img >> 8).astype(np.uint8)      # scikit-image's reader keeps 8 bits of 16-bit colour PNGs
    # In float64 first, then float32, like img_as_float(...).astype(float32).
    img = img.astype(np.float64) / (65535.0 if img.dtype == np.uint16 else 255.0)
    if img.ndim == 2:
        img = img[:, :, None]
        if color:
            img = np.tile(img, (1, 1, 3))
    elif not color:
        if img.shape[2] == 4:
            alpha = img[:, :, 3:]
            img = np.clip((1 - alpha) + alpha * img[:, :, :3], 0, 1)
        img = (img @ np.array([0.2125, 0.7154, 0.0721]))[:, :, None]
    elif img.shape[2] == 4:
        img = img[:, :, :3]
    return np.ascontiguousarray(img, dtype=np.float32)


def _resize_unit(image, new_dims, order):
    """scikit-image's resize(image, new_dims, order, mode='constant') of a
    float image with values in [0, 1], which pycaffe calls: when shrinking a
    Gaussian prefilter (sigma (factor - 1) / 2 per axis) against aliasing,
    then spline interpolation of that order on the pixel grid with zeros
    beyond the border, clipped to the input's range."""
    from scipy import ndimage
    out_shape = tuple(int(d) for d in new_dims) + image.shape[2:]
    factors = np.divide(image.shape, out_shape)
    low, high = image.min(), image.max()
    if any(o < i for o, i in zip(out_shape, image.shape)):
        image = ndimage.gaussian_filter(image, np.maximum(0, (factors - 1) / 2), cval=0, mode="grid-constant")
    out = ndimage.zoom(image, [1 / f for f in factors], order=order, mode="grid-constant", cval=0, grid_mode=True)
    return np.clip(out, low, high, out=out)


def resize_image(im, new_dims, interp_order=1):
    """pycaffe's resize_image: H x W x K to new_dims (height, width) with
    spline interpolation of order interp_order (0-5). Images with 1 or 3
    channels are scaled to [0, 1] and resized as scikit-image does (edge
    pixels fade towards the zero border, anti-aliasing when shrinking);
    others go through scipy.ndimage.zoom. Returns float32."""
    from scipy import ndimage
    if im.shape[-1] in (1, 3):
        low, high = im.min(), im.max()
        if high > low:
            unit = (im - low) / (high - low)
            resized = _resize_unit(unit, new_dims, interp_order) * (high - low) + low
        else:                       # a constant image: nothing to interpolate
            return np.full((int(new_dims[0]), int(new_dims[1]), im.shape[-1]), low, dtype=np.float32)
    else:
        scale = tuple(np.array(new_dims, dtype=float) / np.array(im.shape[:2]))
        resized = ndimage.zoom(im, scale + (1,), order=interp_order)
    return resized.astype(np.float32)


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
        self.raw_scale[in_] = scale

    def set_mean(self, in_, mean):
        """Mean per channel (C,), or a whole image (C, H, W) or (H, W); an
        image of another size than the input is resized to it as pycaffe
        does (scaled to [0, 1], resized, scaled back)."""
        self._check(in_)
        mean = np.asarray(mean)      # kept as given: pycaffe subtracts it in its own precision
        in_shape = tuple(int(d) for d in self.inputs[in_][1:])
        if mean.ndim == 1:
            if mean.shape[0] != in_shape[0]:
                raise ShapeError("mean has %d channels, the input %d" % (mean.shape[0], in_shape[0]))
            mean = mean[:, None, None]
        else:
            shape = (1,) + mean.shape if mean.ndim == 2 else mean.shape
            if len(shape) != 3:
                raise ShapeError("mean must be (C,), (H, W) or (C, H, W), got shape %s" % (mean.shape,))
            if shape[0] != in_shape[0] and shape[0] != 1:
                raise ShapeError("mean has %d channels, the input %d" % (shape[0], in_shape[0]))
            if shape != in_shape:
                image = mean.reshape(shape).transpose(1, 2, 0)
                low, high = image.min(), image.max()
                if high > low:
                    resized = resize_image((image - low) / (high - low), in_shape[1:]) * (high - low) + low
                else:
                    resized = np.full(in_shape[1:] + (shape[0],), low, dtype=np.float32)
                mean = resized.transpose(2, 0, 1)
        self.mean[in_] = mean

    def set_input_scale(self, in_, scale):
        self._check(in_)
        self.input_scale[in_] = scale

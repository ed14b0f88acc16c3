"""Datum records <-> image arrays, and image reading as Caffe does it (OpenCV:
imread colour or grey, bilinear resize, B,G,R channel order, C,H,W layout)."""
import os

import numpy as np

from ..errors import FormatError
from ..proto import caffe_pb2 as pb


def _cv2():
    import cv2
    return cv2


def read_image(path, height=0, width=0, is_color=True):
    """An image as an H x W x C uint8 array (BGR), resized when both sizes are given.
    Returns None when the file is missing or cannot be decoded."""
    cv2 = _cv2()
    if not os.path.isfile(path):
        return None
    img = cv2.imread(path, cv2.IMREAD_COLOR if is_color else cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None
    if height > 0 and width > 0:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    if img.ndim == 2:
        img = img[:, :, None]
    return img


def hwc_to_datum(img, label):
    """A raw Datum (C,H,W uint8 bytes) from an H x W x C image."""
    d = pb.Datum(channels=img.shape[2], height=img.shape[0], width=img.shape[1], label=int(label), encoded=False)
    d.data = np.ascontiguousarray(img.transpose(2, 0, 1)).tobytes()
    return d


def encode_image(img, encoding):
    ok, buf = _cv2().imencode("." + encoding, img)
    if not ok:
        raise FormatError("OpenCV cannot encode an image as '%s'" % encoding)
    return buf.tobytes()


def image_file_to_datum(path, label, height=0, width=0, is_color=True, encoding=""):
    """Caffe's ReadImageToDatum. With an encoding, the file's own bytes are kept
    when nothing would change them (same extension, no resize, colour mode kept);
    otherwise the decoded image is re-encoded. Returns None if unreadable."""
    img = read_image(path, height, width, is_color)
    if img is None:
        return None
    if encoding:
        ext = os.path.splitext(path)[1][1:].lower()
        if (img.shape[2] == 3) == is_color and not height and not width and ext == encoding.lower():
            with open(path, "rb") as f:
                return pb.Datum(data=f.read(), label=int(label), encoded=True)
        return pb.Datum(data=encode_image(img, encoding), label=int(label), encoded=True)
    return hwc_to_datum(img, label)


def decode_datum(datum, force_color=False, force_gray=False, key=None):
    """The C x H x W array a Datum holds (uint8 for pixels, float32 for float_data)."""
    where = " %r" % (key,) if key is not None else ""
    if datum.encoded:
        cv2 = _cv2()
        flag = cv2.IMREAD_COLOR if force_color else cv2.IMREAD_GRAYSCALE if force_gray else cv2.IMREAD_UNCHANGED
        img = None
        if datum.data:
            try:
                img = cv2.imdecode(np.frombuffer(datum.data, np.uint8), flag)
            except cv2.error:
                img = None
        if img is None:
            raise FormatError("cannot decode the encoded image of record%s: %s" % (
                where, "it holds no bytes" if not datum.data else "%d bytes that OpenCV cannot read as an image"
                % len(datum.data)))
        if img.dtype != np.uint8:
            # Caffe's CHECK: the pixels of an encoded Datum are bytes
            raise FormatError("the encoded image of record%s has %s pixels: image data type must be unsigned byte "
                              "(8 bits per channel); convert it to 8 bits before writing the database"
                              % (where, img.dtype))
        if img.ndim == 2:
            img = img[:, :, None]
        return img.transpose(2, 0, 1)
    c, h, w = datum.channels, datum.height, datum.width
    if c <= 0 or h <= 0 or w <= 0:
        raise FormatError("record%s is %d x %d x %d (channels x height x width): every size must be positive; "
                          "is it an empty or damaged record?" % (where, c, h, w))
    if datum.data:
        if len(datum.data) != c * h * w:
            raise FormatError("record%s holds %d bytes but claims %dx%dx%d"
                              % (where, len(datum.data), c, h, w))
        arr = np.frombuffer(datum.data, np.uint8).reshape(c, h, w)
    else:
        if len(datum.float_data) != c * h * w:
            raise FormatError("record%s holds %d floats but claims %dx%dx%d"
                              % (where, len(datum.float_data), c, h, w))
        arr = np.asarray(datum.float_data, np.float32).reshape(c, h, w)
    if force_gray and arr.shape[0] == 3:
        arr = _cv2().cvtColor(np.ascontiguousarray(arr.transpose(1, 2, 0)), _cv2().COLOR_BGR2GRAY)[None]
    elif force_color and arr.shape[0] == 1:
        arr = np.repeat(arr, 3, axis=0)
    return arr


def parse_datum(value, key=None):
    if not value:
        raise FormatError("record %r has no value: a database of Datums holds one per key (this one holds keys "
                          "only, or was damaged)" % (key,))
    d = pb.Datum()
    try:
        d.ParseFromString(value)
    except Exception:
        raise FormatError("record %r is not a Datum (corrupted database?)" % (key,)) from None
    return d

"""pycaffe's coord_map: how output coordinates of one NetSpec top relate to
another's, through the spatial layers between them, and the Crop layer that
aligns them (FCN's skip connections).

A mapping is (axis, scale, shift): coordinate i of the input lands at
i * scale + shift of the output; (None, 1, 0) is the identity that layers
which do not move pixels (ReLU, BatchNorm, ...) have."""
import numpy as np

from .net_spec import layers as L

PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU", "Log", "LRN", "Exp",
                       "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid", "Split", "TanH", "Threshold"]


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two mappings along different axes cannot be composed."""


def conv_params(fn):
    p = fn.params.get("convolution_param", fn.params)
    legacy = {"pad_h", "pad_w", "kernel_h", "kernel_w", "stride_h", "stride_w"} & set(p)
    if legacy:
        raise AssertionError("cropping does not support the legacy _h/_w parameters (%s)" % ", ".join(sorted(legacy)))
    kernel = np.array(p["kernel_size"], ndmin=1)
    dilation = np.array(p.get("dilation", 1), ndmin=1)
    return (p.get("axis", 1), np.array(p.get("stride", 1), ndmin=1), (kernel - 1) * dilation + 1,
            np.array(p.get("pad", 0), ndmin=1))


def crop_params(fn):
    p = fn.params.get("crop_param", fn.params)
    return p.get("axis", 2), np.array(p.get("offset", 0), ndmin=1)


def coord_map(fn):
    """The (axis, scale, shift) of one layer function."""
    if fn.type_name in ("Convolution", "Pooling", "Im2col"):
        axis, stride, kernel, pad = conv_params(fn)
        return axis, 1 / stride, (pad - (kernel - 1) / 2) / stride
    if fn.type_name == "Deconvolution":
        axis, stride, kernel, pad = conv_params(fn)
        return axis, stride, (kernel - 1) / 2 - pad
    if fn.type_name in PASS_THROUGH_LAYERS:
        return None, 1, 0
    if fn.type_name == "Crop":
        axis, offset = crop_params(fn)
        return axis - 1, 1, -offset           # axis - 1: the last non-coordinate axis
    raise UndefinedMapException


def compose(base_map, next_map):
    """base followed by next: scales multiply, next's shift is scaled by base's."""
    ax1, a1, b1 = base_map
    ax2, a2, b2 = next_map
    if ax1 is None:
        ax = ax2
    elif ax2 is None or ax1 == ax2:
        ax = ax1
    else:
        raise AxisMismatchException
    return ax, a1 * a2, a1 * b2 + b1


def inverse(mapping):
    ax, a, b = mapping
    return ax, 1 / a, -b / a


def _mappable_bottoms(top):
    """A Crop maps only through the blob it crops, not its reference."""
    return top.fn.inputs[:1] if top.fn.type_name == "Crop" else top.fn.inputs


def _walk(start, stop_at=None):
    """Maps from `start` back to every ancestor reached through mappable layers;
    with stop_at, returns (blob, its map) for the first ancestor in stop_at."""
    maps, frontier = {start: (None, 1, 0)}, [start]
    while frontier:
        top = frontier.pop()
        if stop_at is not None and top in stop_at:
            return top, maps[top]
        try:
            step = coord_map(top.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(top):
            maps[bottom] = compose(maps[top], step)
            frontier.append(bottom)
    return None if stop_at is not None else maps


def coord_map_from_to(top_from, top_to):
    """The mapping from top_from's coordinates to top_to's, through their
    nearest common ancestor."""
    from_maps = _walk(top_from)
    found = _walk(top_to, from_maps)
    if found is None:
        raise RuntimeError("Could not compute map between tops; are they connected by spatial layers?")
    common, to_map = found
    return compose(to_map, inverse(from_maps[common]))


def crop(top_from, top_to):
    """L.Crop(top_from, top_to) with the axis and offsets that align them (the
    checks raise AssertionError, as pycaffe's asserts do)."""
    ax, a, b = coord_map_from_to(top_from, top_to)
    if not (np.asarray(a) == 1).all():
        raise AssertionError("scale mismatch on crop (a = %s)" % (a,))
    if not (np.asarray(b) <= 0).all():
        raise AssertionError("cannot crop negative offset (b = %s)" % (b,))
    if not (np.round(b) == b).all():
        raise AssertionError("cannot crop noninteger offset (b = %s)" % (b,))
    return L.Crop(top_from, top_to, crop_param=dict(axis=ax + 1, offset=list(-np.round(b).astype(int))))

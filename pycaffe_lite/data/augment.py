"""The SSD fork's image and box augmentation for AnnotatedData: resize
policies, photometric distortion, expansion onto a mean-coloured canvas,
batch samplers (random crops constrained by their overlap with the objects),
and the matching transformation of the normalized boxes.

Images are H x W x C uint8 arrays (OpenCV's layout); boxes are float32
[xmin, ymin, xmax, ymax] in [0, 1]. The arithmetic follows the fork's in
float32 so that boxes land on the same values. Random draws come from the
layer's own numpy generator: the fork's draws (Caffe's generator in the
prefetch thread) cannot be reproduced by anyone, only their distributions."""
import numpy as np

from .. import bbox
from ..errors import ConfigError
from ..proto import caffe_pb2 as pb

f32 = np.float32
RP = pb.ResizeParameter


# -- boxes -------------------------------------------------------------------
def box_size(b):
    return bbox.box_size(np.asarray(b, f32))


def clip_box(b):
    return np.clip(np.asarray(b, f32), f32(0), f32(1))


def coverage(a, b):
    """The share of a that b covers."""
    a, b = np.asarray(a, f32), np.asarray(b, f32)
    inter = bbox.intersection(a, b)
    return f32(inter / box_size(a)) if inter > 0 else f32(0)


def jaccard(a, b):
    a, b = np.asarray(a, f32), np.asarray(b, f32)
    return f32(bbox.overlap_matrix(a, b)[0, 0])


def project(src, b):
    """b in the coordinates of the window src, clipped; None when outside it."""
    if b[0] >= src[2] or b[2] <= src[0] or b[1] >= src[3] or b[3] <= src[1]:
        return None
    w, h = f32(src[2] - src[0]), f32(src[3] - src[1])
    p = clip_box([(b[0] - src[0]) / w, (b[1] - src[1]) / h, (b[2] - src[0]) / w, (b[3] - src[1]) / h])
    return p if box_size(p) > 0 else None


def meets_emit_constraint(window, b, emit):
    if emit.emit_type == pb.EmitConstraint.CENTER:
        xc, yc = f32(b[0] + b[2]) / f32(2), f32(b[1] + b[3]) / f32(2)
        return window[0] <= xc <= window[2] and window[1] <= yc <= window[3]
    return coverage(b, window) > f32(emit.emit_overlap)


# -- resizing ----------------------------------------------------------------
def new_size(resize, width, height):
    """The (width, height) an image of this size has after the resize policy."""
    w, h = int(resize.width), int(resize.height)
    if resize.resize_mode == RP.FIT_SMALL_SIZE:
        aspect = f32(width) / f32(height)
        if aspect < f32(w) / f32(h):
            h = int(f32(w) / aspect)
        else:
            w = int(aspect * f32(h))
    return w, h


def resize_box(resize, old_w, old_h, b):
    new_h, new_w = f32(resize.height), f32(resize.width)
    orig_aspect = f32(old_w) / f32(old_h)
    x0, y0, x1, y1 = (f32(b[0]) * f32(old_w), f32(b[1]) * f32(old_h), f32(b[2]) * f32(old_w), f32(b[3]) * f32(old_h))
    ow, oh = f32(old_w), f32(old_h)

    def along(v0, v1, new, old):
        return max(f32(0), f32(v0 * new / old)), min(new, f32(v1 * new / old))

    mode = resize.resize_mode
    if mode == RP.FIT_LARGE_SIZE_AND_PAD:
        if orig_aspect > new_w / new_h:
            pad = f32((new_h - new_w / orig_aspect) / f32(2))
            x0, x1 = along(x0, x1, new_w, ow)
            y0 = pad + max(f32(0), f32(y0 * (new_h - f32(2) * pad) / oh))
            y1 = pad + min(new_h, f32(y1 * (new_h - f32(2) * pad) / oh))
        else:
            pad = f32((new_w - orig_aspect * new_h) / f32(2))
            x0 = pad + max(f32(0), f32(x0 * (new_w - f32(2) * pad) / ow))
            x1 = pad + min(new_w, f32(x1 * (new_w - f32(2) * pad) / ow))
            y0, y1 = along(y0, y1, new_h, oh)
    else:
        if mode == RP.FIT_SMALL_SIZE:
            if orig_aspect < new_w / new_h:
                new_h = f32(new_w / orig_aspect)
            else:
                new_w = f32(orig_aspect * new_h)
        x0, x1 = along(x0, x1, new_w, ow)
        y0, y1 = along(y0, y1, new_h, oh)
    return np.array([x0 / new_w, y0 / new_h, x1 / new_w, y1 / new_h], f32)


def extrapolate_box(resize, height, width, window, b):
    if not (resize.height_scale > 0 and resize.width_scale > 0 and resize.resize_mode == RP.FIT_SMALL_SIZE):
        return b
    aspect = f32(width) / f32(height)
    rh, rw = f32(resize.height), f32(resize.width)
    if aspect < rw / rh:
        rh = f32(rw / aspect)
    else:
        rw = f32(rh * aspect)
    ch, cw = f32(rh * (window[3] - window[1])), f32(rw * (window[2] - window[0]))
    sx, sy = cw / f32(resize.width_scale), ch / f32(resize.height_scale)
    return np.array([b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy], f32)


_INTERP = {RP.LINEAR: "INTER_LINEAR", RP.AREA: "INTER_AREA", RP.NEAREST: "INTER_NEAREST",
           RP.CUBIC: "INTER_CUBIC", RP.LANCZOS4: "INTER_LANCZOS4"}
_PAD = {RP.CONSTANT: "BORDER_CONSTANT", RP.MIRRORED: "BORDER_REFLECT101", RP.REPEAT_NEAREST: "BORDER_REPLICATE"}


def apply_resize(img, resize, rng):
    import cv2
    interp = cv2.INTER_LINEAR
    if len(resize.interp_mode):
        interp = getattr(cv2, _INTERP[resize.interp_mode[int(rng.integers(len(resize.interp_mode)))]])
    c = img.shape[2]
    pad = list(resize.pad_value) or [0.0]
    if len(pad) not in (1, c):
        raise ConfigError("resize_param: give one pad_value or one per channel (%d), not %d" % (c, len(pad)))
    pad = (pad * 3)[:3] if len(pad) == 1 else pad
    h, w = img.shape[:2]
    new_w, new_h = int(resize.width), int(resize.height)
    aspect, new_aspect = f32(w) / f32(h), f32(new_w) / f32(new_h)
    mode = resize.resize_mode
    if mode == RP.WARP:
        out = cv2.resize(img, (new_w, new_h), interpolation=interp)
    elif mode == RP.FIT_SMALL_SIZE:
        size = (new_w, int(np.floor(f32(new_w) / aspect))) if aspect < new_aspect else \
            (int(np.floor(aspect * f32(new_h))), new_h)
        out = cv2.resize(img, size, interpolation=interp)
    else:
        border = getattr(cv2, _PAD[resize.pad_mode])
        if aspect > new_aspect:
            out = cv2.resize(img, (new_w, int(np.floor(f32(new_w) / aspect))), interpolation=interp)
            top = (new_h - out.shape[0]) // 2
            out = cv2.copyMakeBorder(out, top, new_h - out.shape[0] - top, 0, 0, border, value=pad)
        else:
            out = cv2.resize(img, (int(np.floor(aspect * f32(new_h))), new_h), interpolation=interp)
            left = (new_w - out.shape[1]) // 2
            out = cv2.copyMakeBorder(out, 0, 0, left, new_w - out.shape[1] - left, border, value=pad)
    return out.reshape(out.shape[0], out.shape[1], c)


# -- photometric distortion ---------------------------------------------------
def _uniform(rng, lo, hi):
    # A window of the full side leaves 1 - side a rounding error below 0.
    return f32(rng.uniform(lo, hi)) if hi > lo else f32(lo)


def _convert(img, alpha, beta):
    """cv::Mat::convertTo to uint8: alpha * x + beta, rounded and saturated."""
    return np.clip(np.rint(img.astype(np.float32) * f32(alpha) + f32(beta)), 0, 255).astype(np.uint8)


def _hsv(img, channel, alpha, beta):
    import cv2
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV)
    hsv[..., channel] = _convert(hsv[..., channel], alpha, beta)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def distort(img, p, rng):
    """The fork's ApplyDistort: brightness, contrast, saturation, hue (contrast
    first or last, half the time each), then a random channel order."""
    def brightness(x):
        if _uniform(rng, 0, 1) < p.brightness_prob:
            delta = _uniform(rng, -p.brightness_delta, p.brightness_delta)
            if abs(delta) > 0:
                return _convert(x, 1, delta)
        return x

    def contrast(x):
        if _uniform(rng, 0, 1) < p.contrast_prob:
            delta = _uniform(rng, p.contrast_lower, p.contrast_upper)
            if abs(delta - 1) > 1e-3:
                return _convert(x, delta, 0)
        return x

    def saturation(x):
        if _uniform(rng, 0, 1) < p.saturation_prob:
            delta = _uniform(rng, p.saturation_lower, p.saturation_upper)
            return _hsv(x, 1, delta, 0)
        return x

    def hue(x):
        if _uniform(rng, 0, 1) < p.hue_prob:
            delta = _uniform(rng, -p.hue_delta, p.hue_delta)
            if abs(delta) > 0:
                return _hsv(x, 0, 1, delta)
        return x

    for name, lo in (("brightness_delta", 0), ("contrast_lower", 0), ("saturation_lower", 0), ("hue_delta", 0)):
        if getattr(p, name) < lo:
            raise ConfigError("distort_param: %s must not be negative (got %s)" % (name, getattr(p, name)))
    if p.contrast_upper < p.contrast_lower or p.saturation_upper < p.saturation_lower:
        raise ConfigError("distort_param: each upper bound must be at least its lower bound")
    steps = (brightness, contrast, saturation, hue) if _uniform(rng, 0, 1) > 0.5 else \
        (brightness, saturation, hue, contrast)
    for step in steps:
        img = step(img)
    if _uniform(rng, 0, 1) < p.random_order_prob and img.shape[2] == 3:
        img = np.ascontiguousarray(img[..., rng.permutation(3)])
    return img


# -- geometry ----------------------------------------------------------------
def expand(img, p, fill, rng):
    """The fork's ExpandImage: with probability prob, the image is placed at a
    random spot of a canvas up to max_expand_ratio times its size, filled
    with fill (per channel). Returns (image, window) where window is the
    original image's frame in the canvas's coordinates (None: unchanged)."""
    if _uniform(rng, 0, 1) > p.prob or abs(p.max_expand_ratio - 1) < 1e-2:
        return img, None
    ratio = _uniform(rng, 1, p.max_expand_ratio)
    h, w, c = img.shape
    eh, ew = int(f32(h) * ratio), int(f32(w) * ratio)
    h_off = np.floor(_uniform(rng, 0, eh - h))
    w_off = np.floor(_uniform(rng, 0, ew - w))
    canvas = np.empty((eh, ew, c), np.uint8)
    canvas[...] = fill
    canvas[int(h_off):int(h_off) + h, int(w_off):int(w_off) + w] = img
    window = np.array([-w_off / f32(w), -h_off / f32(h), (f32(ew) - w_off) / f32(w), (f32(eh) - h_off) / f32(h)],
                      f32)
    return canvas, window


def crop(img, box):
    h, w = img.shape[:2]
    b = clip_box(box)
    x0, y0 = int(b[0] * f32(w)), int(b[1] * f32(h))
    cw, ch = int(b[2] * f32(w) - b[0] * f32(w)), int(b[3] * f32(h) - b[1] * f32(h))
    return np.ascontiguousarray(img[y0:y0 + ch, x0:x0 + cw])


def _sample_boxes(s, n, rng):
    """n windows of the sampler's scale and aspect ratio at random places (the fork's SampleBBox)."""
    if not (0 < s.min_scale <= s.max_scale <= 1) or not (0 < s.min_aspect_ratio <= s.max_aspect_ratio):
        raise ConfigError("batch_sampler: need 0 < min_scale <= max_scale <= 1 and 0 < min_aspect_ratio <= "
                          "max_aspect_ratio (got scale %s..%s, aspect %s..%s)"
                          % (s.min_scale, s.max_scale, s.min_aspect_ratio, s.max_aspect_ratio))
    scale = rng.uniform(s.min_scale, s.max_scale, n).astype(f32)
    aspect = rng.uniform(s.min_aspect_ratio, s.max_aspect_ratio, n).astype(f32)
    aspect = np.minimum(np.maximum(aspect, scale * scale), f32(1) / (scale * scale))
    bw, bh = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
    # A window of the full side leaves 1 - side a rounding error below 0.
    x0 = (rng.random(n) * np.maximum(f32(1) - bw, 0)).astype(f32)
    y0 = (rng.random(n) * np.maximum(f32(1) - bh, 0)).astype(f32)
    return np.stack([x0, y0, x0 + bw, y0 + bh], axis=1).astype(f32)


def _pairwise(a, b):
    """(intersection, size of a, size of b) for every pair of rows of a and b."""
    a, b = a[:, None, :], b[None, :, :]
    return bbox.intersection(a, b), bbox.box_size(a), bbox.box_size(b)


def _satisfied(windows, objects, c):
    """Which windows pass the sample constraint. As the fork: a window passes
    when any object passes the first test given (its flag is set there and
    outlives a later test's failure)."""
    tests = (("min_jaccard_overlap", "max_jaccard_overlap", "jaccard"),
             ("min_sample_coverage", "max_sample_coverage", "sample"),
             ("min_object_coverage", "max_object_coverage", "object"))
    for lo, hi, kind in tests:
        if c.HasField(lo) or c.HasField(hi):
            break
    else:
        return np.ones(len(windows), bool)
    if not len(objects):
        return np.zeros(len(windows), bool)
    inter, sw, so = _pairwise(windows, np.asarray(objects, f32).reshape(-1, 4))
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "jaccard":
            v = inter / (sw + so - inter)
        elif kind == "sample":
            v = inter / sw
        else:
            v = inter / so
    v = np.where(inter > 0, v, f32(0)).astype(f32)
    ok = np.ones(v.shape, bool)
    if c.HasField(lo):
        ok &= v >= f32(getattr(c, lo))
    if c.HasField(hi):
        ok &= v <= f32(getattr(c, hi))
    return ok.any(axis=1)


def sample_windows(objects, samplers, rng):
    """Every window the batch samplers accept for an image with these object
    boxes: each sampler's max_trials windows, the first max_sample that pass."""
    windows = []
    for bs in samplers:
        if not bs.use_original_image or bs.max_trials <= 0:
            continue
        boxes = _sample_boxes(bs.sampler, int(bs.max_trials), rng)
        passed = np.flatnonzero(_satisfied(boxes, objects, bs.sample_constraint))
        if bs.HasField("max_sample"):
            passed = passed[:max(int(bs.max_sample), 0)]
        windows.extend(boxes[passed])
    return windows


# -- annotations ---------------------------------------------------------------
def groups_of(anno_datum):
    """[(group_label, [(instance_id, box, difficult), ...]), ...] of an AnnotatedDatum."""
    out = []
    for g in anno_datum.annotation_group:
        out.append((int(g.group_label),
                    [(int(a.instance_id), np.array([a.bbox.xmin, a.bbox.ymin, a.bbox.xmax, a.bbox.ymax], f32),
                      bool(a.bbox.difficult)) for a in g.annotation]))
    return out


def transform_groups(groups, window, param, img_w=0, img_h=0, resize=False, mirror=False):
    """The fork's TransformAnnotation: each box through the resize policy (when
    resize), the emit constraint, projection into window, mirror and
    extrapolation; groups left without boxes are dropped."""
    out = []
    use_resize = resize and param.HasField("resize_param")
    for label, annos in groups:
        kept = []
        for instance, box, difficult in annos:
            if use_resize:
                box = resize_box(param.resize_param, img_w, img_h, box)
            if param.HasField("emit_constraint") and not meets_emit_constraint(window, box, param.emit_constraint):
                continue
            p = project(window, box)
            if p is None:
                continue
            if mirror:
                p = np.array([f32(1) - p[2], p[1], f32(1) - p[0], p[3]], f32)
            if use_resize:
                p = extrapolate_box(param.resize_param, img_h, img_w, window, p)
            kept.append((instance, p, difficult))
        if kept:
            out.append((label, kept))
    return out


def object_boxes(groups):
    return [box for _, annos in groups for _, box, _ in annos]

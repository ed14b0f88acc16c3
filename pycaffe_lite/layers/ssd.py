"""The SSD fork's inference layers (weiliu89/caffe, branch ssd): Normalize,
Permute, PriorBox and DetectionOutput, as the fork computes them."""
import numpy as np

from .. import backend, bbox
from ..blob import Blob
from ..errors import ShapeError
from ..filler import fill
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb
from ..stdsort import sort_descending

F32 = np.float32


@register("Normalize", "NormalizeBBox")
class NormalizeLayer(Layer):
    """x / sqrt(sum x^2 + eps) * scale, the sum over each item (across_spatial)
    or over the channels of each pixel; one scale or one per channel."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.norm_param
        if bottom[0].num_axes < 2:
            raise self.error("needs a bottom of at least 2 axes, got %s" % (bottom[0].shape,), ShapeError)
        self.across, self.shared, self.eps = p.across_spatial, p.channel_shared, p.eps
        c = bottom[0].shape[1]
        self.blobs = [Blob(() if self.shared else (c,))]
        filler = p.scale_filler if p.HasField("scale_filler") else pb.FillerParameter(type="constant", value=1.0)
        fill(self.blobs[0], filler)

    def reshape(self, bottom, top):
        want = 1 if self.shared else bottom[0].shape[1]
        if self.blobs[0].count != want:
            raise self.error("its scale holds %d values; %s needs %d (channel_shared: %s)"
                             % (self.blobs[0].count, bottom[0].shape, want, self.shared), ShapeError)
        top[0].reshape_like(bottom[0])

    def _ncs(self, blob):
        s = blob.shape
        return (s[0], s[1], int(np.prod(s[2:], dtype=np.int64)))

    def _scale(self):
        s = self.blobs[0].dev_data
        return s.reshape(()) if self.shared else s.reshape(1, -1, 1)

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].dev_data.reshape(self._ncs(bottom[0]))
        y = top[0].dev_data.reshape(x.shape)
        sq = x * x
        if self.across:
            norm = xp.sqrt(sq.reshape(x.shape[0], -1).sum(axis=1) + F32(self.eps)).reshape(-1, 1, 1)
        else:
            norm = xp.sqrt(sq.sum(axis=1, keepdims=True) + F32(self.eps))
        self._norm = norm.astype(x.dtype, copy=False)
        xp.divide(x, self._norm, out=y)
        y *= self._scale()

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        shape = self._ncs(bottom[0])
        x = bottom[0].dev_data.reshape(shape)
        y = top[0].dev_data.reshape(shape)
        dy = top[0].dev_diff.reshape(shape)
        scale = self._scale()
        if self.param_propagate_down[0]:
            yd = y * dy
            if self.shared:
                self.blobs[0].dev_diff[...] += yd.sum() / scale
            else:
                self.blobs[0].dev_diff[...] += (yd.sum(axis=(0, 2)) / scale.reshape(-1)).astype(yd.dtype)
        if propagate_down[0]:
            n = self._norm
            if self.across:
                a = (x * dy).reshape(shape[0], -1).sum(axis=1).reshape(-1, 1, 1)
            else:
                a = (x * dy).sum(axis=1, keepdims=True)
            dx = (dy - x * (a / n / n)) / n
            bottom[0].dev_diff.reshape(shape)[...] = dx * scale


@register("Permute")
class PermuteLayer(Layer):
    """The axes in permute_param's order, then the unlisted ones in theirs.
    The natural order copies nothing: the top is the bottom's memory."""
    exact_bottoms = 1
    exact_tops = 1

    def layer_setup(self, bottom, top):
        n = bottom[0].num_axes
        order = []
        for a in self.param.permute_param.order:
            if a >= n:
                raise self.error("order %d is not an axis of the %d-axis bottom %s" % (a, n, bottom[0].shape))
            if a in order:
                raise self.error("axis %d is listed twice in permute_param's order" % a)
            order.append(int(a))
        self.order = tuple(order + [a for a in range(n) if a not in order])
        self.identity = self.order == tuple(range(n))

    def reshape(self, bottom, top):
        if bottom[0].num_axes != len(self.order):
            raise self.error("was set up for %d axes, got bottom %s" % (len(self.order), bottom[0].shape),
                             ShapeError)
        top[0].reshape(tuple(bottom[0].shape[a] for a in self.order))
        if self.identity:
            top[0].share_data(bottom[0])
            top[0].share_diff(bottom[0])

    def forward(self, bottom, top):
        if not self.identity:
            top[0].dev_data[...] = self.ops.permute(bottom[0].dev_data, self.order)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0] and not self.identity:
            inverse = tuple(int(i) for i in np.argsort(self.order))
            bottom[0].dev_diff[...] = self.ops.permute(top[0].dev_diff, inverse)


def unique_ratios(ratios, flip):
    """1, then each ratio not within 1e-6 of one already there (and with
    flip its inverse right after), as float32: the fork's list."""
    out = [F32(1.0)]
    for r in ratios:
        r = F32(r)
        if any(abs(float(r) - float(a)) < 1e-6 for a in out):
            continue
        out.append(r)
        if flip:
            out.append(F32(1.0 / float(r)))
    return out


@register("PriorBox")
class PriorBoxLayer(Layer):
    """Default boxes per feature-map cell, normalized by the image size, and
    their variances: top (1, 2, H * W * priors * 4). Only the bottoms'
    shapes are read."""
    min_bottoms = 1
    max_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.prior_box_param
        if not len(p.min_size):
            raise self.error("prior_box_param needs min_size (the side of the first prior, in pixels)")
        # the fork keeps the sizes in int variables
        self.min_sizes = [int(v) for v in p.min_size]
        if any(v <= 0 for v in p.min_size):
            raise self.error("min_size must be positive, got %s" % list(p.min_size))
        self.max_sizes = [int(v) for v in p.max_size]
        if self.max_sizes:
            if len(p.max_size) != len(p.min_size):
                raise self.error("max_size must be given once per min_size (%d vs %d)"
                                 % (len(p.max_size), len(p.min_size)))
            for lo, hi in zip(p.min_size, p.max_size):
                if not hi > lo:
                    raise self.error("max_size %g must be greater than its min_size %g" % (hi, lo))
        self.ratios = unique_ratios(p.aspect_ratio, p.flip)
        self.per_cell = len(self.ratios) * len(self.min_sizes) + len(self.max_sizes)
        var = list(p.variance) or [0.1]
        if len(var) not in (1, 4):
            raise self.error("variance takes 1 or 4 values, got %d" % len(var))
        if any(v <= 0 for v in var):
            raise self.error("variances must be positive, got %s" % var)
        self.variance = np.asarray(var, F32)
        if p.HasField("img_h") or p.HasField("img_w"):
            if p.HasField("img_size"):
                raise self.error("give img_size or img_h/img_w, not both")
            self.img_hw = (p.img_h, p.img_w)
        elif p.HasField("img_size"):
            self.img_hw = (p.img_size, p.img_size)
        else:
            self.img_hw = (0, 0)
        if (p.HasField("img_size") or p.HasField("img_h") or p.HasField("img_w")) and min(self.img_hw) <= 0:
            raise self.error("the image size must be positive, got %s" % (self.img_hw,))
        if p.HasField("step_h") or p.HasField("step_w"):
            if p.HasField("step"):
                raise self.error("give step or step_h/step_w, not both")
            self.step_hw = (p.step_h, p.step_w)
        elif p.HasField("step"):
            self.step_hw = (p.step, p.step)
        else:
            self.step_hw = (0.0, 0.0)
        if (p.HasField("step") or p.HasField("step_h") or p.HasField("step_w")) and min(self.step_hw) <= 0:
            raise self.error("the step must be positive, got %s" % (self.step_hw,))
        if min(self.img_hw) == 0 and len(bottom) < 2:
            raise self.error("needs the image as its second bottom, or img_size / img_h and img_w")

    def reshape(self, bottom, top):
        if bottom[0].num_axes < 4:
            raise self.error("needs a 4-axis feature map, got %s" % (bottom[0].shape,), ShapeError)
        h, w = bottom[0].shape[2:4]
        if h * w == 0:
            raise self.error("the feature map %s has no cells" % (bottom[0].shape,), ShapeError)
        top[0].reshape((1, 2, h * w * self.per_cell * 4))

    def priors(self, feature_hw, image_hw):
        """The (H * W * priors, 4) corners, clipped when asked."""
        lh, lw = feature_hw
        ih, iw = image_hw if min(self.img_hw) == 0 else self.img_hw
        if min(self.step_hw) == 0:
            step_w, step_h = F32(F32(iw) / F32(lw)), F32(F32(ih) / F32(lh))
        else:
            step_h, step_w = F32(self.step_hw[0]), F32(self.step_hw[1])
        off = F32(self.param.prior_box_param.offset)
        sizes = []                      # (w, h) of each prior of a cell, in the fork's order
        for s, lo in enumerate(self.min_sizes):
            sizes.append((F32(lo), F32(lo)))
            if self.max_sizes:
                side = F32(np.sqrt(np.float64(lo * self.max_sizes[s])))
                sizes.append((side, side))
            for r in self.ratios:
                if abs(float(r) - 1.0) < 1e-6:
                    continue
                root = np.sqrt(np.float64(r))
                sizes.append((F32(lo * root), F32(lo / root)))
        bw = np.array([s[0] for s in sizes], np.float64)
        bh = np.array([s[1] for s in sizes], np.float64)
        cx = ((np.arange(lw, dtype=F32) + off) * step_w).astype(np.float64)
        cy = ((np.arange(lh, dtype=F32) + off) * step_h).astype(np.float64)
        cx = np.broadcast_to(cx[None, :, None], (lh, lw, len(sizes)))
        cy = np.broadcast_to(cy[:, None, None], (lh, lw, len(sizes)))
        out = np.stack([(cx - bw / 2.0) / iw, (cy - bh / 2.0) / ih,
                        (cx + bw / 2.0) / iw, (cy + bh / 2.0) / ih], axis=-1).astype(F32)
        if self.param.prior_box_param.clip:
            np.clip(out, F32(0), F32(1), out=out)
        return out.reshape(-1, 4)

    def forward(self, bottom, top):
        image_hw = tuple(bottom[1].shape[2:4]) if len(bottom) > 1 else (0, 0)
        corners = self.priors(tuple(bottom[0].shape[2:4]), image_hw)
        variances = np.broadcast_to(self.variance if len(self.variance) == 4 else self.variance[:1],
                                    corners.shape)
        out = np.stack([corners.reshape(-1), np.ascontiguousarray(variances).reshape(-1)])
        top[0].dev_data[...] = self.xp.asarray(out.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        pass        # the priors do not depend on the bottoms' values


@register("DetectionOutput")
class DetectionOutputLayer(Layer):
    """Decodes each prior's offsets, keeps per class the boxes above the
    confidence threshold that survive NMS, then the keep_top_k best of an
    image. Top (1, 1, rows, 7): [image, label, score, xmin, ymin, xmax,
    ymax]. The fork runs this on the host, on the GPU too; so does this."""
    exact_bottoms = 3
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.detection_output_param
        if not p.HasField("num_classes"):
            raise self.error("detection_output_param needs num_classes")
        self.num_classes = int(p.num_classes)
        self.share = p.share_location
        self.loc_classes = 1 if self.share else self.num_classes
        self.background = p.background_label_id
        self.keep_top_k = p.keep_top_k
        self.conf_threshold = p.confidence_threshold if p.HasField("confidence_threshold") else -np.finfo(F32).max
        self.nms_threshold = p.nms_param.nms_threshold
        if self.nms_threshold < 0:
            raise self.error("nms_threshold must not be negative, got %g" % self.nms_threshold)
        self.eta = p.nms_param.eta
        if not 0 < self.eta <= 1:
            raise self.error("nms_param eta must be in (0, 1], got %g" % self.eta)
        self.top_k = p.nms_param.top_k if p.nms_param.HasField("top_k") else -1
        if p.code_type not in (bbox.CORNER, bbox.CENTER_SIZE, bbox.CORNER_SIZE):
            raise self.error("unknown code_type %d" % p.code_type)

    def reshape(self, bottom, top):
        loc, conf, prior = bottom
        if prior.num_axes < 3 or prior.shape[1] != 2:
            raise self.error("its third bottom must be PriorBox's (1, 2, priors * 4) blob, got %s"
                             % (prior.shape,), ShapeError)
        self.num_priors = prior.shape[2] // 4
        if loc.shape[0] != conf.shape[0]:
            raise self.error("loc %s and conf %s disagree on the batch" % (loc.shape, conf.shape), ShapeError)
        if loc.count_range(1) != self.num_priors * self.loc_classes * 4:
            raise self.error("loc %s does not hold %d priors x %d x 4 offsets (the priors %s)"
                             % (loc.shape, self.num_priors, self.loc_classes, prior.shape), ShapeError)
        if conf.count_range(1) != self.num_priors * self.num_classes:
            raise self.error("conf %s does not hold %d priors x num_classes %d scores: num_classes does "
                             "not match the confidence input" % (conf.shape, self.num_priors, self.num_classes),
                             ShapeError)
        # the rows are known only after the forward (the fork's fake 1 row)
        top[0].reshape((1, 1, 1, 7))

    def forward(self, bottom, top):
        p = self.param.detection_output_param
        n = bottom[0].shape[0]
        # Decoding runs on the device (the fork's DecodeBBoxesGPU); NMS and the cut on the host, as there.
        decoded = self.ops.decode_bboxes(bottom[0].dev_data.reshape(n, self.num_priors, self.loc_classes, 4),
                                         bottom[2].dev_data.reshape(2, self.num_priors, 4), p.code_type,
                                         p.variance_encoded_in_target)
        decoded = np.asarray(backend.to_host(decoded), F32)
        conf = np.asarray(backend.to_host(bottom[1].dev_data), F32).reshape(n, self.num_priors, self.num_classes)
        rows = []
        for i in range(n):
            boxes = {}
            for c in range(self.loc_classes):
                label = -1 if self.share else c
                if label == self.background:
                    continue
                boxes[label] = decoded[i, :, c]
            sizes = {label: bbox.box_size(b) for label, b in boxes.items()}
            kept = {}
            for c in range(self.num_classes):
                if c == self.background:
                    continue
                label = -1 if self.share else c
                kept[c] = bbox.nms(boxes[label], conf[i, :, c], self.conf_threshold, self.nms_threshold,
                                   self.eta, self.top_k, sizes[label])
            total = sum(len(v) for v in kept.values())
            if -1 < self.keep_top_k < total:
                pairs = [(conf[i, j, c], c, j) for c in sorted(kept) for j in kept[c]]
                # The fork's std::sort: which tied boxes the cut keeps is its order's.
                chosen = {}
                for _, c, j in sort_descending(pairs, key=lambda r: r[0])[:self.keep_top_k]:
                    chosen.setdefault(c, []).append(j)
                kept = chosen
            for c in sorted(kept):
                b = boxes[-1 if self.share else c]
                for j in kept[c]:
                    rows.append([i, c, conf[i, j, c]] + list(b[j]))
        if rows:
            out = np.asarray(rows, F32)
        else:
            out = np.full((n, 7), -1, F32)
            out[:, 0] = np.arange(n)
        top[0].reshape((1, 1) + out.shape)
        top[0].dev_data[...] = self.xp.asarray(out.reshape(top[0].shape))

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("DetectionOutput has no backward (the fork aborts); set propagate_down: false "
                             "or remove force_backward")

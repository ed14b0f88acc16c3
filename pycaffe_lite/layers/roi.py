"""Region layers of the detection forks: ROIPooling (Fast/Faster R-CNN),
PSROIPooling (R-FCN) and OpenCV's Proposal (Faster R-CNN's region
proposals). Regions arrive as rows (batch index, x1, y1, x2, y2) in image
pixels."""
import numpy as np

from .. import backend, bbox
from ..errors import ShapeError
from ..layer import Layer, register

F32 = np.float32


def _check_rois(layer, rois):
    if rois.num_axes < 2 or rois.count_range(1) != 5:
        raise layer.error("its second bottom holds regions as (R, 5) rows [batch, x1, y1, x2, y2], got %s"
                          % (rois.shape,), ShapeError)


@register("ROIPooling")
class ROIPoolingLayer(Layer):
    """Max pooling of each region (scaled by spatial_scale, corners rounded)
    over a pooled_h x pooled_w grid of its feature map; empty bins give 0.
    The fork's backward (its GPU one) sends each output's diff to the input
    that won it."""
    exact_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.roi_pooling_param
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise self.error("roi_pooling_param needs pooled_h and pooled_w > 0, got %d x %d"
                             % (p.pooled_h, p.pooled_w))
        self.pooled = (int(p.pooled_h), int(p.pooled_w))
        self.scale = F32(p.spatial_scale)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("needs a 4-axis feature map, got %s" % (bottom[0].shape,), ShapeError)
        _check_rois(self, bottom[1])
        top[0].reshape((bottom[1].shape[0], bottom[0].shape[1]) + self.pooled)

    def forward(self, bottom, top):
        y, self._argmax = self.ops.roi_pool_forward(bottom[0].dev_data, bottom[1].dev_data.reshape(-1, 5),
                                                    self.scale, self.pooled)
        top[0].dev_data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].dev_diff[...] = self.ops.roi_pool_backward(top[0].dev_diff, self._argmax,
                                                                 bottom[1].dev_data.reshape(-1, 5), bottom[0].shape)
        if propagate_down[1]:
            raise self.error("regions get no gradient; set propagate_down: false for the second bottom")

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


@register("PSROIPooling")
class PSROIPoolingLayer(Layer):
    """R-FCN's position-sensitive pooling: output channel c, bin (i, j)
    averages input channel (c * group + i) * group + j over that bin."""
    exact_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.psroi_pooling_param
        missing = [f for f in ("spatial_scale", "output_dim", "group_size") if not p.HasField(f)]
        if missing:
            raise self.error("psroi_pooling_param needs %s (required by R-FCN's fork)" % ", ".join(missing))
        if p.output_dim <= 0 or p.group_size <= 0:
            raise self.error("output_dim and group_size must be positive, got %d and %d"
                             % (p.output_dim, p.group_size))
        self.scale, self.dim, self.group = F32(p.spatial_scale), int(p.output_dim), int(p.group_size)

    def reshape(self, bottom, top):
        if bottom[0].num_axes != 4:
            raise self.error("needs a 4-axis feature map, got %s" % (bottom[0].shape,), ShapeError)
        if bottom[0].shape[1] != self.dim * self.group * self.group:
            raise self.error("the feature map has %d channels; output_dim %d x group_size %d^2 = %d needed"
                             % (bottom[0].shape[1], self.dim, self.group, self.dim * self.group ** 2), ShapeError)
        _check_rois(self, bottom[1])
        top[0].reshape((bottom[1].shape[0], self.dim, self.group, self.group))

    def forward(self, bottom, top):
        top[0].dev_data[...] = self.ops.psroi_pool_forward(bottom[0].dev_data, bottom[1].dev_data.reshape(-1, 5),
                                                           self.scale, self.dim, self.group)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].dev_diff[...] = self.ops.psroi_pool_backward(
                top[0].dev_diff, bottom[1].dev_data.reshape(-1, 5), self.scale, self.dim, self.group, bottom[0].shape)
        if propagate_down[1]:
            raise self.error("regions get no gradient; set propagate_down: false for the second bottom")

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0


def anchors(base_size, ratios, scales):
    """Faster R-CNN's reference anchors around (0, 0, base-1, base-1): per
    ratio (rounded widths and heights), per scale."""
    base = np.array([0, 0, base_size - 1, base_size - 1], np.float64)
    w, h = base[2] - base[0] + 1, base[3] - base[1] + 1
    cx, cy = base[0] + 0.5 * (w - 1), base[1] + 0.5 * (h - 1)
    out = []
    for r in ratios:
        ws = np.round(np.sqrt(w * h / r))
        hs = np.round(ws * r)
        for s in scales:
            sw, sh = ws * s, hs * s
            out.append([cx - 0.5 * (sw - 1), cy - 0.5 * (sh - 1), cx + 0.5 * (sw - 1), cy + 0.5 * (sh - 1)])
    return np.asarray(out, np.float64)


@register("Proposal")
class ProposalLayer(Layer):
    """OpenCV's Proposal layer, py-faster-rcnn's proposal_layer.py in C++:
    anchors shifted over the score map, moved by the predicted deltas,
    clipped to the image, small ones dropped, the pre_nms_topn best by
    score, NMS at nms_thresh, the post_nms_topn best. Bottoms: scores
    (1, 2A, H, W), deltas (1, 4A, H, W), image info (h, w, scale). Top:
    rows [0, x1, y1, x2, y2] (and their scores as a second top)."""
    exact_bottoms = 3
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        p = self.param.proposal_param
        ratios = list(p.ratio) or [0.5, 1.0, 2.0]
        scales = list(p.scale) or [8.0, 16.0, 32.0]
        self.anchors = anchors(p.base_size, ratios, scales)

    def reshape(self, bottom, top):
        a = len(self.anchors)
        if bottom[0].num_axes != 4 or bottom[0].shape[1] != 2 * a:
            raise self.error("scores must be (N, 2 x %d anchors, H, W), got %s" % (a, bottom[0].shape), ShapeError)
        if bottom[1].shape != (bottom[0].shape[0], 4 * a) + bottom[0].shape[2:]:
            raise self.error("deltas must be (N, 4 x %d anchors, H, W) like the scores, got %s"
                             % (a, bottom[1].shape), ShapeError)
        if bottom[2].count_range(1) < 3:
            raise self.error("image info must hold (height, width, scale), got %s" % (bottom[2].shape,), ShapeError)
        top[0].reshape((1, 5))
        if len(top) > 1:
            top[1].reshape((1, 1))

    def forward(self, bottom, top):
        p = self.param.proposal_param
        a = len(self.anchors)
        scores_all = np.asarray(backend.to_host(bottom[0].dev_data), np.float64)
        deltas_all = np.asarray(backend.to_host(bottom[1].dev_data), np.float64)
        info = np.asarray(backend.to_host(bottom[2].dev_data), np.float64).reshape(bottom[2].shape[0], -1)
        rows, kept_scores = [], []
        for n in range(scores_all.shape[0]):
            h, w = scores_all.shape[2:]
            sx, sy = np.meshgrid(np.arange(w) * p.feat_stride, np.arange(h) * p.feat_stride)
            shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
            boxes = (self.anchors[None] + shifts[:, None]).reshape(-1, 4)
            scores = scores_all[n, a:].transpose(1, 2, 0).reshape(-1)
            deltas = deltas_all[n].transpose(1, 2, 0).reshape(-1, 4)
            widths = boxes[:, 2] - boxes[:, 0] + 1.0
            heights = boxes[:, 3] - boxes[:, 1] + 1.0
            cx, cy = boxes[:, 0] + 0.5 * widths, boxes[:, 1] + 0.5 * heights
            pcx, pcy = deltas[:, 0] * widths + cx, deltas[:, 1] * heights + cy
            pw, ph = np.exp(deltas[:, 2]) * widths, np.exp(deltas[:, 3]) * heights
            props = np.stack([pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw, pcy + 0.5 * ph], axis=1)
            props[:, 0::2] = np.clip(props[:, 0::2], 0, info[n, 1] - 1)
            props[:, 1::2] = np.clip(props[:, 1::2], 0, info[n, 0] - 1)
            min_size = p.min_size * info[n, 2]
            keep = np.flatnonzero((props[:, 2] - props[:, 0] + 1 >= min_size)
                                  & (props[:, 3] - props[:, 1] + 1 >= min_size))
            props, scores = props[keep], scores[keep]
            order = np.argsort(-scores, kind="stable")[:p.pre_nms_topn] if p.pre_nms_topn > 0 else \
                np.argsort(-scores, kind="stable")
            props, scores = props[order], scores[order]
            keep = bbox.nms(props.astype(F32), scores.astype(F32), -np.inf, p.nms_thresh,
                            sizes=bbox.box_size(props.astype(F32), normalized=False), normalized=False)
            if p.post_nms_topn > 0:
                keep = keep[:p.post_nms_topn]
            rows.extend([[n] + list(props[k]) for k in keep])
            kept_scores.extend(scores[keep])
        out = np.asarray(rows, F32).reshape(-1, 5)
        top[0].reshape(out.shape)
        top[0].dev_data[...] = self.xp.asarray(out)
        if len(top) > 1:
            top[1].reshape((len(kept_scores), 1))
            top[1].dev_data[...] = self.xp.asarray(np.asarray(kept_scores, F32).reshape(-1, 1))

    def backward(self, top, propagate_down, bottom):
        pass        # proposals carry no gradient, as in py-faster-rcnn

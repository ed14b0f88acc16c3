"""Box arithmetic of the detection layers (DetectionOutput, MultiBoxLoss,
DetectionEvaluate, Proposal) and of annotated data: sizes, overlaps, the
prior-relative codes, non-maximum suppression, matching, average precision.

Boxes are float32 arrays (..., 4) of (xmin, ymin, xmax, ymax). The SSD fork
keeps boxes in float protobuf fields and computes in float, with some steps
in double (halving a width, dividing by an image size); each function here
rounds where the fork's does, so that the same inputs give the same
decisions (which box survives NMS, which prior matches)."""
import numpy as np

from .proto import caffe_pb2 as pb

F32 = np.float32
CORNER = pb.PriorBoxParameter.CORNER
CENTER_SIZE = pb.PriorBoxParameter.CENTER_SIZE
CORNER_SIZE = pb.PriorBoxParameter.CORNER_SIZE


def box_size(boxes, normalized=True):
    """Areas; 0 for a box whose max is below its min. Unnormalized (pixel)
    boxes count both ends (+1 on each side), as the fork does."""
    boxes = np.asarray(boxes, F32)
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    if not normalized:
        w, h = w + F32(1), h + F32(1)
    bad = (boxes[..., 2] < boxes[..., 0]) | (boxes[..., 3] < boxes[..., 1])
    return np.where(bad, F32(0), w * h).astype(F32)


def intersection(a, b, normalized=True):
    """Areas where boxes a and b meet (0 where they do not), broadcast over
    their leading axes; unnormalized boxes count both ends, as the fork does."""
    apart = ((b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1]))
    w = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    h = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    if not normalized:
        w, h = w + F32(1), h + F32(1)
    return np.where(~apart & (w > 0) & (h > 0), w * h, F32(0)).astype(F32)


def _jaccard(inter, size_a, size_b):
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (size_a + size_b - inter)
    return np.where(inter > 0, iou, F32(0)).astype(F32)


def overlaps(box, boxes, size=None, sizes=None, normalized=True):
    """Jaccard overlap of one box with each of `boxes` (their areas may be
    given, as the fork carries a box's size along with it)."""
    box = np.asarray(box, F32)
    boxes = np.asarray(boxes, F32)
    size = box_size(box, normalized) if size is None else F32(size)
    sizes = box_size(boxes, normalized) if sizes is None else sizes
    return _jaccard(intersection(box, boxes, normalized), size, sizes)


def overlap_matrix(a, b, normalized=True):
    """Jaccard overlaps (len(a), len(b)) of two sets of boxes."""
    a = np.asarray(a, F32).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, F32).reshape(-1, 4)[None, :, :]
    return _jaccard(intersection(a, b, normalized), box_size(a, normalized), box_size(b, normalized))


def decode(priors, variances, loc, code_type, variance_in_target):
    """Boxes from offsets `loc` (..., P, 4) against priors (P, 4) with their
    variances (P, 4), in the fork's arithmetic (not clipped)."""
    priors = np.asarray(priors, F32)
    var = np.asarray(variances, F32)
    loc = np.asarray(loc, F32)
    if variance_in_target:
        var = np.ones_like(var)
    if code_type == CORNER:
        if variance_in_target:
            return (priors + loc).astype(F32)
        return (priors + var * loc).astype(F32)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if code_type == CORNER_SIZE:
        scale = np.stack([pw, ph, pw, ph], axis=-1)
        if variance_in_target:
            return (priors + loc * scale).astype(F32)
        return (priors + var * loc * scale).astype(F32)
    if code_type != CENTER_SIZE:
        raise ValueError("unknown code_type %r" % (code_type,))
    pcx = ((priors[:, 0] + priors[:, 2]).astype(np.float64) / 2.0).astype(F32)
    pcy = ((priors[:, 1] + priors[:, 3]).astype(np.float64) / 2.0).astype(F32)
    if variance_in_target:
        cx = loc[..., 0] * pw + pcx
        cy = loc[..., 1] * ph + pcy
        w = np.exp(loc[..., 2]) * pw
        h = np.exp(loc[..., 3]) * ph
    else:
        cx = var[:, 0] * loc[..., 0] * pw + pcx
        cy = var[:, 1] * loc[..., 1] * ph + pcy
        with np.errstate(over="ignore"):
            w = np.exp(var[:, 2] * loc[..., 2]) * pw
            h = np.exp(var[:, 3] * loc[..., 3]) * ph
    cx, cy, w, h = (a.astype(np.float64) for a in (cx, cy, w, h))
    return np.stack([cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0], axis=-1).astype(F32)


def encode(priors, variances, boxes, code_type, variance_in_target):
    """The offsets that decode to `boxes` (P, 4) from their priors (P, 4)."""
    priors = np.asarray(priors, F32)
    var = np.asarray(variances, F32)
    boxes = np.asarray(boxes, F32)
    if code_type == CORNER:
        d = boxes - priors
        return d if variance_in_target else (d / var).astype(F32)
    pw = priors[:, 2] - priors[:, 0]
    ph = priors[:, 3] - priors[:, 1]
    if code_type == CORNER_SIZE:
        d = (boxes - priors) / np.stack([pw, ph, pw, ph], axis=-1)
        return d.astype(F32) if variance_in_target else (d / var).astype(F32)
    pcx = ((priors[:, 0] + priors[:, 2]).astype(np.float64) / 2.0).astype(F32)
    pcy = ((priors[:, 1] + priors[:, 3]).astype(np.float64) / 2.0).astype(F32)
    bw = boxes[:, 2] - boxes[:, 0]
    bh = boxes[:, 3] - boxes[:, 1]
    bcx = ((boxes[:, 0] + boxes[:, 2]).astype(np.float64) / 2.0).astype(F32)
    bcy = ((boxes[:, 1] + boxes[:, 3]).astype(np.float64) / 2.0).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.stack([(bcx - pcx) / pw, (bcy - pcy) / ph,
                        np.log((bw / pw).astype(F32)), np.log((bh / ph).astype(F32))], axis=-1).astype(F32)
    return out if variance_in_target else (out / var).astype(F32)


def top_scores(scores, threshold, top_k):
    """Indices of the scores strictly above threshold, by decreasing score
    (ties in index order), the first top_k of them (all when top_k < 0)."""
    scores = np.asarray(scores, F32)
    idx = np.flatnonzero(scores > threshold)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    if top_k is not None and top_k > -1:
        idx = idx[:top_k]
    return idx


def nms(boxes, scores, score_threshold, nms_threshold, eta=1.0, top_k=-1, sizes=None, normalized=True):
    """The fork's ApplyNMSFast: greedy over the top_k boxes above the score
    threshold; a box is kept when its overlap with every kept box is at most
    the threshold, which (eta < 1) shrinks by eta after each keep while it
    is above 0.5. Returns the kept indices, best first. Pixel boxes
    (normalized False) count both ends, as Faster R-CNN's NMS does."""
    boxes = np.asarray(boxes, F32)
    sizes = box_size(boxes, normalized) if sizes is None else sizes
    order = top_scores(scores, score_threshold, top_k)
    if not len(order):
        return order
    threshold = F32(nms_threshold)
    kept = []
    if eta >= 1:
        # a fixed threshold: a kept box removes what it overlaps, at once
        alive = np.ones(len(order), bool)
        cand, csize = boxes[order], sizes[order]
        for i in range(len(order)):
            if not alive[i]:
                continue
            kept.append(order[i])
            rest = np.flatnonzero(alive[i + 1:]) + i + 1
            if len(rest):
                iou = overlaps(cand[i], cand[rest], csize[i], csize[rest], normalized)
                alive[rest[iou > threshold]] = False
        return np.asarray(kept, np.int64)
    for i in order:
        if kept:
            iou = overlaps(boxes[i], boxes[kept], sizes[i], sizes[kept], normalized)
            keep = bool(np.all(iou <= threshold))
        else:
            keep = True
        if keep:
            kept.append(i)
            if threshold > 0.5:
                threshold = F32(threshold * F32(eta))
    return np.asarray(kept, np.int64)


def match(gt, preds, match_type, threshold, gt_labels=None, label=-1, ignore_cross_boundary=False):
    """The fork's MatchBBox: gt boxes (G, 4) to predictions or priors
    (P, 4). Bipartite first (repeatedly the largest remaining overlap, the
    lowest prediction then the lowest box on ties), then, for
    PER_PREDICTION, each still unmatched prediction to its best box at or
    above the threshold. With a label, only boxes of that label take part.
    Returns (indices into gt or -1 (-2: crosses the image boundary),
    each prediction's largest overlap)."""
    preds = np.asarray(preds, F32).reshape(-1, 4)
    n = len(preds)
    index = np.full(n, -1, np.int64)
    best = np.zeros(n, F32)
    gt = np.asarray(gt, F32).reshape(-1, 4)
    pool = np.arange(len(gt)) if label == -1 else np.flatnonzero(np.asarray(gt_labels) == label)
    if not len(pool):
        return index, best
    over = overlap_matrix(preds, gt[pool])             # (P, G'): prediction first, as the fork
    if ignore_cross_boundary:
        cross = (preds < 0).any(axis=1) | (preds > 1).any(axis=1)
        index[cross] = -2
        over[cross] = 0
    stored = over > F32(1e-6)
    best = np.where(stored, over, F32(0)).max(axis=1).astype(F32)
    work = np.where(stored, over, -np.inf).astype(np.float64)
    free_gt = np.ones(len(pool), bool)
    for _ in range(len(pool)):
        masked = np.where((index == -1)[:, None] & free_gt[None, :], work, -np.inf)
        k = int(np.argmax(masked))
        i, j = divmod(k, len(pool))
        if not np.isfinite(masked[i, j]):
            break
        index[i] = pool[j]
        best[i] = over[i, j]
        free_gt[j] = False
    if match_type == pb.MultiBoxLossParameter.PER_PREDICTION:
        ok = stored & (over >= F32(threshold))
        rows = np.flatnonzero((index == -1) & ok.any(axis=1))
        if len(rows):
            cand = np.where(ok[rows], over[rows], -np.inf)
            j = np.argmax(cand, axis=1)
            index[rows] = pool[j]
            best[rows] = over[rows, j]
    return index, best


def nms_keep_k(boxes, scores, threshold, top_k, sizes=None):
    """The fork's ApplyNMS (hard example mining): the top_k best scores
    (all when top_k < 0; none for 0), boxes of area under 1e-5 passed over,
    each kept box removing those overlapping it above the threshold, until
    top_k are kept."""
    boxes = np.asarray(boxes, F32).reshape(-1, 4)
    sizes = box_size(boxes) if sizes is None else sizes
    order = np.argsort(-np.asarray(scores, F32), kind="stable")
    if top_k > -1:
        order = order[:top_k]
    alive = list(order[sizes[order] >= F32(1e-5)])
    kept = []
    while alive:
        b = alive.pop(0)
        kept.append(b)
        if top_k > -1 and len(kept) >= top_k:
            break
        if alive:
            rest = np.asarray(alive)
            iou = overlaps(boxes[b], boxes[rest], sizes[b], sizes[rest])
            alive = list(rest[~(iou > F32(threshold))])
    return np.asarray(kept, np.int64)

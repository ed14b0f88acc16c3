"""The detection forks' training layers: SmoothL1Loss (SSD's and Faster
R-CNN's), SSD's MultiBoxLoss and DetectionEvaluate."""
import numpy as np

from .. import backend, bbox
from ..errors import ShapeError
from ..kernels.cpu import logistic_loss
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb
from ..stdsort import first_descending, sort_descending


@register("SmoothL1Loss")
class SmoothL1LossLayer(Layer):
    """sum(f(w_in * (p - t)) * w_out) / N with f(d) = 0.5 sigma^2 d^2 where
    |d| < 1 / sigma^2, else |d| - 0.5 / sigma^2. Two bottoms (prediction,
    target) as in SSD's fork, where sigma is 1; Faster R-CNN's fork adds
    smooth_l1_loss_param's sigma and inside and outside weights (both, as
    third and fourth bottoms). N is the first axis."""
    min_bottoms = 2
    max_bottoms = 4
    exact_tops = 1
    default_loss_weight = 1.0

    def layer_setup(self, bottom, top):
        if len(bottom) == 3:
            raise self.error("takes inside and outside weights together (4 bottoms), or none (2), got 3")
        self.sigma2 = np.float32(self.param.smooth_l1_loss_param.sigma) ** 2
        if not self.sigma2 > 0:
            raise self.error("smooth_l1_loss_param sigma must not be 0")

    def reshape(self, bottom, top):
        for b in bottom[1:]:
            if b.count != bottom[0].count:
                raise self.error("bottoms must hold as many values as the prediction %s, got %s"
                                 % (bottom[0].shape, b.shape), ShapeError)
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        d = bottom[0].dev_data - bottom[1].dev_data.reshape(bottom[0].shape)
        if len(bottom) == 4:
            d = d * bottom[2].dev_data.reshape(d.shape)
        self._d = d
        a = xp.abs(d)
        inv = np.float32(1) / self.sigma2
        err = xp.where(a < inv, np.float32(0.5) * self.sigma2 * d * d, a - np.float32(0.5) * inv)
        if len(bottom) == 4:
            err = err * bottom[3].dev_data.reshape(d.shape)
        n = max(bottom[0].shape[0] if bottom[0].num_axes else 1, 1)
        top[0].dev_data[...] = xp.abs(err).sum() / n

    def backward(self, top, propagate_down, bottom):
        xp = self.xp
        d = self._d
        inv = np.float32(1) / self.sigma2
        g = xp.where(xp.abs(d) < inv, self.sigma2 * d, xp.sign(d))
        n = max(bottom[0].shape[0] if bottom[0].num_axes else 1, 1)
        scale = top[0].dev_diff.reshape(()) / n
        if len(bottom) == 4:
            g = g * bottom[2].dev_data.reshape(d.shape) * bottom[3].dev_data.reshape(d.shape)
        for i, sign in ((0, 1), (1, -1)):
            if propagate_down[i]:
                bottom[i].dev_diff[...] = (g * (scale * np.float32(sign))).reshape(bottom[i].shape)

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2


FLT_MIN = np.float32(np.finfo(np.float32).tiny)
MBL = pb.MultiBoxLossParameter


def ground_truth(rows, background, use_difficult, stop_at_missing=False):
    """{image: [(label, box, difficult)]} from (G, 8) rows [image, label,
    instance, xmin, ymin, xmax, ymax, difficult]; rows of image -1 are
    skipped (MultiBoxLoss) or end the list (DetectionEvaluate)."""
    out = {}
    for r in np.asarray(rows, np.float32).reshape(-1, 8):
        item = int(r[0])
        if item == -1:
            if stop_at_missing:
                break
            continue
        label = int(r[1])
        if label == background:
            raise ValueError("a ground-truth box has the background label %d" % label)
        difficult = bool(r[7])
        if difficult and not use_difficult:
            continue
        out.setdefault(item, []).append((label, r[3:7].copy(), difficult))
    return out


@register("MultiBoxLoss")
class MultiBoxLossLayer(Layer):
    """SSD's loss: priors matched to ground truth, negatives mined, a
    localisation loss (SmoothL1 or L2, times loc_weight) over the matches
    and a confidence loss (softmax or logistic) over matches and mined
    negatives, both divided by the normalizer. The matching and mining run
    on the host in float, as in the fork. Bottoms: loc (N, P * 4), conf
    (N, P * C), priors (1, 2, P * 4), ground truth (1, 1, G, 8)."""
    exact_bottoms = 4
    exact_tops = 1
    default_loss_weight = 1.0

    def layer_setup(self, bottom, top):
        p = self.param.multibox_loss_param
        if not p.HasField("num_classes") or p.num_classes < 1:
            raise self.error("multibox_loss_param needs num_classes (at least 1)")
        self.p = p
        self.classes = int(p.num_classes)
        self.share = p.share_location
        self.loc_classes = 1 if self.share else self.classes
        self.background = int(p.background_label_id)
        self.mining = p.mining_type
        if p.HasField("do_neg_mining") and p.do_neg_mining != (self.mining != MBL.NONE):
            raise self.error("do_neg_mining (deprecated) disagrees with mining_type")
        if self.mining != MBL.NONE and not self.share:
            raise self.error("negative mining needs share_location: true")
        if p.conf_loss_type == MBL.SOFTMAX and not 0 <= self.background < self.classes:
            raise self.error("background_label_id must be in [0, num_classes) for a softmax confidence loss")
        lp = self.param.loss_param
        if not lp.HasField("normalization") and lp.HasField("normalize"):
            self.normalization = pb.LossParameter.VALID if lp.normalize else pb.LossParameter.BATCH_SIZE
        else:
            self.normalization = lp.normalization
        # which terms the loss holds: the layer's own propagate_down (the fork's default: loc and conf)
        given = list(self.param.propagate_down)
        self.terms = (given + [False] * 4)[:2] if given else [True, True]

    def reshape(self, bottom, top):
        loc, conf, prior, gt = bottom
        self.num_priors = prior.shape[2] // 4 if prior.num_axes >= 3 else 0
        if prior.num_axes < 3 or prior.shape[1] != 2:
            raise self.error("its third bottom must be PriorBox's (1, 2, priors * 4) blob, got %s"
                             % (prior.shape,), ShapeError)
        if loc.count_range(1) != self.num_priors * self.loc_classes * 4:
            raise self.error("loc %s does not hold %d priors x %d x 4 offsets" %
                             (loc.shape, self.num_priors, self.loc_classes), ShapeError)
        if conf.count_range(1) != self.num_priors * self.classes:
            raise self.error("conf %s does not hold %d priors x num_classes %d scores" %
                             (conf.shape, self.num_priors, self.classes), ShapeError)
        if gt.count % 8:
            raise self.error("ground truth must be rows of 8 values, got %s" % (gt.shape,), ShapeError)
        top[0].reshape(())

    # -- matching and mining (host, float) -----------------------------------
    def _matches(self, loc, priors, var, gts):
        """[{label: (indices (P,), overlaps (P,))}] per image."""
        p = self.p
        out = []
        for i in range(loc.shape[0]):
            m = {}
            if i in gts:
                boxes = np.stack([g[1] for g in gts[i]])
                labels = np.array([g[0] for g in gts[i]])
                if not p.use_prior_for_matching:
                    for c in range(self.loc_classes):
                        label = -1 if self.share else c
                        if not self.share and label == self.background:
                            continue
                        dec = bbox.decode(priors, var, loc[i, :, c], p.code_type, p.encode_variance_in_target)
                        m[label] = list(bbox.match(boxes, dec, p.match_type, p.overlap_threshold, labels, label,
                                                   p.ignore_cross_boundary_bbox))
                else:
                    idx, ov = bbox.match(boxes, priors, p.match_type, p.overlap_threshold,
                                         ignore_cross_boundary=p.ignore_cross_boundary_bbox)
                    if self.share:
                        m[-1] = [idx, ov]
                    else:
                        for c in range(self.loc_classes):
                            if c == self.background:
                                continue
                            keep = (idx > -1) & (labels[np.maximum(idx, 0)] == c)
                            m[c] = [np.where(keep, idx, -1), ov.copy()]
            out.append(m)
        return out

    def _conf_loss(self, conf, matches, gts):
        """Per image, each prior's confidence loss for its label (the matched
        box's, else the background): labels on the host, the loss where conf
        lives (the fork's ComputeConfLossGPU on the device)."""
        labels = np.full((len(matches), self.num_priors), self.background, np.int32)
        for i in range(len(matches)):
            done = np.zeros(self.num_priors, bool)
            for idx, _ in matches[i].values():
                hit = (idx > -1) & ~done
                labels[i, hit] = [gts[i][k][0] for k in idx[hit]]
                done |= hit
        loss = self.ops.mbox_conf_loss(conf, labels, self.p.conf_loss_type == MBL.SOFTMAX)
        return list(np.asarray(backend.to_host(loss), np.float32))

    def _encode(self, loc, priors, var, matches, gts):
        """(predictions, targets) (M, 4) of the matched priors, in the fork's order."""
        p = self.p
        preds, targets = [], []
        for i, m in enumerate(matches):
            for label, (idx, _) in m.items():
                slot = 0 if self.share else label
                js = np.flatnonzero(idx > -1)
                if not len(js):
                    continue
                gtb = np.stack([gts[i][k][1] for k in idx[js]])
                enc = bbox.encode(priors[js], var[js], gtb, p.code_type, p.encode_variance_in_target)
                pred = loc[i, js, slot].copy()
                if p.bp_inside:
                    ref = priors[js] if p.use_prior_for_matching else bbox.decode(
                        priors[js], var[js], pred, p.code_type, p.encode_variance_in_target)
                    out = (ref < 0) | (ref > 1)
                    pred = np.where(out, enc, pred)
                if p.encode_variance_in_target:
                    pred, enc = pred / var[js], enc / var[js]
                preds.append(pred)
                targets.append(enc)
        if not preds:
            return np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32)
        return np.concatenate(preds).astype(np.float32), np.concatenate(targets).astype(np.float32)

    def _mine(self, conf, loc, priors, var, matches, gts):
        """Negatives per image, and (HARD_EXAMPLE) matches dropped in place."""
        p = self.p
        negs = [[] for _ in range(conf.shape[0])]
        if self.mining == MBL.NONE:
            return negs
        conf_loss = self._conf_loss(conf, matches, gts)
        if self.mining == MBL.HARD_EXAMPLE:
            pred, target = self._encode(loc, priors, var, matches, gts)
            d = pred - target
            if p.loc_loss_type == MBL.SMOOTH_L1:
                per = np.where(np.abs(d) < 1, np.float32(0.5) * d * d, np.abs(d) - np.float32(0.5))
            else:
                per = np.float32(0.5) * d * d
            per = per.sum(axis=1)
        count = 0
        has_nms = p.HasField("nms_param")
        nms_threshold = p.nms_param.nms_threshold if has_nms else 0.0
        top_k = p.nms_param.top_k if has_nms else -1
        for i, m in enumerate(matches):
            loc_loss = np.zeros(self.num_priors, np.float32)
            if self.mining == MBL.HARD_EXAMPLE:
                for label, (idx, _) in m.items():
                    js = np.flatnonzero(idx > -1)
                    loc_loss[js] = per[count:count + len(js)]
                    count += len(js)
            loss = (conf_loss[i] + loc_loss).astype(np.float32)
            for label, (idx, ov) in m.items():
                if self.mining == MBL.MAX_NEGATIVE:
                    eligible = np.flatnonzero((idx == -1) & (ov < np.float32(p.neg_overlap)))
                    num_sel = min(int(np.float32((idx > -1).sum()) * np.float32(p.neg_pos_ratio)), len(eligible))
                else:
                    if p.sample_size <= 0:
                        raise self.error("HARD_EXAMPLE mining needs sample_size > 0")
                    eligible = np.arange(self.num_priors)
                    num_sel = min(p.sample_size, len(eligible))
                if has_nms and nms_threshold > 0:
                    boxes = priors if p.use_prior_for_nms else bbox.decode(
                        priors, var, loc[i, :, 0 if self.share else label], p.code_type, p.encode_variance_in_target)
                    kept = bbox.nms_keep_k(boxes[eligible], loss[eligible], nms_threshold, top_k)
                    num_sel = min(len(kept), num_sel)
                    chosen = set(eligible[kept[:num_sel]].tolist())
                else:
                    # The fork's std::sort decides which of tied losses make the cut.
                    order = first_descending(loss[eligible].tolist(), num_sel)
                    chosen = set(eligible[order].tolist()) if order else set()
                for j in range(self.num_priors):
                    if idx[j] > -1:
                        if self.mining == MBL.HARD_EXAMPLE and j not in chosen:
                            idx[j] = -1
                    elif idx[j] == -1 and j in chosen:
                        negs[i].append(j)
        return negs

    # -- the loss ----------------------------------------------------------------
    def forward(self, bottom, top):
        p = self.p
        n = bottom[0].shape[0]
        host = lambda b: np.asarray(backend.to_host(b.dev_data), np.float32)
        loc = host(bottom[0]).reshape(n, self.num_priors, self.loc_classes, 4)
        conf = host(bottom[1]).reshape(n, self.num_priors, self.classes)
        prior = host(bottom[2]).reshape(2, self.num_priors, 4)
        priors, var = prior[0], prior[1]
        try:
            gts = ground_truth(host(bottom[3]), self.background, p.use_difficult_gt)
        except ValueError as e:
            raise self.error(str(e)) from None
        matches = self._matches(loc, priors, var, gts)
        # Mining's confidence loss reads conf where it lives (on the device in GPU mode).
        negs = self._mine(bottom[1].dev_data.reshape(conf.shape), loc, priors, var, matches, gts)
        self._matches_kept, self._negs = matches, negs
        self.num_matches = sum(int((idx > -1).sum()) for m in matches for idx, _ in m.values())
        loc_loss = 0.0
        self._loc_pred = None
        if self.num_matches >= 1:
            pred, target = self._encode(loc, priors, var, matches, gts)
            d = pred - target
            if p.loc_loss_type == MBL.SMOOTH_L1:
                a = np.abs(d)
                loc_loss = float(np.where(a < 1, np.float32(0.5) * d * d, a - np.float32(0.5)).astype(np.float32).sum())
                self._loc_grad = np.where(a < 1, d, np.sign(d)).astype(np.float32)
            else:
                loc_loss = float(np.dot(d.ravel(), d.ravel()) / np.float32(2))
                self._loc_grad = d
        rows, labels = self._conf_rows(conf, matches, negs, gts)
        conf_loss = 0.0
        self._conf_grad = None
        if len(rows):
            x = conf.reshape(-1, self.classes)[rows]
            if p.conf_loss_type == MBL.SOFTMAX:
                e = np.exp(x - x.max(axis=1, keepdims=True))
                prob = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
                picked = prob[np.arange(len(rows)), labels]
                conf_loss = float(-np.log(np.maximum(picked, FLT_MIN)).astype(np.float32).sum())
                grad = prob.copy()
                grad[np.arange(len(rows)), labels] -= 1
            else:
                target = labels
                conf_loss = float(logistic_loss(x, target).sum())
                grad = (np.float32(1) / (np.float32(1) + np.exp(-x)) - target).astype(np.float32)
            self._conf_grad = (rows, grad)
        self.normalizer = self._normalizer(n)
        total = 0.0
        if self.terms[0]:
            total += p.loc_weight * loc_loss / self.normalizer
        if self.terms[1]:
            total += conf_loss / self.normalizer
        top[0].dev_data[...] = np.float32(total)

    def _conf_rows(self, conf, matches, negs, gts):
        """The confidence rows (into conf as (N * P, C)) the loss covers and
        their targets: class ids (softmax) or one-hot rows (logistic)."""
        p = self.p
        n, c = conf.shape[0], self.classes
        logistic = p.conf_loss_type == MBL.LOGISTIC
        if self.mining != MBL.NONE:
            rows, labels, negative = [], [], []
            for i, m in enumerate(matches):
                if i in gts:
                    for idx, _ in m.values():
                        for j in np.flatnonzero(idx > -1):
                            rows.append(i * self.num_priors + j)
                            labels.append(self._gt_label(gts[i][idx[j]][0]))
                            negative.append(False)
                for j in negs[i]:
                    rows.append(i * self.num_priors + j)
                    labels.append(self.background)
                    negative.append(True)
            rows, labels, negative = (np.asarray(v, t) for v, t in ((rows, np.int64), (labels, np.int64),
                                                                      (negative, bool)))
            if not logistic:
                return rows, labels
            target = np.full((len(rows), c), self.background, np.float32)    # the fork fills with the background id
            pos = np.flatnonzero(~negative)
            target[pos, labels[pos]] = 1
            if 0 <= self.background < c:
                target[np.flatnonzero(negative), self.background] = 1
            return rows, target
        rows = np.arange(n * self.num_priors)
        if not logistic:
            labels = np.full(n * self.num_priors, self.background, np.int64)
            for i, m in enumerate(matches):
                for idx, _ in m.values():
                    for j in np.flatnonzero(idx > -1):
                        labels[i * self.num_priors + j] = self._gt_label(gts[i][idx[j]][0])
            return rows, labels
        # the fork advances the logistic targets by P values, not P rows, per image
        flat = np.full(n * self.num_priors * c, self.background, np.float32)
        for i, m in enumerate(matches):
            for idx, _ in m.values():
                for j in np.flatnonzero(idx > -1):
                    flat[i * self.num_priors + j * c + self._gt_label(gts[i][idx[j]][0])] = 1
        return rows, flat.reshape(-1, c)

    def _gt_label(self, label):
        return self.background + 1 if self.p.map_object_to_agnostic else label

    def _normalizer(self, n):
        norm = self.normalization
        if norm == pb.LossParameter.FULL:
            v = n * self.num_priors
        elif norm == pb.LossParameter.VALID:
            v = self.num_matches
        elif norm == pb.LossParameter.BATCH_SIZE:
            v = n
        else:
            v = 1
        return max(1.0, float(np.float32(v)))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2] or propagate_down[3]:
            raise self.error("cannot backpropagate to the priors or the ground truth; set propagate_down: "
                             "false for them")
        scale = np.float32(float(backend.to_host(top[0].dev_diff).reshape(())) / self.normalizer)
        n = bottom[0].shape[0]
        if propagate_down[0]:
            d = np.zeros((n, self.num_priors, self.loc_classes, 4), np.float32)
            if self.num_matches >= 1:
                g = self._loc_grad * np.float32(self.p.loc_weight) * scale
                k = 0
                for i, m in enumerate(self._matches_kept):
                    for label, (idx, _) in m.items():
                        js = np.flatnonzero(idx > -1)
                        d[i, js, 0 if self.share else label] = g[k:k + len(js)]
                        k += len(js)
            bottom[0].dev_diff[...] = self.xp.asarray(d.reshape(bottom[0].shape))
        if propagate_down[1]:
            d = np.zeros((n * self.num_priors, self.classes), np.float32)
            if self._conf_grad is not None:
                rows, grad = self._conf_grad
                d[rows] = grad * scale
            bottom[1].dev_diff[...] = self.xp.asarray(d.reshape(bottom[1].shape))

    def allow_force_backward(self, bottom_index):
        return bottom_index < 2


@register("DetectionEvaluate")
class DetectionEvaluateLayer(Layer):
    """Detections against ground truth, as the fork's solver wants them for
    mAP: one row [-1, label, positives, -1, -1] per class, then per image
    and label the detections by decreasing score with [image, label, score,
    true positive, false positive]."""
    exact_bottoms = 2
    exact_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.detection_evaluate_param
        if not p.HasField("num_classes"):
            raise self.error("detection_evaluate_param needs num_classes")
        if not p.overlap_threshold > 0:
            raise self.error("overlap_threshold must be positive, got %g" % p.overlap_threshold)
        self.sizes = []
        if p.HasField("name_size_file"):
            try:
                with open(p.name_size_file) as f:
                    words = f.read().split()
            except OSError as e:
                raise self.error("cannot read name_size_file %s: %s" % (p.name_size_file, e.strerror)) from None
            try:
                self.sizes = [(int(words[k + 1]), int(words[k + 2])) for k in range(0, len(words) - 2, 3)]
            except ValueError:
                raise self.error("name_size_file %s must hold lines 'name height width'" % p.name_size_file) \
                    from None
        self.count = 0

    def reshape(self, bottom, top):
        det, gt = bottom
        if det.num_axes != 4 or det.shape[:2] != (1, 1) or det.shape[3] != 7:
            raise self.error("detections must be DetectionOutput's (1, 1, D, 7), got %s" % (det.shape,), ShapeError)
        if gt.num_axes != 4 or gt.shape[:2] != (1, 1) or gt.shape[3] != 8:
            raise self.error("ground truth must be (1, 1, G, 8), got %s" % (gt.shape,), ShapeError)
        p = self.param.detection_evaluate_param
        classes = p.num_classes - (0 if p.background_label_id == -1 else 1)
        valid = int((np.asarray(backend.to_host(det.dev_data)).reshape(-1, 7)[:, 1] != -1).sum())
        top[0].reshape((1, 1, classes + valid, 5))

    def forward(self, bottom, top):
        p = self.param.detection_evaluate_param
        bg = p.background_label_id
        det = np.asarray(backend.to_host(bottom[0].dev_data), np.float32).reshape(-1, 7)
        dets = {}
        for r in det:
            if int(r[0]) == -1:
                continue
            if int(r[1]) == bg:
                raise self.error("a detection has the background label %d" % bg)
            dets.setdefault(int(r[0]), {}).setdefault(int(r[1]), []).append(r)
        try:
            gts = ground_truth(backend.to_host(bottom[1].dev_data), bg, True, stop_at_missing=True)
        except ValueError as e:
            raise self.error(str(e)) from None
        positives = {}
        for boxes in gts.values():
            for label, _, difficult in boxes:
                positives[label] = positives.get(label, 0) + (1 if p.evaluate_difficult_gt or not difficult else 0)
        rows = [[-1, c, positives.get(c, 0), -1, -1] for c in range(p.num_classes) if c != bg]
        pixel = bool(self.sizes)
        for image in sorted(dets):
            for label in sorted(dets[image]):
                if label == -1:
                    continue
                found = dets[image][label]
                truth = [(b, d) for lab, b, d in gts.get(image, []) if lab == label]
                if not truth:
                    rows += [[image, label, r[2], 0, 1] for r in found]
                    continue
                found = sort_descending(found, key=lambda r: r[2])     # std::sort, as the fork
                boxes = np.stack([b for b, _ in truth])
                cand = np.stack([r[3:7] for r in found])
                if pixel:
                    h, w = self.sizes[self.count]
                    boxes, cand = _to_pixels(boxes, h, w), _to_pixels(cand, h, w)
                gsize = bbox.box_size(boxes, not pixel)
                taken = np.zeros(len(truth), bool)
                for r, c in zip(found, cand):
                    ov = bbox.overlaps(c, boxes, bbox.box_size(c, not pixel), gsize, not pixel)
                    j = int(np.argmax(ov))
                    if ov[j] >= np.float32(p.overlap_threshold):
                        if p.evaluate_difficult_gt or not truth[j][1]:
                            if not taken[j]:
                                rows.append([image, label, r[2], 1, 0])
                                taken[j] = True
                            else:
                                rows.append([image, label, r[2], 0, 1])
                        else:
                            rows.append([image, label, r[2], 0, 0])
                    else:
                        rows.append([image, label, r[2], 0, 1])
            if self.sizes:
                self.count = (self.count + 1) % len(self.sizes)
        out = np.asarray(rows, np.float32).reshape(1, 1, -1, 5)
        top[0].reshape(out.shape)
        top[0].dev_data[...] = self.xp.asarray(out)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("DetectionEvaluate has no backward; set propagate_down: false or remove force_backward")


def _to_pixels(boxes, h, w):
    """Boxes clipped to [0, 1] and scaled to an h x w image (the fork's OutputBBox)."""
    b = np.clip(np.asarray(boxes, np.float32), 0, 1)
    return (b * np.array([w, h, w, h], np.float32)).astype(np.float32)

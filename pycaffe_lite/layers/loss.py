"""Softmax, the loss layers, and Accuracy."""
import numpy as np

from ..errors import ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb

LP = pb.LossParameter


def _softmax(xp, x, axis):
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


@register("Softmax")
class SoftmaxLayer(Layer):
    exact_bottoms = 1
    exact_tops = 1

    def reshape(self, bottom, top):
        self.axis = bottom[0].canonical_axis(self.param.softmax_param.axis)
        top[0].reshape_like(bottom[0])

    def forward(self, bottom, top):
        top[0].dev_data[...] = _softmax(self.xp, bottom[0].dev_data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y, dy = top[0].dev_data, top[0].dev_diff
            bottom[0].dev_diff[...] = (dy - (dy * y).sum(axis=self.axis, keepdims=True)) * y


class LossLayer(Layer):
    exact_bottoms = 2
    default_loss_weight = 1.0

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1   # never into the labels

    def normalization(self, default):
        p = self.param.loss_param
        if p.HasField("normalization"):
            return p.normalization
        if p.HasField("normalize"):
            return LP.VALID if p.normalize else LP.BATCH_SIZE
        return default

    def normalizer(self, mode, outer, inner, valid):
        """Caffe's divisor, at least 1. `valid` may be a device scalar; it stays on the device."""
        if mode == LP.VALID:
            return self.xp.maximum(valid, 1.0)
        n = {LP.FULL: outer * inner, LP.BATCH_SIZE: outer, LP.NONE: 1}[mode]
        return max(1.0, float(n))

    def refuse_label_backward(self, propagate_down):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to the label input; set propagate_down: false for it")

    def ignore_label(self):
        p = self.param.loss_param
        return int(p.ignore_label) if p.HasField("ignore_label") else None


@register("SoftmaxWithLoss")
class SoftmaxWithLossLayer(LossLayer):
    min_tops = 1
    max_tops = 2

    def reshape(self, bottom, top):
        x, label = bottom
        self.axis = x.canonical_axis(self.param.softmax_param.axis)
        self.outer = x.count_range(0, self.axis)
        self.inner = x.count_range(self.axis + 1)
        if label.count != self.outer * self.inner:
            raise self.error("label count (%d) must equal the number of predictions (%d = %s without axis %d); "
                             "labels are (N, ...) with one integer per position"
                             % (label.count, self.outer * self.inner, x.shape, self.axis), ShapeError)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape_like(x)

    def _views(self, bottom):
        x, label = bottom
        c = x.shape[self.axis]
        return x.dev_data.reshape(self.outer, c, self.inner), label.dev_data.reshape(self.outer, self.inner)

    def forward(self, bottom, top):
        x, label = self._views(bottom)
        self._prob = _softmax(self.xp, x, 1)
        try:
            loss, valid = self.ops.softmax_loss_forward(self._prob, label, self.ignore_label())
        except ValueError as e:
            raise self.error("%s (got labels %s)" % (e, sorted(set(label.ravel().tolist()))[:10]))
        self._norm = self.normalizer(self.normalization(LP.VALID), self.outer, self.inner, valid)
        top[0].dev_data[...] = loss / self._norm
        if len(top) > 1:
            top[1].dev_data[...] = self._prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if propagate_down[0]:
            _, label = self._views(bottom)
            d = self.ops.softmax_loss_backward(self._prob, label, self.ignore_label())
            scale = (top[0].dev_diff.reshape(-1)[0] / self._norm).astype(d.dtype)
            bottom[0].dev_diff[...] = (d * scale).reshape(bottom[0].shape)


@register("EuclideanLoss")
class EuclideanLossLayer(LossLayer):
    exact_tops = 1

    def allow_force_backward(self, bottom_index):
        return True

    def reshape(self, bottom, top):
        if bottom[0].count_range(1) != bottom[1].count_range(1):
            raise self.error("both inputs need the same dimension per sample (%s vs %s)"
                             % (bottom[0].shape, bottom[1].shape), ShapeError)
        top[0].reshape(())

    def forward(self, bottom, top):
        self._diff = bottom[0].dev_data - bottom[1].dev_data.reshape(bottom[0].shape)
        n = bottom[0].num
        top[0].dev_data[...] = (self._diff * self._diff).sum(dtype=np.float64) / n / 2

    def backward(self, top, propagate_down, bottom):
        w = top[0].dev_diff.reshape(-1)[0]
        for i, (b, down) in enumerate(zip(bottom, propagate_down)):
            if down:
                sign = 1.0 if i == 0 else -1.0
                b.dev_diff[...] = (self._diff * (w * (sign / bottom[0].num)).astype(self._diff.dtype)).reshape(b.shape)


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLossLayer(LossLayer):
    exact_tops = 1

    def reshape(self, bottom, top):
        if bottom[0].count != bottom[1].count:
            raise self.error("predictions and targets must have the same count (%d vs %d)"
                             % (bottom[0].count, bottom[1].count), ShapeError)
        top[0].reshape(())

    def _valid(self, t):
        ignore = self.ignore_label()
        return None if ignore is None else t.astype(np.int64) != ignore

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].dev_data
        t = bottom[1].dev_data.reshape(x.shape)
        pos = (x >= 0).astype(x.dtype)
        losses = -(x * (t - pos) - xp.log1p(xp.exp(x - 2 * x * pos)))
        valid = self._valid(t)
        if valid is not None:
            losses = losses * valid
        count = valid.sum() if valid is not None else x.size
        outer = bottom[0].shape[0] if bottom[0].num_axes else 1
        self._norm = self.normalizer(self.normalization(LP.BATCH_SIZE), outer, x.size // max(outer, 1), count)
        top[0].dev_data[...] = losses.sum(dtype=np.float64) / self._norm

    def backward(self, top, propagate_down, bottom):
        if len(propagate_down) > 1 and propagate_down[1]:
            raise self.error("cannot backpropagate to the target input; set propagate_down: false for it")
        if propagate_down[0]:
            xp = self.xp
            x = bottom[0].dev_data
            t = bottom[1].dev_data.reshape(x.shape)
            d = np.float32(0.5) * xp.tanh(np.float32(0.5) * x) + np.float32(0.5) - t
            valid = self._valid(t)
            if valid is not None:
                d = d * valid
            scale = (top[0].dev_diff.reshape(-1)[0] / self._norm).astype(d.dtype)
            bottom[0].dev_diff[...] = d * scale


@register("Accuracy")
class AccuracyLayer(Layer):
    exact_bottoms = 2
    min_tops = 1
    max_tops = 2

    def reshape(self, bottom, top):
        p = self.param.accuracy_param
        x, label = bottom
        self.axis = x.canonical_axis(p.axis)
        self.outer = x.count_range(0, self.axis)
        self.inner = x.count_range(self.axis + 1)
        self.classes = x.shape[self.axis]
        if p.top_k > self.classes:
            raise self.error("top_k (%d) is larger than the number of classes (%d)" % (p.top_k, self.classes))
        if label.count != self.outer * self.inner:
            raise self.error("label count (%d) must equal the number of predictions (%d)"
                             % (label.count, self.outer * self.inner), ShapeError)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((self.classes,))

    def forward(self, bottom, top):
        xp = self.xp
        p = self.param.accuracy_param
        x = bottom[0].dev_data.reshape(self.outer, self.classes, self.inner)
        label = bottom[1].dev_data.reshape(self.outer, self.inner).astype(np.int64)
        valid = xp.ones(label.shape, dtype=bool)
        if p.HasField("ignore_label"):
            valid = label != p.ignore_label
        safe = xp.where(valid, label, 0)
        if safe.size and (int(safe.min()) < 0 or int(safe.max()) >= self.classes):
            raise self.error("label values must lie in [0, %d)" % self.classes)
        true_score = xp.take_along_axis(x, safe[:, None, :], axis=1)
        # Correct when fewer than top_k other classes score >= the true class.
        better = (x >= true_score).sum(axis=1) - 1
        correct = (better < p.top_k) & valid
        count = int(valid.sum())
        top[0].dev_data[...] = float(correct.sum()) / count if count else 0.0
        if len(top) > 1:
            per_class_n = xp.bincount(safe[valid], minlength=self.classes)
            per_class_ok = xp.bincount(safe[correct], minlength=self.classes)
            top[1].dev_data[...] = xp.where(per_class_n > 0, per_class_ok / xp.maximum(per_class_n, 1), 0)

    def backward(self, top, propagate_down, bottom):
        if any(propagate_down):
            raise self.error("Accuracy has no gradient; do not use force_backward with it, or set "
                             "propagate_down: false")


LOG_THRESHOLD = np.float32(1e-20)     # Caffe's kLOG_THRESHOLD


def _labels(layer, label, count, classes):
    """Labels as int64, checked on the host to name a class (or be ignored)."""
    lab = label.astype(np.int64).reshape(-1)
    ignore = layer.ignore_label() if isinstance(layer, LossLayer) else None
    check = lab if ignore is None else lab[lab != ignore]
    if check.size and (int(check.min()) < 0 or int(check.max()) >= classes):
        raise layer.error("label values must lie in [0, %d); got %d" % (
            classes, int(check.min()) if int(check.min()) < 0 else int(check.max())))
    return lab


def _one_label_per_item(layer, bottom, top):
    """Reshape of the losses that take (N, ...) scores and N labels."""
    x, label = bottom
    if label.count != x.num:
        raise layer.error("needs one label per item (%d labels for %d items)" % (label.count, x.num), ShapeError)
    layer.dim = x.count // max(x.num, 1)
    top[0].reshape(())


@register("MultinomialLogisticLoss")
class MultinomialLogisticLossLayer(LossLayer):
    """-log p[label] of probabilities given as the first bottom, averaged over N."""
    exact_tops = 1

    reshape = _one_label_per_item

    def forward(self, bottom, top):
        xp = self.xp
        n = bottom[0].num
        p = bottom[0].dev_data.reshape(n, self.dim)
        lab = xp.asarray(_labels(self, bottom[1].data, n, self.dim))
        picked = xp.maximum(p[xp.arange(n), lab], LOG_THRESHOLD)
        top[0].dev_data[...] = -xp.log(picked).sum(dtype=np.float64) / n

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if propagate_down[0]:
            xp = self.xp
            n = bottom[0].num
            p = bottom[0].dev_data.reshape(n, self.dim)
            lab = xp.asarray(bottom[1].data.astype(np.int64).reshape(-1))
            scale = (top[0].dev_diff.reshape(-1)[0] / n).astype(p.dtype)
            d = xp.zeros_like(p)
            rows = xp.arange(n)
            d[rows, lab] = -scale / xp.maximum(p[rows, lab], LOG_THRESHOLD)
            bottom[0].dev_diff[...] = d.reshape(bottom[0].shape)


@register("InfogainLoss")
class InfogainLossLayer(LossLayer):
    """Softmax over `axis`, then -sum_l H[label, l] log p_l per position,
    normalized; H is the third bottom or infogain_param.source."""
    min_bottoms = 2
    max_bottoms = 3
    exact_bottoms = None
    min_tops = 1
    max_tops = 2

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1

    def layer_setup(self, bottom, top):
        p = self.param.infogain_loss_param
        self._h = None
        if len(bottom) < 3:
            if not p.source:
                raise self.error("needs the infogain matrix H: a third bottom or infogain_loss_param.source")
            from ..blob import repeated_floats
            from ..errors import FormatError
            from ..protoio import read_blob_proto
            try:
                self._h = np.array(repeated_floats(read_blob_proto(p.source), "data"), np.float32)
            except FormatError as e:
                raise self.error("infogain_loss_param.source: %s" % e, FormatError) from None

    def reshape(self, bottom, top):
        x, label = bottom[0], bottom[1]
        self.axis = x.canonical_axis(self.param.infogain_loss_param.axis)
        self.outer, self.inner = x.count_range(0, self.axis), x.count_range(self.axis + 1)
        self.classes = x.shape[self.axis]
        if label.count != self.outer * self.inner:
            raise self.error("label count (%d) must equal the number of predictions (%d)"
                             % (label.count, self.outer * self.inner), ShapeError)
        h_count = bottom[2].count if len(bottom) > 2 else self._h.size
        if h_count != self.classes * self.classes:
            raise self.error("the infogain matrix H holds %d values; with %d classes it must be %d x %d"
                             % (h_count, self.classes, self.classes, self.classes), ShapeError)
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape_like(x)

    def _matrix(self, bottom):
        if len(bottom) > 2:
            return bottom[2].dev_data.reshape(self.classes, self.classes)
        return self.xp.asarray(self._h.reshape(self.classes, self.classes))

    def forward(self, bottom, top):
        xp = self.xp
        x = bottom[0].dev_data.reshape(self.outer, self.classes, self.inner)
        self._prob = _softmax(xp, x, 1)
        lab = _labels(self, bottom[1].data, self.outer * self.inner, self.classes).reshape(self.outer, self.inner)
        ignore = self.ignore_label()
        valid = np.ones(lab.shape, bool) if ignore is None else lab != ignore
        self._lab = xp.asarray(np.where(valid, lab, 0))
        self._valid = xp.asarray(valid)
        h = self._matrix(bottom)
        rows = h[self._lab]                                          # (outer, inner, C)
        logp = xp.log(xp.maximum(self._prob, LOG_THRESHOLD)).transpose(0, 2, 1)
        loss = -((rows * logp).sum(axis=2) * self._valid).sum(dtype=np.float64)
        self._norm = self.normalizer(self.normalization(LP.VALID), self.outer, self.inner, int(valid.sum()))
        top[0].dev_data[...] = loss / self._norm
        if len(top) > 1:
            top[1].dev_data[...] = self._prob.reshape(top[1].shape)

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if len(propagate_down) > 2 and propagate_down[2]:
            raise self.error("cannot backpropagate to the infogain matrix (bottom 2); set propagate_down: false "
                             "for it")
        if propagate_down[0]:
            h = self._matrix(bottom)
            rows = h[self._lab].transpose(0, 2, 1)                    # (outer, C, inner)
            row_sums = h.sum(axis=1)[self._lab][:, None, :]           # (outer, 1, inner)
            d = (self._prob * row_sums - rows) * self._valid[:, None, :]
            scale = (top[0].dev_diff.reshape(-1)[0] / self._norm).astype(d.dtype)
            bottom[0].dev_diff[...] = (d * scale).reshape(bottom[0].shape)


@register("HingeLoss")
class HingeLossLayer(LossLayer):
    """One-vs-all hinge loss: t = +1 at the label, -1 elsewhere; L1 or squared (L2)."""
    exact_tops = 1

    reshape = _one_label_per_item

    def _margins(self, bottom):
        """max(0, 1 - t * x), kept in the bottom's diff as Caffe does."""
        xp = self.xp
        n = bottom[0].num
        x = bottom[0].dev_data.reshape(n, self.dim)
        self._lab = xp.asarray(_labels(self, bottom[1].data, n, self.dim))
        t = -xp.ones_like(x)
        t[xp.arange(n), self._lab] = 1
        self._t = t
        m = xp.maximum(np.float32(1) - t * x, np.float32(0))
        bottom[0].dev_diff[...] = m.reshape(bottom[0].shape)
        return m

    def forward(self, bottom, top):
        m = self._margins(bottom)
        l2 = self.param.hinge_loss_param.norm == pb.HingeLossParameter.L2
        total = (m * m).sum(dtype=np.float64) if l2 else m.sum(dtype=np.float64)
        top[0].dev_data[...] = total / bottom[0].num

    def backward(self, top, propagate_down, bottom):
        self.refuse_label_backward(propagate_down)
        if propagate_down[0]:
            xp = self.xp
            n = bottom[0].num
            m = bottom[0].dev_diff.reshape(n, self.dim)
            w = top[0].dev_diff.reshape(-1)[0]
            if self.param.hinge_loss_param.norm == pb.HingeLossParameter.L2:
                d = -self._t * m * (w * 2 / n).astype(m.dtype)
            else:
                d = -self._t * (m > 0) * (w / n).astype(m.dtype)
            bottom[0].dev_diff[...] = d.reshape(bottom[0].shape)


@register("ContrastiveLoss")
class ContrastiveLossLayer(LossLayer):
    """Siamese loss on pairs (a, b): d^2 for similar pairs, max(margin - d, 0)^2
    (legacy: max(margin - d^2, 0)) for dissimilar ones; sum / 2N."""
    exact_bottoms = 3
    exact_tops = 1

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def reshape(self, bottom, top):
        a, b, sim = bottom
        if a.shape[1:2] != b.shape[1:2] or a.count != b.count:
            raise self.error("a and b must have the same shape (%s vs %s)" % (a.shape, b.shape), ShapeError)
        if any(d != 1 for d in a.shape[2:]):
            raise self.error("a and b must be (N, C) or (N, C, 1, 1), got %s" % (a.shape,), ShapeError)
        if sim.count != a.num:
            raise self.error("needs one similarity value per pair (%d for %d pairs)" % (sim.count, a.num),
                             ShapeError)
        top[0].reshape(())

    def forward(self, bottom, top):
        xp = self.xp
        p = self.param.contrastive_loss_param
        n = bottom[0].num
        self._diff = bottom[0].dev_data.reshape(n, -1) - bottom[1].dev_data.reshape(n, -1)
        self._dist_sq = (self._diff * self._diff).sum(axis=1)
        self._similar = bottom[2].dev_data.reshape(-1).astype(np.int64) != 0
        margin = np.float32(p.margin)
        if p.legacy_version:
            away = xp.maximum(margin - self._dist_sq, np.float32(0))
        else:
            away = xp.maximum(margin - xp.sqrt(self._dist_sq), np.float32(0)) ** 2
        loss = xp.where(self._similar, self._dist_sq, away).sum(dtype=np.float64)
        top[0].dev_data[...] = loss / n / 2

    def backward(self, top, propagate_down, bottom):
        if propagate_down[2]:
            raise self.error("cannot backpropagate to the similarity input; set propagate_down: false for it")
        xp = self.xp
        p = self.param.contrastive_loss_param
        n = bottom[0].num
        margin = np.float32(p.margin)
        if p.legacy_version:
            mdist = margin - self._dist_sq
            factor = xp.full_like(mdist, -1)
        else:
            dist = xp.sqrt(self._dist_sq)
            mdist = margin - dist
            factor = -mdist / (dist + np.float32(1e-4))
        factor = xp.where(self._similar, np.float32(1), xp.where(mdist > 0, factor, np.float32(0)))
        for i in (0, 1):
            if propagate_down[i]:
                alpha = ((1.0 if i == 0 else -1.0) * top[0].dev_diff.reshape(-1)[0] / n).astype(self._diff.dtype)
                d = self._diff * (factor * alpha)[:, None]
                bottom[i].dev_diff[...] = d.reshape(bottom[i].shape)

"""The SSD fork's detection test: DetectionEvaluate rows gathered over the
test iterations become an average precision per label and their mean (the
solver's eval_type "detection"), in float32 as the fork computes them.

Rows are [item, label, score, tp, fp]; an item of -1 carries the number of
ground-truth boxes of a label (its third column)."""
import numpy as np

from .errors import ConfigError

f32 = np.float32
AP_VERSIONS = ("11point", "MaxIntegral", "Integral")


class Accumulator:
    """Positives and scored detections per label, for one output."""

    def __init__(self):
        self.num_pos = {}
        self.scored = {}

    def add(self, rows, name="output"):
        rows = np.asarray(rows, np.float32)
        rows = rows.reshape(-1, rows.shape[-1])
        if rows.shape[-1] != 5:
            raise ConfigError("eval_type detection: the test net's output '%s' has rows of %d values, not the 5 of "
                              "DetectionEvaluate ([item, label, score, tp, fp]); make every output of the test net "
                              "a DetectionEvaluate top" % (name, rows.shape[-1]))
        for row in rows:
            item, label = int(row[0]), int(row[1])
            if item == -1:
                self.num_pos[label] = self.num_pos.get(label, 0) + int(row[2])
            elif int(row[3]) or int(row[4]):     # neither: matched a difficult box that is not evaluated
                self.scored.setdefault(label, []).append((f32(row[2]), int(row[3])))

    def average_precisions(self, version):
        """{label: AP} for every label with a positives row, in label order."""
        return {label: average_precision(self.scored.get(label, []), n, version)
                for label, n in sorted(self.num_pos.items())}


def average_precision(scored, num_pos, version):
    """AP of [(score, is_true_positive)] against num_pos ground-truth boxes."""
    if version not in AP_VERSIONS:
        raise ConfigError("ap_version %r is unknown; use one of %s" % (version, ", ".join(AP_VERSIONS)))
    if not scored or num_pos == 0:
        return f32(0)
    scores = np.array([s for s, _ in scored], np.float32)
    tp = np.array([t for _, t in scored], np.int64)
    order = np.argsort(-scores, kind="stable")
    tp_cum = np.cumsum(tp[order])
    fp_cum = np.cumsum(1 - tp[order])
    prec = (tp_cum.astype(np.float32) / (tp_cum + fp_cum).astype(np.float32)).astype(np.float32)
    rec = (tp_cum.astype(np.float32) / f32(num_pos)).astype(np.float32)
    ap = f32(0)
    n = len(prec)
    if version == "11point":
        best = [f32(0)] * 11
        start = n - 1
        for j in range(10, -1, -1):
            for i in range(start, -1, -1):
                if float(rec[i]) < j / 10.0:
                    start = i
                    if j > 0:
                        best[j - 1] = best[j]
                    break
                best[j] = max(best[j], prec[i])
        for j in range(10, -1, -1):
            ap = f32(ap + f32(best[j] / f32(11)))
    elif version == "MaxIntegral":
        cur_rec, cur_prec = rec[-1], prec[-1]
        for i in range(n - 2, -1, -1):
            cur_prec = max(prec[i], cur_prec)
            if abs(f32(cur_rec - rec[i])) > 1e-6:
                ap = f32(ap + f32(cur_prec * abs(f32(cur_rec - rec[i]))))
            cur_rec = rec[i]
        ap = f32(ap + f32(cur_rec * cur_prec))
    else:
        prev = f32(0)
        for i in range(n):
            if abs(f32(rec[i] - prev)) > 1e-6:
                ap = f32(ap + f32(prec[i] * abs(f32(rec[i] - prev))))
            prev = rec[i]
    return ap


def mean_ap(aps):
    total = f32(0)
    for ap in aps.values():
        total = f32(total + ap)
    # No ground truth at all: the fork divides by zero too.
    return f32(total / f32(len(aps))) if aps else f32("nan")

"""Weight fillers, by FillerParameter.type (Caffe's names and formulas)."""
import numpy as np

from . import backend
from .errors import ConfigError


def fill(blob, filler_param):
    """Fill blob.data in place according to a FillerParameter."""
    kind = filler_param.type
    fn = _FILLERS.get(kind)
    if fn is None:
        raise ConfigError("unknown filler type '%s' (known: %s)" % (kind, ", ".join(sorted(_FILLERS))))
    if not blob.count:
        return                    # nothing to fill (a blob with a zero dim)
    values = fn(blob, filler_param, backend.rng())
    if values is not None:          # the random fillers write blob.data themselves
        blob.data[...] = np.asarray(values).reshape(blob.shape)


def _fans(blob, p):
    fan_in = blob.count / max(blob.num, 1)
    fan_out = blob.count / max(blob.channels, 1)
    if p.variance_norm == p.AVERAGE:
        return (fan_in + fan_out) / 2.0
    if p.variance_norm == p.FAN_OUT:
        return fan_out
    return fan_in


# In place in the blob: fc6's 37.7M values would otherwise pass through two
# temporaries of their size (float64 blobs, in gradient checks, take the
# same float32 draws).
def _uniform_f32(rng, lo, hi, blob):
    out = blob.data
    if out.dtype != np.float32:
        out[...] = rng.random(out.shape, dtype=np.float32) * np.float32(hi - lo) + np.float32(lo)
        return
    rng.random(out=out, dtype=np.float32)
    out *= np.float32(hi - lo)
    out += np.float32(lo)


def _normal_f32(rng, mean, std, blob):
    out = blob.data
    if out.dtype != np.float32:
        out[...] = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(std) + np.float32(mean)
        return
    rng.standard_normal(out=out, dtype=np.float32)
    out *= np.float32(std)
    out += np.float32(mean)


def _constant(blob, p, rng):
    blob.data[...] = p.value


def _uniform(blob, p, rng):
    _uniform_f32(rng, p.min, p.max, blob)


def _gaussian(blob, p, rng):
    if p.sparse >= 0 and blob.num_axes < 1:
        raise ConfigError("sparse gaussian filler needs a blob with at least one axis")
    _normal_f32(rng, p.mean, p.std, blob)
    if p.sparse >= 0:
        # Keep each weight with probability sparse / num_outputs.
        keep = p.sparse / float(blob.num)
        blob.data[...] *= rng.random(blob.shape, dtype=np.float32) < keep


def _positive_unitball(blob, p, rng):
    values = rng.random((blob.num, blob.count // max(blob.num, 1)))
    return values / values.sum(axis=1, keepdims=True)


def _xavier(blob, p, rng):
    scale = np.sqrt(3.0 / _fans(blob, p))
    _uniform_f32(rng, -scale, scale, blob)


def _msra(blob, p, rng):
    std = np.sqrt(2.0 / _fans(blob, p))
    _normal_f32(rng, 0.0, std, blob)


def _bilinear(blob, p, rng):
    if blob.num_axes != 4 or blob.shape[2] != blob.shape[3]:
        raise ConfigError("bilinear filler needs a 4-D blob with square kernels, got %s" % (blob.shape,))
    k = blob.shape[3]
    f = np.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    idx = np.arange(blob.count)
    x = idx % k
    y = (idx // k) % blob.shape[2]
    return (1 - np.abs(x / f - c)) * (1 - np.abs(y / f - c))


_FILLERS = {
    "constant": _constant, "uniform": _uniform, "gaussian": _gaussian,
    "positive_unitball": _positive_unitball, "xavier": _xavier, "msra": _msra,
    "bilinear": _bilinear,
}

"""Blob: an N-d array of data with a same-shaped array of diffs (gradients).

Like Caffe's Blob, a reshape that fits in the memory already held keeps that
memory (so repeated forwards at a fixed shape never allocate), and two blobs can
share data or diff memory (Flatten, Reshape)."""
import numpy as np

from . import backend
from .errors import ShapeError


def _as_shape(args):
    if len(args) == 1 and not np.isscalar(args[0]):
        args = tuple(args[0])
    shape = tuple(int(d) for d in args)
    if any(d < 0 for d in shape):
        raise ShapeError("blob dimensions must be non-negative, got %s" % (shape,))
    return shape


HOST, DEVICE, SYNCED = 0, 1, 2


class _Buffer:
    """Flat storage that may back several blobs, with a host copy and (in GPU
    mode) a device copy kept in sync the way Caffe's SyncedMemory does: the
    side last handed out for writing is the head; the other side is brought
    up to date when it is asked for."""
    __slots__ = ("host", "device", "head", "zero_pending")

    def __init__(self, n):
        self.host = np.zeros(n, dtype=backend.float_type())
        self.device = None
        self.head = HOST
        # Set by Blob.zero_diff: every blob sharing this memory sees it cleared.
        self.zero_pending = False

    @property
    def size(self):
        return self.host.size

    def host_array(self):
        if self.head == DEVICE:
            self.device.get(out=self.host)
        self.head = HOST           # the caller may write into it
        return self.host

    def device_array(self):
        if self.device is None:
            xp = backend.xp()
            self.device = xp.asarray(self.host) if self.head != DEVICE else xp.zeros(self.host.size, self.host.dtype)
        elif self.head == HOST:
            self.device.set(self.host)
        self.head = DEVICE
        return self.device


class Blob:
    def __init__(self, *shape):
        self._shape = None
        self._data_buf = _Buffer(0)
        self._diff_buf = _Buffer(0)
        self.reshape(*(shape or ((),)))

    # -- shape -----------------------------------------------------------
    def reshape(self, *shape):
        shape = _as_shape(shape)
        if shape == self._shape:
            return
        self._shape = shape
        n = int(np.prod(shape, dtype=np.int64))
        if n > self._data_buf.size:
            self._data_buf = _Buffer(n)
            self._diff_buf = _Buffer(n)

    def reshape_like(self, other):
        self.reshape(other.shape)

    def _view(self, flat):
        return flat[:self.count].reshape(self._shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return int(np.prod(self._shape, dtype=np.int64))

    @property
    def num_axes(self):
        return len(self._shape)

    def count_range(self, start, end=None):
        end = self.num_axes if end is None else end
        return int(np.prod(self._shape[start:end], dtype=np.int64))

    def canonical_axis(self, axis):
        n = self.num_axes
        if not -n <= axis < max(n, 1):
            raise ShapeError("axis %d is out of range for a blob of shape %s" % (axis, self._shape))
        return axis + n if axis < 0 else axis

    def legacy_shape(self, i):
        """Caffe's 4-D view: axes past the real ones count as 1."""
        n = self.num_axes
        if i >= n or i < -n:
            return 1
        return self._shape[i]

    num = property(lambda self: self.legacy_shape(0))
    channels = property(lambda self: self.legacy_shape(1))
    height = property(lambda self: self.legacy_shape(2))
    width = property(lambda self: self.legacy_shape(3))

    # -- memory ----------------------------------------------------------
    @property
    def data(self):
        """Host (numpy) array of the values; write into it to set inputs (pycaffe style)."""
        return self._view(self._data_buf.host_array())

    @property
    def diff(self):
        return self._cleared(self._diff_buf.host_array())

    def _cleared(self, flat):
        """The diff view of `flat`, zeroed first if a clear is pending (see zero_diff)."""
        if self._diff_buf.zero_pending:
            flat[...] = 0
            self._diff_buf.zero_pending = False
        return self._view(flat)

    # Layers use these: the array of the current mode (numpy on the CPU,
    # cupy on the GPU), synchronised on demand.
    @property
    def dev_data(self):
        if backend.mode() == backend.CPU:
            return self.data
        return self._view(self._data_buf.device_array())

    @property
    def dev_diff(self):
        if backend.mode() == backend.CPU:
            return self.diff
        return self._cleared(self._diff_buf.device_array())

    def zero_diff(self):
        """Mark the diff as zero. The memory is only cleared when someone reads
        the diff; a layer that overwrites it whole (add_matmul_to_diff) never
        pays for clearing it, which matters for 37M-weight layers."""
        self._diff_buf.zero_pending = True

    def add_matmul_to_diff(self, a, b):
        """diff += a @ b (batched over leading axes, as matmul), written
        straight into diff when it is known to be zero (right after
        zero_diff), which spares a weight-sized temporary and a memset.
        Otherwise (iter_size > 1, shared weights, `caffe time`) the kernel
        table's add_matmul accumulates block by block."""
        xp = backend.xp()
        flat = self._diff_buf.device_array() if backend.mode() == backend.GPU else self._diff_buf.host_array()
        target = flat[:self.count].reshape(a.shape[:-1] + (b.shape[-1],))
        if self._diff_buf.zero_pending:
            xp.matmul(a, b, out=target)
            self._diff_buf.zero_pending = False
        else:
            backend.ops().add_matmul(a, b, target)

    def host_diff_to_fill(self):
        """(diff, fresh) on the host: `fresh` when the diff is known to be zero
        (right after zero_diff), so that a kernel writes it whole instead of
        adding to it; it is no longer known zero afterwards."""
        fresh = self._diff_buf.zero_pending
        self._diff_buf.zero_pending = False
        return self._view(self._diff_buf.host_array()), fresh

    def share_data(self, other):
        if self.count != other.count:
            raise ShapeError("share_data needs equal counts: %s vs %s" % (self._shape, other.shape))
        self._data_buf = other._data_buf

    def share_diff(self, other):
        if self.count != other.count:
            raise ShapeError("share_diff needs equal counts: %s vs %s" % (self._shape, other.shape))
        self._diff_buf = other._diff_buf

    def shape_string(self):
        return " ".join(str(d) for d in self._shape) + " (%d)" % self.count

    def __repr__(self):
        return "Blob(%s)" % self.shape_string()

    # -- protobuf --------------------------------------------------------
    def shape_matches_proto(self, proto):
        """Caffe's ShapeEquals: legacy 4-D protos are aligned from the last axis."""
        if proto.HasField("num") or proto.HasField("channels") or \
                proto.HasField("height") or proto.HasField("width"):
            return (self.num_axes <= 4 and
                    self.legacy_shape(-4) == proto.num and self.legacy_shape(-3) == proto.channels and
                    self.legacy_shape(-2) == proto.height and self.legacy_shape(-1) == proto.width)
        return tuple(proto.shape.dim) == self._shape

    def from_proto(self, proto, reshape=True):
        if reshape:
            self.reshape(proto_shape(proto))
        n = self.count
        if len(proto.double_data):
            values = np.asarray(proto.double_data, dtype=np.float64)
        else:
            values = repeated_floats(proto, "data")
        if values.size != n:
            raise ShapeError("blob proto holds %d values but the blob has %d (shape %s)"
                             % (values.size, n, self._shape))
        self.data[...] = values.reshape(self._shape)
        diff = proto.double_diff if len(proto.double_diff) else proto.diff
        if len(diff):
            if len(diff) != n:
                raise ShapeError("blob proto holds %d diff values but the blob has %d" % (len(diff), n))
            self.diff[...] = np.asarray(diff, dtype=np.float32).reshape(self._shape)

    def to_proto(self, proto, write_diff=False):
        proto.Clear()
        proto.shape.dim.extend(self._shape)
        proto.MergeFromString(_packed_field(5, self.data))
        if write_diff:
            proto.MergeFromString(_packed_field(6, self.diff))
        return proto


def proto_shape(proto):
    """The shape a BlobProto describes, from `shape` or the legacy 4-D fields."""
    if proto.HasField("shape"):
        return tuple(proto.shape.dim)
    if proto.HasField("num") or proto.HasField("channels") or \
            proto.HasField("height") or proto.HasField("width"):
        return (proto.num, proto.channels, proto.height, proto.width)
    return ()


# Large blobs (fc6 holds 37M floats) are slow to move through protobuf's Python
# containers one float at a time; these go through the packed wire bytes instead.

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _packed_field(number, array):
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    if not raw:
        return b""
    return _varint(number << 3 | 2) + _varint(len(raw)) + raw


def _read_varint(buf, i):
    shift = result = 0
    while True:
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, i
        shift += 7


def repeated_floats(proto, name):
    """A repeated float field of `proto` as a (possibly read-only) float32 array."""
    field = getattr(proto, name)
    if len(field) < 4096:
        return np.asarray(field, dtype=np.float32)
    number = proto.DESCRIPTOR.fields_by_name[name].number
    # Serialize just this field: copy the message, clear the rest.
    tmp = type(proto)()
    tmp.CopyFrom(proto)
    for fd, _ in tmp.ListFields():
        if fd.name != name:
            tmp.ClearField(fd.name)
    buf = tmp.SerializeToString()
    i, parts = 0, []
    while i < len(buf):
        key, i = _read_varint(buf, i)
        if key >> 3 == number and key & 7 == 2:
            length, i = _read_varint(buf, i)
            parts.append(np.frombuffer(buf, dtype="<f4", count=length // 4, offset=i))
            i += length
        else:  # not packed after all: take the slow path
            return np.asarray(field, dtype=np.float32)
    if not parts:
        return np.zeros(0, np.float32)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)

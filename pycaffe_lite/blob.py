"""Blob: an N-d array of data with a same-shaped array of diffs (gradients).

Like Caffe's Blob, a reshape that fits in the memory already held keeps that
memory (so repeated forwards at a fixed shape never allocate), and two blobs can
share data or diff memory (Flatten, Reshape)."""
import math
import os
import sys
import threading

import numpy as np

from . import backend
from .errors import ShapeError


def _as_shape(args):
    if len(args) == 1 and type(args[0]) is tuple and all(type(d) is int and d >= 0 for d in args[0]):
        return args[0]                   # the common case, already a shape
    if len(args) == 1 and not np.isscalar(args[0]):
        args = tuple(args[0])
    shape = tuple(int(d) for d in args)
    if any(d < 0 for d in shape):
        raise ShapeError("blob dimensions must be non-negative, got %s" % (shape,))
    return shape


HOST, DEVICE, SYNCED, BLOCKED = 0, 1, 2, 3


class _Buffer:
    """Flat storage that may back several blobs, with a host copy and (in GPU
    mode) a device copy kept in sync the way Caffe's SyncedMemory does: the
    side last handed out for writing is the head; the other side is brought
    up to date when it is asked for. Like SyncedMemory, the host array is
    only allocated when first asked for (a TEST net's diffs never are).

    On the CPU, the oneDNN engine may leave a layer's output in a blocked
    layout (head BLOCKED) for the next oneDNN layer; whoever asks for the host
    array gets it reordered back first, so nobody ever reads a blocked or stale
    array. The engine only does so when no view of the host array is held
    outside (a user's numpy view of `blob.data` stays live, as in Caffe).
    An inference net's weights live in the layout their primitive reads
    (adopt): the plain host array is dropped then and made again when read.
    `version` counts the times the host array was handed out for writing:
    with the same version and no view held, its values are unchanged, which
    lets the engine keep reordered weights (and folded ones) between passes.
    `stamp` counts every change of state through these methods (a prepared
    forward checks it to know nothing touched the buffer since)."""
    __slots__ = ("n", "dtype", "host", "device", "head", "zero_pending", "version", "blocked", "blocked_desc",
                 "_unblock", "stamp")

    def __init__(self, n):
        self.n, self.dtype = n, backend.float_type()
        self.host = None
        self.device = None
        self.head = HOST
        # Set by Blob.zero_diff: every blob sharing this memory sees it cleared.
        self.zero_pending = False
        self.version = self.stamp = 0
        self.blocked = self.blocked_desc = self._unblock = None

    @property
    def size(self):
        return self.n

    def _host(self):
        if self.host is None:
            self.host = np.zeros(self.n, dtype=self.dtype)
            self.stamp += 1
        return self.host

    def host_array(self):
        if self.head == DEVICE:
            self.device.get(out=self._host())
        elif self.head == BLOCKED:
            self._from_blocked()
        self.head = HOST           # the caller may write into it
        self.version += 1
        self.stamp += 1
        return self._host()

    def host_read(self):
        """The host array, up to date, for reading only (no new version)."""
        if self.zero_pending:          # a diff marked zero (Blob.zero_diff)
            self.host_array()[...] = 0
            self.zero_pending = False
        if self.head == DEVICE:
            self.device.get(out=self._host())
            self.head = SYNCED
            self.stamp += 1
        elif self.head == BLOCKED:
            self._from_blocked()
            self.head = HOST
            self.stamp += 1
        return self._host()

    def device_array(self):
        if self.head == BLOCKED:
            self.host_read()
        if self.device is None:
            xp = backend.xp()
            self.device = (xp.asarray(self.host) if self.head != DEVICE and self.host is not None
                           else xp.zeros(self.n, self.dtype))
        elif self.head == HOST and self.host is not None:
            self.device.set(self.host)
        self.head = DEVICE
        self.stamp += 1
        return self.device

    # -- the oneDNN engine's blocked copy ---------------------------------
    def held(self):
        """Whether a view of the host array lives outside this buffer."""
        return self.host is not None and sys.getrefcount(self.host) > 2

    def _from_blocked(self):
        from .kernels import dnnl
        if self._unblock is None or self._unblock[0] is not self.blocked_desc:
            self._unblock = (self.blocked_desc, dnnl.unblocker(self.blocked_desc))
        self._unblock[1](src=self.blocked, dst=self._host())

    def blocked_copy(self, desc):
        """The blocked copy when it is the valid one and laid out as `desc`."""
        if self.head == BLOCKED and desc == self.blocked_desc:
            return self.blocked
        return None

    def claim_blocked(self, desc):
        """Memory for the engine to write this buffer's values into in layout
        `desc`, which becomes the valid copy; None when a view of the host
        array is held outside (then the engine writes the host array)."""
        if self.held():
            return None
        if self.blocked is None or self.blocked.nbytes < desc.nbytes:
            self.blocked = _take(desc.nbytes)
        self.blocked_desc = desc
        self.head = BLOCKED
        self.version += 1
        self.stamp += 1
        self.zero_pending = False      # the engine writes it whole
        return self.blocked

    def adopt(self, desc, move):
        """The values, moved for good into layout `desc` (move(src, dst) a
        reorder) and the host array dropped: an input that stays as it is
        for many passes (inference weights) is then held once. None when a
        view of the host array is held outside."""
        if self.head == BLOCKED and desc == self.blocked_desc:
            return self.blocked
        if self.held() or self.head == DEVICE:
            return None
        from .kernels import dnnl
        src = self.host_read()
        if self.blocked is None or self.blocked.nbytes < desc.nbytes:
            self.blocked = dnnl.aligned(desc.nbytes)
        move(src=src, dst=self.blocked)
        self.blocked_desc = desc
        self.head = BLOCKED          # the same values: no new version
        self.host = None
        self.stamp += 1
        return self.blocked

    def release(self):
        """Let go of the blocked copy (an inference forward is done with it):
        True when it could (the values are gone then; the Net marks the
        blobs on this buffer to be made again when read)."""
        if self.head != BLOCKED or self.held():
            return False
        free_arrays().append(self.blocked)
        self.blocked = self.blocked_desc = None
        self.head = HOST
        self.stamp += 1
        return True

    def settle(self):
        """Bring the host array up to date and drop the blocked copy."""
        if self.head == BLOCKED:
            self.host_read()


class EngineView:
    """A blob's data or diff as the oneDNN engine takes it: the blocked copy
    its buffer holds, when that is laid out as a primitive wants, or else the
    host array (read without a new version, or handed out for writing)."""
    __slots__ = ("buf", "shape")

    def __init__(self, buf, shape):
        self.buf, self.shape = buf, shape

    def blocked(self, desc):
        return self.buf.blocked_copy(desc)

    def claim(self, desc):
        return self.buf.claim_blocked(desc)

    def adopt(self, desc, move):
        return self.buf.adopt(desc, move)

    def layout(self):
        """The blocked layout (a dnnl.Desc) the values are in now, or None."""
        return self.buf.blocked_desc if self.buf.head == BLOCKED else None

    def _view(self, flat):
        n = 1
        for d in self.shape:
            n *= d
        return flat[:n].reshape(self.shape)

    def read(self):
        return self._view(self.buf.host_read())

    def write(self):
        self.buf.zero_pending = False          # the engine writes it whole
        return self._view(self.buf.host_array())

    def token(self):
        """Identifies the current values while nobody can change them unseen."""
        return None if self.buf.held() else (self.buf, self.buf.version)


# Arrays an inference forward let go of (Net), for the claims of later layers
# to take: set by the Net for the time of its forward, in its thread.
_free = threading.local()


def free_arrays():
    return getattr(_free, "arrays", None)


def set_free_arrays(arrays):
    _free.arrays = arrays


def _take(nbytes):
    """The smallest free array of at least `nbytes` bytes, or a new one."""
    free = free_arrays()
    if free:
        best = None
        for i, a in enumerate(free):
            if a.nbytes >= nbytes and (best is None or a.nbytes < free[best].nbytes):
                best = i
        if best is not None:
            return free.pop(best)
    from .kernels import dnnl
    return dnnl.aligned(nbytes)


INT_MAX = 2 ** 31 - 1


def _memory_bytes():
    """This machine's physical memory, or None where it cannot be told."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


class Blob:
    # The Net names the blobs it makes, for error messages.
    name = None
    # A fused chain that skipped this blob leaves here how to make it (run
    # once, on the first read of its values).
    _stale = None

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
        n = math.prod(shape)
        if n > self._data_buf.size:
            self._check_size(shape, n)
        self._data_buf.settle()
        self._diff_buf.settle()
        self._shape = shape
        if n > self._data_buf.size:
            self._data_buf = _Buffer(n)
            self._diff_buf = _Buffer(n)

    def _check_size(self, shape, n):
        """Caffe's limit (a count of at most INT_MAX) and this machine's: a
        clear error before allocating, not a MemoryError or a swap storm."""
        what = "blob '%s'" % self.name if self.name else "a blob"
        nbytes = 2 * n * np.dtype(backend.float_type()).itemsize          # data and diff
        if n > INT_MAX:
            raise ShapeError("%s of shape %s would hold %d values (%d bytes with its diff): more than the %d "
                             "values Caffe allows a blob (INT_MAX); check the dims that make this shape"
                             % (what, shape, n, nbytes, INT_MAX))
        memory = _memory_bytes()
        if memory is not None and nbytes > memory:
            raise ShapeError("%s of shape %s needs %d bytes (data and diff), more than this machine's %d bytes "
                             "of memory; check the dims that make this shape" % (what, shape, nbytes, memory))

    def reshape_like(self, other):
        self.reshape(other.shape)

    def _view(self, flat):
        return flat[:self.count].reshape(self._shape)

    @property
    def shape(self):
        return self._shape

    @property
    def count(self):
        return math.prod(self._shape)

    @property
    def num_axes(self):
        return len(self._shape)

    def count_range(self, start, end=None):
        end = self.num_axes if end is None else end
        return math.prod(self._shape[start:end])

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
        if self._stale is not None:
            self._materialize()
        return self._view(self._data_buf.host_array())

    def _materialize(self):
        make, self._stale = self._stale, None
        make()

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

    def engine_data(self, shape=None):
        """The data for the oneDNN engine (see EngineView), as `shape`
        (the blob's own by default)."""
        if self._stale is not None:
            self._materialize()
        return EngineView(self._data_buf, tuple(shape) if shape is not None else self._shape)

    def engine_diff(self, shape=None):
        """The diff for the oneDNN engine, like engine_data."""
        return EngineView(self._diff_buf, tuple(shape) if shape is not None else self._shape)

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
        self._diff_buf.stamp += 1

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

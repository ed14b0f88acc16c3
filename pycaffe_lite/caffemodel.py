"""A .caffemodel read layer by layer, the parameter values going from the file
straight into the net's blobs.

Parsing a whole NetParameter holds every weight twice over (the file's bytes,
then protobuf's repeated fields) before a value reaches a blob: 3x CaffeNet's
233 MB at the peak. Here the wire format is walked instead: everything but
the blobs' values is parsed by protobuf as usual (a skeleton NetParameter
whose BlobProtos have their shapes and no values), and each packed `data`
field is remembered as (offset, length) in the file and read into its blob
with readinto. A file this walk does not cover (V1 `layers`, unpacked or
double values, stored diffs, anything malformed) returns None: the caller
parses it whole, which also gives malformed files their usual errors."""
import io
import sys

from .proto import caffe_pb2

# field numbers (proto/caffe.proto)
NET_LAYER, NET_V1_LAYERS = 100, 2
LAYER_BLOBS = 7
BLOB_DATA, BLOB_DIFF, BLOB_DOUBLE_DATA, BLOB_DOUBLE_DIFF = 5, 6, 8, 9
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class _NotCovered(Exception):
    pass


class _Reader:
    """Wire-format fields of a byte range of a file, read as they come."""

    def __init__(self, f, start, end):
        self.f, self.pos, self.end = f, start, end
        f.seek(start)

    def _byte(self):
        b = self.f.read(1)
        if not b:
            raise _NotCovered("truncated")
        self.pos += 1
        return b[0]

    def varint(self):
        shift = value = 0
        while True:
            b = self._byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise _NotCovered("varint too long")

    def fields(self):
        """(number, wire type, start of the field's bytes, start of its
        payload, end): the payload of a LENGTH field is left unread for the
        caller to read or skip with seek."""
        while self.pos < self.end:
            start = self.pos
            self.f.seek(start)          # the caller may have read elsewhere
            key = self.varint()
            number, wire = key >> 3, key & 7
            if wire == VARINT:
                self.varint()
                payload = self.pos
            elif wire == LENGTH:
                n = self.varint()
                payload = self.pos
                self.pos += n
            elif wire in (FIXED64, FIXED32):
                payload = self.pos
                self.pos += 8 if wire == FIXED64 else 4
            else:
                raise _NotCovered("wire type %d" % wire)
            if self.pos > self.end or number == 0:
                raise _NotCovered("field past its message")
            self.f.seek(self.pos)
            yield number, wire, start, payload, self.pos

    def bytes_of(self, start, end):
        self.f.seek(start)
        data = self.f.read(end - start)
        self.f.seek(self.pos)
        if len(data) != end - start:
            raise _NotCovered("truncated")
        return data


def _blob(r, start, end):
    """A BlobProto's fields but its values, and where its values lie."""
    kept, chunks = [], []
    for number, wire, field, payload, stop in _Reader(r.f, start, end).fields():
        if number == BLOB_DATA and wire == LENGTH:
            if (stop - payload) % 4:
                raise _NotCovered("packed floats of odd length")
            chunks.append((payload, stop - payload))
        elif number in (BLOB_DATA, BLOB_DIFF, BLOB_DOUBLE_DATA, BLOB_DOUBLE_DIFF):
            raise _NotCovered("values this walk does not read")
        else:
            kept.append(r.bytes_of(field, stop))
    r.f.seek(end)
    return b"".join(kept), chunks


def read_skeleton(path):
    """(NetParameter whose blobs hold shapes only, [[chunks of each blob] of
    each layer]) or None where the whole file must be parsed."""
    if sys.byteorder != "little":
        return None
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            return _skeleton(f, size)
    except Exception:       # _NotCovered, OSError, protobuf's DecodeError: parse it whole
        return None


def _skeleton(f, size):
    top = _Reader(f, 0, size)
    parts, places = [], []
    for number, wire, field, payload, stop in top.fields():
        if number == NET_V1_LAYERS:
            raise _NotCovered("V1 layers")
        if number != NET_LAYER or wire != LENGTH:
            parts.append(top.bytes_of(field, stop))
            continue
        layer_parts, layer_places = [], []
        lr = _Reader(f, payload, stop)
        for n2, w2, f2, p2, s2 in lr.fields():
            if n2 == LAYER_BLOBS and w2 == LENGTH:
                kept, chunks = _blob(lr, p2, s2)
                layer_parts.append(_key(LAYER_BLOBS, LENGTH) + _varint(len(kept)) + kept)
                layer_places.append(chunks)
            else:
                layer_parts.append(lr.bytes_of(f2, s2))
        body = b"".join(layer_parts)
        parts.append(_key(NET_LAYER, LENGTH) + _varint(len(body)) + body)
        places.append(layer_places)
        f.seek(stop)
    net = caffe_pb2.NetParameter()
    net.ParseFromString(b"".join(parts))
    if len(net.layer) != len(places):
        raise _NotCovered("layer count")
    return net, places


def _key(number, wire):
    return _varint(number << 3 | wire)


def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def fill(f, blob, chunks):
    """Read a blob's values, at `chunks` of the open file, into its data."""
    raw = memoryview(blob.data.reshape(-1)).cast("B")
    at = 0
    for offset, n in chunks:
        f.seek(offset)
        if f.readinto(raw[at:at + n]) != n:
            raise OSError("ended inside the values of a parameter blob")
        at += n


def count(chunks):
    return sum(n for _, n in chunks) // 4

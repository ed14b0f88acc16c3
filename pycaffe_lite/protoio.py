"""Reading and writing Caffe's protobuf files, text and binary, with errors that
name the file (and the line and column for text)."""
import io
import math
import os
import re
import tempfile
import threading

import numpy as np
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf import text_format

from .errors import FormatError, WriteError
from .proto import caffe_pb2


def _read_bytes(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise FormatError("%s: no such file (expected %s)" % (path, what)) from None
    except IsADirectoryError:
        raise FormatError("%s: is a directory, expected %s" % (path, what)) from None
    except OSError as e:
        raise FormatError("%s: cannot read %s: %s" % (path, what, e.strerror)) from None
    except ValueError:       # a NUL byte in the path
        raise FormatError("%r: not a usable file name (it holds a NUL byte); expected %s" % (path, what)) from None


def parse_text(text, msg, source="<string>"):
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        line, col = getattr(e, "_line", None), getattr(e, "_column", None)
        detail = str(e)
        m = re.match(r"^(\d+):(\d+) ?: ?(.*)$", detail, re.S)
        if m:
            line, col, detail = int(m.group(1)), int(m.group(2)), m.group(3)
        where = source if line is None else "%s:%s:%s" % (source, line, col)
        raise FormatError("%s: cannot parse %s: %s" % (where, msg.DESCRIPTOR.name, detail)) from None
    return msg


def read_text(path, msg):
    data = _read_bytes(path, "a %s text file" % msg.DESCRIPTOR.name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("%s: not a text file (is it a binary .caffemodel? a prototxt was expected)"
                          % path) from None
    return parse_text(text, msg, path)


def read_binary(path, msg):
    data = _read_bytes(path, "a binary %s" % msg.DESCRIPTOR.name)
    try:
        msg.ParseFromString(data)
    except _message.DecodeError as e:
        raise FormatError("%s: not a valid binary %s (truncated, corrupted or not a protobuf file: %s)"
                          % (path, msg.DESCRIPTOR.name, e)) from None
    return msg


_UMASK_LOCK = threading.Lock()


def file_mode():
    """The mode open() gives a new file: 0666 less the umask (a temporary
    file from mkstemp is 0600, which nobody else could read)."""
    with _UMASK_LOCK:
        mask = os.umask(0)
        os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path, data):
    """Write `data` to a temporary file beside `path`, then rename it over
    `path`: readers never see a half-written file, and what was there stays
    whole if writing fails. A failure is a WriteError naming the path and
    the reason."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        _discard(tmp)
        raise WriteError(path, e) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp):
    if tmp and os.path.exists(tmp):
        try:
            os.unlink(tmp)
        except OSError:
            pass


def write_binary(path, msg):
    """Write atomically: readers never see a half-written file under `path`."""
    atomic_write(path, msg.SerializeToString())


def _short_float(value, digits, fallback, to_type):
    """C++ protobuf's way: the shortest of %.{digits}g and %.{fallback}g that reads back the same."""
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    text = "%.*g" % (digits, value)
    return text if to_type(float(text)) == to_type(value) else "%.*g" % (fallback, value)


class _CaffeTextPrinter(text_format._Printer):
    """Prints numbers as Caffe's C++ tools do (1 rather than 1.0), so that text
    we write matches what upgrade_net_proto_text and friends write."""

    def PrintFieldValue(self, field, value):
        if field.cpp_type == _descriptor.FieldDescriptor.CPPTYPE_FLOAT:
            self.out.write(_short_float(value, 6, 9, np.float32))
        elif field.cpp_type == _descriptor.FieldDescriptor.CPPTYPE_DOUBLE:
            self.out.write(_short_float(value, 15, 17, float))
        else:
            super().PrintFieldValue(field, value)


def to_text(msg):
    out = io.StringIO()
    _CaffeTextPrinter(out).PrintMessage(msg)
    return out.getvalue()


def write_text(path, msg):
    atomic_write(path, to_text(msg).encode("utf-8"))


def read_net_text(path):
    return read_text(path, caffe_pb2.NetParameter())


def read_net_binary(path):
    """A .caffemodel, checked to hold at least one layer."""
    net = read_binary(path, caffe_pb2.NetParameter())
    if not len(net.layer) and not len(net.layers):
        raise FormatError("%s: holds no layers; it is not a .caffemodel (NetParameter with weights)" % path)
    return net


def read_blob_proto(path):
    return read_binary(path, caffe_pb2.BlobProto())

"""Data layers: Data (LMDB/LevelDB of Datums), ImageData (a list of image
files), MemoryData (arrays handed over from Python). The first two prefetch
batches in a background thread and transform whole batches at once."""
import json
import os

import numpy as np

from .. import backend
from ..data import db as dbmod
from ..data.datum import decode_datum, parse_datum, read_image
from ..data.prefetch import Prefetcher
from ..data.transformer import DataTransformer
from ..errors import FormatError, ShapeError
from ..layer import Layer, register
from ..proto import caffe_pb2 as pb


class _PrefetchingLayer(Layer):
    exact_bottoms = 0
    min_tops = 1
    max_tops = 2

    def layer_setup(self, bottom, top):
        # Each data layer has its own random stream (crops, mirrors, shuffles),
        # seeded from the global one so set_random_seed makes runs repeatable.
        self.rng = np.random.default_rng(int(backend.rng().integers(0, 2 ** 63)))
        self.transformer = DataTransformer(self.param.transform_param, self.phase, self.rng)
        self.records_read = 0
        self.open_source()
        c, h, w = self.transformer.output_shape(*self.record_shape)
        top[0].reshape((self.batch_size, c, h, w))
        if len(top) > 1:
            top[1].reshape((self.batch_size,))
        self._prefetch = None

    def reshape(self, bottom, top):
        pass

    def _start(self):
        if self._prefetch is None:
            on_cuda = backend.mode() == backend.GPU and getattr(backend.xp(), "__name__", "") == "cupy"
            self._device = backend._state["device"] if on_cuda else None
            self._stream = None
            self._consumed = self._position()
            self._prefetch = Prefetcher(self._next_batch, depth=3, name="%s prefetch" % self.name)

    def _position(self):
        return int(self.records_read), json.dumps(self.rng.bit_generator.state).encode()

    def _next_batch(self):
        data, labels = self.load_batch()
        if self._device is not None:
            data = self._to_device(data)
        return data, labels, self._position()

    def _to_device(self, data):
        """From the prefetch thread: stage the batch in pinned host memory and
        copy it up on a stream of its own, so the copy overlaps the net's work;
        forward makes its stream wait for the copy (no host synchronisation)."""
        import cupy
        import cupyx
        with cupy.cuda.Device(self._device):
            if self._stream is None:
                self._stream = cupy.cuda.Stream(non_blocking=True)
            pinned = cupyx.empty_pinned(data.shape, dtype=np.float32)
            pinned[...] = data
            with self._stream:
                dev = cupy.empty(data.shape, dtype=np.float32)
                dev.set(pinned, stream=self._stream)
                event = self._stream.record()
        return (dev, event, pinned)

    # -- where the layer stands, for exact resume -------------------------
    def get_state(self):
        """(records consumed by the net, random state) after the last forward."""
        if self._prefetch is None:
            return self._position()
        return self._consumed

    def set_state(self, records_read, random_state):
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None
        self.rewind(int(records_read))
        self.records_read = int(records_read)
        if random_state:
            self.rng.bit_generator.state = json.loads(random_state.decode())

    def forward(self, bottom, top):
        self._start()
        data, labels, self._consumed = self._prefetch.next()
        if isinstance(data, tuple):              # already on the device (GPU mode)
            data, event, _ = data
            self.xp.cuda.get_current_stream().wait_event(event)
        top[0].reshape(data.shape)
        top[0].dev_data[...] = self.xp.asarray(data)
        if len(top) > 1:
            top[1].reshape(labels.shape)
            top[1].dev_data[...] = self.xp.asarray(labels)

    def __del__(self):
        if getattr(self, "_prefetch", None) is not None:
            self._prefetch.close()


@register("Data")
class DataLayer(_PrefetchingLayer):
    def open_source(self):
        p = self.param.data_param
        if not p.source:
            raise self.error("data_param needs a source (the database path)")
        if not p.batch_size:
            raise self.error("data_param needs batch_size > 0")
        self.batch_size = int(p.batch_size)
        try:
            self.reader = dbmod.Reader(p.source, dbmod.backend_name(p.backend))
        except FormatError as e:
            raise self.error("%s" % e, FormatError) from None
        if not len(self.reader):
            raise self.error("database %s is empty" % p.source, FormatError)
        # The first record decides the shape, as in Caffe.
        key, value = self.reader.next()
        self.record_shape = self._decode(key, value)[0].shape
        self._skip = int(self.rng.integers(0, p.rand_skip)) if p.rand_skip else 0
        self.rewind(0)

    def _decode(self, key, value):
        t = self.param.transform_param
        try:
            datum = parse_datum(value, key)
            return decode_datum(datum, t.force_color, t.force_gray, key), datum.label
        except FormatError as e:
            raise FormatError("%s: %s" % (self.param.data_param.source, e)) from None

    def rewind(self, records_read):
        self.reader.seek_first()
        self.reader.skip((self._skip + records_read) % len(self.reader))

    def take_records(self):
        """The (key, value) records of the next batch."""
        # With several solvers, each TRAIN net reads every solver_count-th
        # record, starting at its rank (Caffe's DataLayer::Skip); TEST reads all.
        count, rank = backend.solver_count(), backend.solver_rank()
        if self.phase != pb.TEST and count > 1:
            self.reader.skip((rank - self.records_read) % count)
            self.records_read += (rank - self.records_read) % count
        records = []
        for i in range(self.batch_size):
            records.append(self.reader.next())
            self.records_read += 1
            if self.phase != pb.TEST and count > 1 and i + 1 < self.batch_size:
                self.reader.skip(count - 1)
                self.records_read += count - 1
        return records

    def load_batch(self):
        images = np.empty((self.batch_size,) + tuple(self.record_shape),
                          dtype=np.uint8)
        labels = np.empty(self.batch_size, np.float32)
        for i, (key, value) in enumerate(self.take_records()):
            try:
                img, labels[i] = self._decode(key, value)         # names the database already
            except FormatError as e:
                raise self.error(str(e), FormatError) from None
            if img.shape != self.record_shape:
                raise self.error("record %r in %s is %s, but the first record is %s; every record must have "
                                 "the same size (use crop_size, or resize when converting)"
                                 % (key, self.param.data_param.source, img.shape, self.record_shape), ShapeError)
            if img.dtype != np.uint8:
                images = images.astype(np.float32)
            images[i] = img
        return self.transformer.transform(images), labels


def read_list_file(path, what="list file"):
    """Lines 'relative/path label' -> [(path, label)]; the label follows the last space."""
    try:
        with open(path) as f:
            raw = f.read().splitlines()
    except OSError as e:
        raise FormatError("%s: cannot read the %s: %s" % (path, what, e.strerror)) from None
    lines = []
    for number, line in enumerate(raw, start=1):
        if not line.strip():
            continue
        name, sep, label = line.rstrip().rpartition(" ")
        if not sep or not name:
            raise FormatError("%s:%d: expected 'path label', got %r (no label)" % (path, number, line))
        try:
            lines.append((name, int(label)))
        except ValueError:
            raise FormatError("%s:%d: the label %r is not an integer" % (path, number, label)) from None
    return lines


@register("ImageData")
class ImageDataLayer(_PrefetchingLayer):
    def open_source(self):
        p = self.param.image_data_param
        if not p.source:
            raise self.error("image_data_param needs a source (the list file)")
        self.batch_size = int(p.batch_size)
        try:
            self.lines = read_list_file(p.source)
        except FormatError as e:
            raise self.error(str(e), FormatError) from None
        if not self.lines:
            raise self.error("list file %s names no images" % p.source, FormatError)
        if p.shuffle:
            self._shuffle()
        self._skip = int(self.rng.integers(0, p.rand_skip)) if p.rand_skip else 0
        self.rewind(0)
        img = self._read(*self.lines[self.pos])
        self.record_shape = img.shape

    def _shuffle(self):
        order = self.rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def _read(self, name, label):
        p = self.param.image_data_param
        path = os.path.join(p.root_folder, name) if p.root_folder else name
        img = read_image(path, p.new_height, p.new_width, p.is_color)
        if img is None:
            raise self.error("cannot read image %s (listed in %s)" % (path, p.source), FormatError)
        return img.transpose(2, 0, 1)

    def rewind(self, records_read):
        # Without shuffling the order is fixed; with it, resume restarts the
        # current order from the stored position.
        self.pos = (self._skip + records_read) % len(self.lines)

    def load_batch(self):
        images = np.empty((self.batch_size,) + tuple(self.record_shape), np.uint8)
        labels = np.empty(self.batch_size, np.float32)
        for i in range(self.batch_size):
            self.records_read += 1
            name, label = self.lines[self.pos]
            img = self._read(name, label)
            if img.shape != self.record_shape:
                raise self.error("image %s is %s but the first is %s; set new_height/new_width or crop_size"
                                 % (name, img.shape, self.record_shape), ShapeError)
            images[i], labels[i] = img, label
            self.pos += 1
            if self.pos >= len(self.lines):
                self.pos = 0
                if self.param.image_data_param.shuffle:
                    self._shuffle()
        return self.transformer.transform(images), labels


@register("MemoryData")
class MemoryDataLayer(Layer):
    """Batches from arrays given with net.set_input_arrays(data, labels)."""
    exact_bottoms = 0
    exact_tops = 2

    def layer_setup(self, bottom, top):
        p = self.param.memory_data_param
        self.batch_size = int(p.batch_size)
        self.shape = (int(p.channels), int(p.height), int(p.width))
        if not self.batch_size or not all(self.shape):
            raise self.error("memory_data_param needs batch_size, channels, height and width")
        top[0].reshape((self.batch_size,) + self.shape)
        top[1].reshape((self.batch_size,))
        self._data = self._labels = None
        self._pos = 0

    def reshape(self, bottom, top):
        pass

    def reset(self, data, labels):
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32).reshape(len(labels), -1)[:, 0]
        if data.ndim != 4 or data.shape[1:] != self.shape:
            raise self.error("input data must be N x %d x %d x %d, got %s" % (self.shape + (data.shape,)),
                             ShapeError)
        if len(labels) != len(data):
            raise self.error("%d labels for %d inputs" % (len(labels), len(data)), ShapeError)
        if len(data) % self.batch_size:
            raise self.error("the number of inputs (%d) must be a multiple of batch_size (%d)"
                             % (len(data), self.batch_size), ShapeError)
        self._data, self._labels, self._pos = data, labels, 0

    def forward(self, bottom, top):
        if self._data is None:
            raise self.error("no input arrays: call net.set_input_arrays(data, labels) first")
        s = slice(self._pos, self._pos + self.batch_size)
        top[0].dev_data[...] = self.xp.asarray(self._data[s])
        top[1].dev_data[...] = self.xp.asarray(self._labels[s])
        self._pos = (self._pos + self.batch_size) % len(self._data)

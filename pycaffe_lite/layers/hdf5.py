"""HDF5Data (rows of datasets named like the tops, from the .h5 files a list
file names) and HDF5Output (bottoms appended to an .h5 file). Needs h5py."""
import os

import numpy as np

from ..errors import ConfigError, FormatError
from ..layer import Layer, register


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConfigError("HDF5 layers need h5py (pip install h5py)") from None
    return h5py


@register("HDF5Data")
class HDF5DataLayer(Layer):
    exact_bottoms = 0
    min_tops = 1

    def layer_setup(self, bottom, top):
        p = self.param.hdf5_data_param
        h5py = _h5py()
        if not p.batch_size:
            raise self.error("hdf5_data_param needs batch_size > 0")
        try:
            with open(p.source) as f:
                self.files = [line.strip() for line in f if line.strip()]
        except OSError as e:
            raise self.error("cannot read the list of HDF5 files %s: %s" % (p.source, e.strerror), FormatError) \
                from None
        if not self.files:
            raise self.error("%s names no HDF5 files" % p.source, FormatError)
        self.names = list(self.param.top)
        self._start()
        for blob, name in zip(top, self.names):
            blob.reshape((p.batch_size,) + self.arrays[name].shape[1:])
        del h5py

    def _start(self):
        self.rng = np.random.default_rng(0)
        self.file_order = list(range(len(self.files)))
        if self.param.hdf5_data_param.shuffle:
            self.rng.shuffle(self.file_order)
        self.file_pos, self.row, self.records_read = 0, 0, 0
        self._load(self.file_order[0])

    # The order of rows depends only on how many were read (the shuffles use
    # a fixed seed), so the position is that count: resume replays it.
    def get_state(self):
        return self.records_read, b""

    def set_state(self, records_read, random_state):
        self._start()
        for _ in range(int(records_read)):
            self._next_row()

    def _next_row(self):
        if self.row >= len(self.rows):
            self.row = 0
            self.file_pos = (self.file_pos + 1) % len(self.files)
            if self.file_pos == 0 and self.param.hdf5_data_param.shuffle:
                self.rng.shuffle(self.file_order)
            if len(self.files) > 1 or self.param.hdf5_data_param.shuffle:
                self._load(self.file_order[self.file_pos])
        r = self.rows[self.row]
        self.row += 1
        self.records_read += 1
        return r

    def _load(self, index):
        h5py = _h5py()
        path = self.files[index]
        if not os.path.exists(path):
            raise self.error("HDF5 file %s (listed in %s) does not exist" % (path, self.param.hdf5_data_param.source),
                             FormatError)
        with h5py.File(path, "r") as f:
            missing = [n for n in self.names if n not in f]
            if missing:
                raise self.error("HDF5 file %s has no dataset %s (it has %s); datasets are named after the tops"
                                 % (path, ", ".join(repr(m) for m in missing), sorted(f.keys())), FormatError)
            self.arrays = {n: np.asarray(f[n], dtype=np.float32) for n in self.names}
        rows = {a.shape[0] for a in self.arrays.values()}
        if len(rows) != 1:
            raise self.error("datasets in %s have different numbers of rows: %s" % (path, sorted(rows)), FormatError)
        self.rows = np.arange(rows.pop())
        if self.param.hdf5_data_param.shuffle:
            self.rng.shuffle(self.rows)

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        n = self.param.hdf5_data_param.batch_size
        for i in range(n):
            r = self._next_row()
            for blob, name in zip(top, self.names):
                blob.dev_data[i] = self.xp.asarray(self.arrays[name][r])


@register("HDF5Output")
class HDF5OutputLayer(Layer):
    """Appends each forward's bottoms to datasets 'data' and 'label' (Caffe's names)."""
    exact_bottoms = 2
    exact_tops = 0

    def layer_setup(self, bottom, top):
        h5py = _h5py()
        self.path = self.param.hdf5_output_param.file_name
        if not self.path:
            raise self.error("hdf5_output_param needs file_name")
        h5py.File(self.path, "w").close()

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        h5py = _h5py()
        with h5py.File(self.path, "a") as f:
            for name, blob in zip(("data", "label"), bottom):
                values = blob.data.astype(np.float32)
                if name not in f:
                    f.create_dataset(name, data=values, maxshape=(None,) + values.shape[1:])
                else:
                    d = f[name]
                    d.resize(d.shape[0] + values.shape[0], axis=0)
                    d[-values.shape[0]:] = values

"""Net weights in Caffe's HDF5 layout (Net::ToHDF5 / CopyTrainedLayersFromHDF5):
a group per layer under "data" (and "diff"), a dataset per parameter blob
named by its index; shared parameters are stored by their owner only."""
import os

import numpy as np

from .errors import ConfigError, FormatError, ShapeError


def _h5py():
    try:
        import h5py
    except ImportError:
        raise ConfigError("HDF5 weights need h5py (pip install -e '.[hdf5]')") from None
    return h5py


def save_net(net, path, write_diff=False):
    h5py = _h5py()
    owner_of = dict(zip(net._param_layer_indices, net._param_owner))
    tmp = "%s.tmp-%d" % (path, os.getpid())
    with h5py.File(tmp, "w") as f:
        groups = [f.create_group("data")] + ([f.create_group("diff")] if write_diff else [])
        for li, (name, layer) in enumerate(zip(net._layer_names, net.layers)):
            for g, group in enumerate(groups):
                layer_group = group.require_group(name)
                for i, blob in enumerate(layer.blobs):
                    if owner_of.get((li, i), -1) == -1:
                        layer_group.create_dataset(str(i), data=blob.diff if g else blob.data)
    os.replace(tmp, path)


def load_net(net, path):
    h5py = _h5py()
    owner_of = dict(zip(net._param_layer_indices, net._param_owner))
    if not os.path.isfile(path):
        raise FormatError("%s: no such HDF5 weights file" % path)
    with h5py.File(path, "r") as f:
        if "data" not in f:
            raise FormatError("%s: not Caffe's HDF5 weights layout (no 'data' group)" % path)
        data = f["data"]
        for name in data:
            if name not in net._layer_dict:
                continue
            li = net._layer_names.index(name)
            layer, group = net.layers[li], data[name]
            if len(group) > len(layer.blobs):
                raise ShapeError("%s: layer '%s' holds %d blobs, the net's layer has %d"
                                 % (path, name, len(group), len(layer.blobs)))
            for i, blob in enumerate(layer.blobs):
                if str(i) not in group:
                    if owner_of.get((li, i), -1) != -1:
                        continue         # shared with another layer: stored there
                    raise FormatError("%s: layer '%s' has no dataset 'data/%s/%d' (param %d of %d); the file was "
                                      "written for another net" % (path, name, name, i, i, len(layer.blobs)))
                values = np.asarray(group[str(i)], dtype=np.float32)
                if values.size != blob.count:
                    raise ShapeError("%s: data/%s/%d is %s, the net wants %s" % (path, name, i, values.shape,
                                                                                 blob.shape))
                blob.data[...] = values.reshape(blob.shape)

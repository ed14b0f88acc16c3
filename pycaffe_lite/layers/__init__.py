"""Importing this package registers every built-in layer type."""
from . import common, neuron, conv, inner_product, pooling, lrn, loss, norm, data, python, hdf5, indexing, recurrent, window_data  # noqa: F401

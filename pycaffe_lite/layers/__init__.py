"""Importing this package registers every built-in layer type: BVLC Caffe's,
then the forks' (ssd, detection_loss, roi, resize and the odd ones among
the families above)."""
from . import common, neuron, conv, inner_product, pooling, lrn, loss, norm, data, python, hdf5, indexing, recurrent, window_data  # noqa: F401
from . import ssd, detection_loss, roi, resize, annotated_data  # noqa: F401

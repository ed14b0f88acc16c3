"""Data: LMDB access, Datum <-> image arrays, Caffe's DataTransformer, prefetching."""

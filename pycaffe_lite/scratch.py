"""Grow-only buffers: big temporaries kept and reused across iterations
instead of allocated (and page-faulted) anew on every call."""


class Buffers:
    def __init__(self):
        self._bufs = {}

    def get(self, key, size, dtype, empty):
        """At least `size` elements of `dtype` under `key` (a 1-D view);
        `empty(size, dtype=...)` allocates when the kept one is too small."""
        buf = self._bufs.get(key)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self._bufs[key] = empty(size, dtype=dtype)
        return buf[:size]

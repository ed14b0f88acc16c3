"""pycaffe's caffe.Timer: start(), stop(), and the milliseconds in between
(python/train.py times each layer with one per layer)."""
import time


class Timer:
    def __init__(self):
        self._start = None
        self._elapsed = 0.0
        self._running = False

    def start(self):
        self._start = time.perf_counter()
        self._running = True

    def stop(self):
        if self._running:
            self._elapsed = time.perf_counter() - self._start
            self._running = False

    @property
    def ms(self):
        """Milliseconds between the last start() and stop() (0 before the first
        start; a running timer is stopped first, as Caffe's is)."""
        if self._start is None:
            return 0.0
        self.stop()
        return self._elapsed * 1e3

"""A background thread that keeps a few batches ready, as Caffe's prefetching
data layers do (Caffe keeps 3 ahead)."""
import atexit
import queue
import threading
import weakref

_LIVE = weakref.WeakSet()


@atexit.register
def _stop_all():
    # Threads still inside OpenCV or LMDB at interpreter exit abort the process.
    for p in list(_LIVE):
        p.close()


class Prefetcher:
    def __init__(self, produce, depth=3, name="prefetch"):
        # A bound method is held weakly: the thread must not keep its layer
        # (and the database the layer reads) alive once the net is dropped.
        self._produce = weakref.WeakMethod(produce) if hasattr(produce, "__self__") else (lambda: produce)
        self._queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        _LIVE.add(self)

    def _run(self):
        while not self._stop.is_set():
            produce = self._produce()
            if produce is None:             # its layer is gone
                return
            try:
                item = (True, produce())
            except BaseException as e:      # handed to the consumer, which raises it
                item = (False, e)
            del produce
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if not item[0]:
                return

    def next(self):
        ok, value = self._queue.get()
        if not ok:
            self._stop.set()
            raise value
        return value

    def close(self):
        self._stop.set()
        # The thread may drop the layer's last reference itself (the layer is
        # then closed from inside it); it is stopping already.
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

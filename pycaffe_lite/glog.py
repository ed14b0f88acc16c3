"""glog-format logging, so that log parsers written for Caffe read ours:

    I1128 04:33:19.123456 12345 solver.py:210] Iteration 20, loss = 6.9
"""
import datetime
import logging
import os
import sys

_LEVELS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "F"}


class GlogFormatter(logging.Formatter):
    def format(self, record):
        t = datetime.datetime.fromtimestamp(record.created)
        head = "%s%s %s %5d %s:%d] " % (_LEVELS.get(record.levelno, "I"), t.strftime("%m%d"),
                                        t.strftime("%H:%M:%S.%f"), os.getpid() if record.process is None
                                        else record.process, record.filename, record.lineno)
        return head + record.getMessage()


_progress = {"bar": None}


def set_progress_bar(bar):
    """While a tqdm bar is shown, log lines are printed above it, never into it."""
    _progress["bar"] = bar


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and tools redirect it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass

    def emit(self, record):
        bar = _progress["bar"]
        if bar is None:
            return super().emit(record)
        bar.write(self.format(record), file=sys.stderr)


logger = logging.getLogger("pycaffe_lite")
if not logger.handlers:
    _handler = _StderrHandler()
    _handler.setFormatter(GlogFormatter())
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def info(msg, *args):
    logger.info(msg, *args, stacklevel=2)


def warning(msg, *args):
    logger.warning(msg, *args, stacklevel=2)


def error(msg, *args):
    logger.error(msg, *args, stacklevel=2)


# pycaffe's init_log / log. glog's levels: 0 INFO, 1 WARNING, 2 ERROR, 3 FATAL.
_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def init_log(level=0, stderr=False):
    """Log messages of glog level `level` and above (pycaffe's caffe.init_log).
    Ours always log to standard error, so `stderr` changes nothing."""
    logger.setLevel(_GLOG_LEVELS.get(int(level), logging.CRITICAL))


def log(message):
    """One INFO line in glog format (pycaffe's caffe.log)."""
    logger.info(str(message), stacklevel=2)

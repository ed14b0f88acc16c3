"""glog-format logging, so that log parsers written for Caffe read ours:

    I1128 04:33:19.123456 12345 solver.py:210] Iteration 20, loss = 6.9

with glog's controls, read from the environment when pycaffe_lite is
imported, as glog reads its flags when a program starts:

    GLOG_minloglevel      0 INFO, 1 WARNING, 2 ERROR, 3 FATAL: nothing below is logged
    GLOG_logtostderr      1: log to standard error only, no log files
    GLOG_alsologtostderr  1: log files, and every message to standard error too
    GLOG_stderrthreshold  with log files, messages from this level on also go to
                          standard error (default 2, ERROR)
    GLOG_log_dir          where log files go (default $TEST_TMPDIR, $TMPDIR, $TMP, /tmp)
    GLOG_v                verbose messages up to this level (vlog)

As in Caffe: before logging is initialized everything goes to standard error
(pycaffe, which does not initialize it unless asked). The command-line tools
initialize it the way Caffe's do (InitGoogleLogging with alsologtostderr):
log files <program>.<host>.<user>.log.<SEVERITY>.<date>-<time>.<pid> with a
<program>.<SEVERITY> link to the newest, and every message on standard error.
caffe.init_log(level, stderr) does what pycaffe's does."""
import datetime
import getpass
import logging
import os
import socket
import sys
import threading
import time

_LEVELS = {logging.DEBUG: "I", logging.INFO: "I", logging.WARNING: "W", logging.ERROR: "E", logging.CRITICAL: "F"}
SEVERITIES = ("INFO", "WARNING", "ERROR", "FATAL")


def _severity(levelno):
    """glog's severity index (0 INFO .. 3 FATAL) of a logging level."""
    if levelno >= logging.CRITICAL:
        return 3
    if levelno >= logging.ERROR:
        return 2
    if levelno >= logging.WARNING:
        return 1
    return 0


def _env_int(name, default):
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _env_bool(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "t", "y")


class _Flags:
    """glog's FLAGS_*, from GLOG_* when read_environment() runs."""

    def read_environment(self):
        self.minloglevel = _env_int("GLOG_minloglevel", 0)
        self.logtostderr = _env_bool("GLOG_logtostderr")
        self.alsologtostderr = _env_bool("GLOG_alsologtostderr")
        self.stderrthreshold = _env_int("GLOG_stderrthreshold", 2)
        self.log_dir = os.environ.get("GLOG_log_dir", "")
        self.v = _env_int("GLOG_v", 0)
        self.program = None          # set by InitGoogleLogging: log files from then on


FLAGS = _Flags()
FLAGS.read_environment()


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


def _to_stderr(line):
    bar = _progress["bar"]
    if bar is not None:
        bar.write(line, file=sys.stderr)
    else:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _LogFiles:
    """glog's per-severity log files: a message goes to the file of its own
    severity and of every lower one (the INFO file holds everything)."""

    def __init__(self):
        self.files = {}
        self.failed = False
        self.lock = threading.Lock()

    def directory(self):
        if FLAGS.log_dir:
            return FLAGS.log_dir
        for var in ("TEST_TMPDIR", "TMPDIR", "TMP"):
            if os.environ.get(var) and os.path.isdir(os.environ[var]):
                return os.environ[var]
        return "/tmp" if os.path.isdir("/tmp") else "."

    def _open(self, severity):
        folder = self.directory()
        program = FLAGS.program or "python"
        try:
            user = getpass.getuser()
        except Exception:
            user = "invalid-user"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        name = "%s.%s.%s.log.%s.%s.%d" % (program, socket.gethostname(), user, SEVERITIES[severity], stamp,
                                          os.getpid())
        path = os.path.join(folder, name)
        f = open(path, "a")
        f.write("Log file created at: %s\nRunning on machine: %s\n"
                "Log line format: [IWEF]mmdd hh:mm:ss.uuuuuu threadid file:line] msg\n"
                % (time.strftime("%Y/%m/%d %H:%M:%S"), socket.gethostname()))
        link = os.path.join(folder, "%s.%s" % (program, SEVERITIES[severity]))
        try:
            if os.path.islink(link) or os.path.exists(link):
                os.remove(link)
            os.symlink(name, link)
        except OSError:
            pass
        return f

    def write(self, severity, line):
        with self.lock:
            for s in range(severity, -1, -1):
                f = self.files.get(s)
                if f is None:
                    if self.failed:
                        return
                    try:
                        f = self.files[s] = self._open(s)
                    except OSError as e:
                        self.failed = True          # as glog: say so once, go on without files
                        sys.stderr.write("Could not create logging file: %s\n" % (e.strerror or e))
                        return
                f.write(line + "\n")
                f.flush()

    def close(self):
        with self.lock:
            for f in self.files.values():
                f.close()
            self.files.clear()


_files = _LogFiles()


class _GlogHandler(logging.Handler):
    """Where a message goes, by glog's rules."""

    def emit(self, record):
        severity = _severity(record.levelno)
        if severity < FLAGS.minloglevel:
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        if FLAGS.program is None or FLAGS.logtostderr:
            _to_stderr(line)
            return
        _files.write(severity, line)
        if FLAGS.alsologtostderr or severity >= FLAGS.stderrthreshold:
            _to_stderr(line)


logger = logging.getLogger("pycaffe_lite")
if not logger.handlers:
    _handler = _GlogHandler()
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


def vlog(level, msg, *args):
    """glog's VLOG(level): an INFO line when GLOG_v is level or more."""
    if FLAGS.v >= level:
        logger.info(msg, *args, stacklevel=2)


def init_google_logging(program, alsologtostderr=False):
    """What a Caffe tool's GlobalInit does: log files from now on, named for
    `program` (the tools also set alsologtostderr, as Caffe's do)."""
    if alsologtostderr:
        FLAGS.alsologtostderr = True
    if FLAGS.program != program:
        _files.close()
    FLAGS.program = os.path.basename(program) or "python"


def init_log(level=None, stderr=None):
    """pycaffe's caffe.init_log: glog's level (0 INFO, 1 WARNING, 2 ERROR,
    3 FATAL) when given, log to standard error only when `stderr` is true,
    then initialize logging (log files, as InitGoogleLogging does)."""
    if level is not None:
        FLAGS.minloglevel = int(level)
    if stderr is not None:
        FLAGS.logtostderr = bool(stderr)
    init_google_logging(os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python")


def log(message):
    """One INFO line in glog format (pycaffe's caffe.log)."""
    logger.info(str(message), stacklevel=2)

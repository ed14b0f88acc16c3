"""One exception type per kind of mistake, so callers (and the command lines) can
tell a bad net definition from a bad file from a shape that does not fit.
Configuration and shape errors are also ValueErrors, which is what pycaffe's
Python code raises for the same mistakes."""


class CaffeError(Exception):
    """Base of every error pycaffe_lite raises on purpose."""


class ConfigError(CaffeError, ValueError):
    """A net or solver definition that cannot be built as written."""


class FormatError(CaffeError):
    """A file that is not what it should be (malformed text, truncated binary)."""


class ShapeError(CaffeError, ValueError):
    """Blob shapes that do not fit together."""


class WriteError(CaffeError, OSError):
    """A file that could not be written: the path, and the system's reason.
    Whatever was at the path before is still there, whole."""

    def __init__(self, path, error):
        self.path, self.reason = path, getattr(error, "strerror", None) or str(error)
        self.last_snapshot = None
        super().__init__(getattr(error, "errno", None), "cannot write %s: %s" % (path, self.reason))

    def __str__(self):
        return self.args[1]

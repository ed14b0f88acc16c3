"""One exception type per kind of mistake, so callers (and the command lines) can
tell a bad net definition from a bad file from a shape that does not fit."""


class CaffeError(Exception):
    """Base of every error pycaffe_lite raises on purpose."""


class ConfigError(CaffeError):
    """A net or solver definition that cannot be built as written."""


class FormatError(CaffeError):
    """A file that is not what it should be (malformed text, truncated binary)."""


class ShapeError(CaffeError):
    """Blob shapes that do not fit together."""

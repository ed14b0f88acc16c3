"""Key-value databases of Datum records: LMDB (and LevelDB through plyvel when
it is installed), read in key order with wrap-around, written in transactions."""
import os

from ..errors import ConfigError, FormatError

LMDB, LEVELDB = "lmdb", "leveldb"


def backend_name(value):
    """'lmdb'/'leveldb' from a flag string or DataParameter.DB enum value."""
    if isinstance(value, int):
        return LMDB if value == 1 else LEVELDB
    name = str(value).lower()
    if name not in (LMDB, LEVELDB):
        raise ConfigError("unknown database backend '%s' (use lmdb or leveldb)" % value)
    return name


def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise ConfigError("LevelDB needs the plyvel package (pip install plyvel); "
                          "or use --backend=lmdb") from None
    return plyvel


class Reader:
    """Iterates (key, value) pairs in key order, starting over after the last.
    LMDB is read by lmdb_read (in Python, every page checked against the
    file: a damaged database is an error, never a crash)."""

    def __init__(self, path, backend=LMDB):
        self.path = path
        self.backend = backend_name(backend)
        self._lmdb = self._db = None
        if not os.path.isdir(path):
            raise FormatError("%s: no such database directory (%s)" % (path, self.backend))
        if self.backend == LMDB:
            from .lmdb_read import LMDBFile
            self._lmdb = LMDBFile(path)
            self._count = len(self._lmdb)
        else:
            self._db = _plyvel().DB(path, create_if_missing=False)
            self._count = sum(1 for _ in self._db.iterator(include_value=False))
        self._iter = None
        self._valid = False
        self.seek_first()

    def __len__(self):
        return self._count

    def seek_first(self):
        self._iter = self._lmdb.items() if self._lmdb is not None else self._db.iterator()
        self._advance()
        self.position = 0

    def _advance(self):
        try:
            self._item = next(self._iter)
            self._valid = True
        except StopIteration:
            self._valid = False

    def next(self):
        """The current (key, value), then advance, wrapping at the end."""
        if not self._count:
            raise FormatError("%s: the database is empty" % self.path)
        if not self._valid:
            self.seek_first()
            if not self._valid:
                raise FormatError("%s: the database says it holds %d records but none can be read"
                                  % (self.path, self._count))
        item = self._item
        self._advance()
        self.position = (self.position + 1) % self._count
        return item

    def skip(self, n):
        for _ in range(n):
            self.next()

    def __del__(self):
        try:
            self.close()
        except Exception:          # half built, or at interpreter exit
            pass

    def close(self):
        self._iter = None
        if self._lmdb is not None:
            self._lmdb.close()
            self._lmdb = None
        if self._db is not None:
            self._db.close()
            self._db = None


class Writer:
    """Puts records in transactions of `batch` puts."""

    def __init__(self, path, backend=LMDB, batch=1000, map_size=1 << 40):
        self.backend = backend_name(backend)
        self.path = path
        self.batch = batch
        self._pending = 0
        if self.backend == LMDB:
            import lmdb
            os.makedirs(path, exist_ok=False)
            # No fsync per transaction: the database is written under a
            # temporary name and synced once in close(), before it is renamed.
            self._env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False, map_async=False, sync=False)
            self._txn = self._env.begin(write=True)
        else:
            self._db = _plyvel().DB(path, create_if_missing=True, error_if_exists=True)
            self._wb = self._db.write_batch()

    def put(self, key, value):
        if self.backend == LMDB:
            self._txn.put(key, value)
        else:
            self._wb.put(key, value)
        self._pending += 1
        if self._pending >= self.batch:
            self.commit()

    def commit(self):
        if self.backend == LMDB:
            self._txn.commit()
            self._txn = self._env.begin(write=True)
        else:
            self._wb.write()
            self._wb = self._db.write_batch()
        self._pending = 0

    def close(self):
        self.commit()
        if self.backend == LMDB:
            self._txn.abort()
            self._env.sync(True)
            self._env.close()
        else:
            self._db.close()

    def abandon(self):
        """Close without committing what is pending (the caller removes the
        database: a run that stopped half way)."""
        try:
            if self.backend == LMDB:
                self._txn.abort()
                self._env.close()
            else:
                self._db.close()
        except Exception:       # already closed, or broken: it is being removed anyway
            pass

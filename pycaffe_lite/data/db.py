"""Key-value databases of Datum records: LMDB (and LevelDB through plyvel when
it is installed), read in key order with wrap-around, written in transactions."""
import contextlib
import os
import shutil
import threading

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

    LMDB is read through the lmdb library inside a read transaction, one per
    pass: the transaction takes a reader slot in lock.mdb, so a process that
    writes the database meanwhile never reuses the pages this pass reads, and
    the pass sees one consistent snapshot (LMDB's MVCC), the records a
    commit adds showing up from the next pass on.

    Before LMDB reads a snapshot, lmdb_read walks its tree in Python, in the
    same transaction, and checks every page number, node and size against
    the file: LMDB itself does not, and a truncated or damaged data.mdb would
    kill the process with SIGBUS; here it is a FormatError naming the
    database. The walk does not read values and runs once per snapshot (a
    database nobody writes is checked once): on 20,000 records of 3x256x256
    it takes 50 ms, against 2.2 s for the Data layer to read them (2%), and
    reading through the library is faster than our reader was (128,000
    against 108,000 records/s; benchmarks/README.md), so the check stays and
    the records always come from the library."""

    def __init__(self, path, backend=LMDB):
        self.path = path
        self.backend = backend_name(backend)
        self._env = self._txn = self._db = None
        self._checked = None
        if not os.path.isdir(path):
            raise FormatError("%s: no such database directory (%s)" % (path, self.backend))
        if self.backend == LMDB:
            self._env = _shared_env(path)
        else:
            self._db = _plyvel().DB(path, create_if_missing=False)
            self._count = sum(1 for _ in self._db.iterator(include_value=False))
        self._iter = None
        self._valid = False
        self.seek_first()

    def __len__(self):
        return self._count

    def _snapshot(self):
        """A new read transaction, its snapshot checked; the record count."""
        import lmdb
        from .lmdb_read import LMDBFile, Overwritten
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        for _ in range(20):
            try:
                txn = self._env.begin(buffers=False)
            except lmdb.Error as e:
                raise FormatError("%s: cannot read the LMDB database: %s" % (self.path, e)) from None
            if txn.id() == self._checked:
                break
            try:
                tree = LMDBFile(self.path, txn.id())
                try:
                    tree.check()
                finally:
                    tree.close()
            except Overwritten:          # two commits since it began: take a newer snapshot
                txn.abort()
                continue
            except BaseException:
                txn.abort()
                raise
            self._checked = txn.id()
            break
        else:
            raise FormatError("%s: the database changed under every read transaction tried; is a writer "
                              "committing without pause?" % self.path)
        self._txn = txn
        return txn.stat()["entries"]

    def seek_first(self):
        if self._env is not None:
            self._count = self._snapshot()
            self._iter = self._txn.cursor().iternext(keys=True, values=True)
        else:
            self._iter = self._db.iterator()
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
            if not self._count:
                raise FormatError("%s: the database is empty" % self.path)
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
        if self._txn is not None:
            self._txn.abort()
            self._txn = None
        if self._env is not None:
            _release_env(self._env)
            self._env = None
        if self._db is not None:
            self._db.close()
            self._db = None


# LMDB allows one environment per database in a process (a second would
# break its locks): readers of one database share it, counted.
_ENVS = {}
_ENVS_LOCK = threading.RLock()      # a Reader dropped by the collector may release inside


def _shared_env(path):
    # by the data file itself: a database replaced under the same name (a
    # new conversion renamed over it) is another environment; readers of
    # the old one keep reading the old file, whole
    try:
        st = os.stat(os.path.join(path, "data.mdb"))
    except OSError as e:
        raise FormatError("%s: no data.mdb to read (%s)" % (path, e.strerror)) from None
    key = (os.path.realpath(path), st.st_dev, st.st_ino)
    with _ENVS_LOCK:
        entry = _ENVS.get(key)
        if entry is None:
            entry = _ENVS[key] = [_open_lmdb(path), 0]
        entry[1] += 1
        return entry[0]


def _release_env(env):
    with _ENVS_LOCK:
        for key, entry in list(_ENVS.items()):
            if entry[0] is env:
                entry[1] -= 1
                if not entry[1]:
                    del _ENVS[key]
                    env.close()
                return


def _open_lmdb(path):
    """The environment, read-only, with a reader slot in lock.mdb; where
    lock.mdb cannot be written (a read-only file system or folder: nobody
    can be writing there either), without one. data.mdb is first checked
    to hold LMDB's meta pages, the only part the library reads on opening."""
    import errno
    import lmdb
    from .lmdb_read import LMDBFile
    LMDBFile(path).close()               # a clear error for a file that is no LMDB database, or cut short
    for lock in (True, False):
        try:
            return lmdb.open(path, readonly=True, lock=lock, subdir=True, max_readers=1024, readahead=False)
        except lmdb.Error as e:
            denied = getattr(e, "errno", None) in (errno.EACCES, errno.EROFS, errno.EPERM) or \
                any(w in str(e) for w in ("Permission denied", "Read-only file system"))
            if lock and denied:
                continue
            raise FormatError("%s: cannot open the LMDB database: %s" % (path, e)) from None


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
            # mode: 0666 less the umask, as Caffe's files (LMDB's own default is executable)
            self._env = lmdb.open(path, map_size=map_size, subdir=True, meminit=False, map_async=False, sync=False,
                                  mode=0o666)
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


@contextlib.contextmanager
def new_database(path, backend=LMDB):
    """A Writer for a database that appears at `path` only whole: it is
    written under a temporary name, renamed when the block ends, and removed
    when anything (an error, Ctrl-C) stops the block first."""
    tmp = "%s.incomplete-%d" % (path.rstrip("/"), os.getpid())
    writer = None
    try:
        writer = Writer(tmp, backend)
        yield writer
        writer.close()
        writer = None
        os.rename(tmp, path)
    finally:
        if writer is not None:
            writer.abandon()
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)

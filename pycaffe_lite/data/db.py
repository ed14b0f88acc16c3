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


_ENVS = {}     # real path -> [environment, readers using it]


def check_lmdb_file(path):
    """An LMDB's data.mdb must hold every page its newer meta page counts:
    reading a database cut short (an interrupted copy) through the memory map
    would crash the process (SIGBUS), so say so before opening it."""
    import struct
    data = os.path.join(path, "data.mdb")
    try:
        size = os.path.getsize(data)
        with open(data, "rb") as f:
            head = f.read(2 * 65536)
    except OSError as e:
        raise FormatError("%s: cannot read data.mdb: %s" % (path, e.strerror or e)) from None
    if len(head) < 160:
        raise FormatError("%s: data.mdb is %d bytes, too short to be an LMDB database (truncated?)" % (path, size))
    magic, = struct.unpack_from("<I", head, 16)
    if magic != 0xBEEFC0DE:
        raise FormatError("%s: data.mdb does not start with LMDB's meta page (not an LMDB database, or damaged)"
                          % path)
    psize, = struct.unpack_from("<I", head, 40)          # the page size lives in the free DB's md_pad
    if psize < 512 or psize & (psize - 1) or len(head) < psize + 160:
        raise FormatError("%s: data.mdb has a damaged meta page (page size %d)" % (path, psize))
    metas = []
    for offset in (0, psize):
        if struct.unpack_from("<I", head, offset + 16)[0] == 0xBEEFC0DE:
            last_page, txnid = struct.unpack_from("<QQ", head, offset + 136)
            metas.append((txnid, last_page))
    txnid, last_page = max(metas)
    needed = (last_page + 1) * psize
    if size < needed:
        raise FormatError("%s: data.mdb is truncated: %d bytes, but its meta page counts %d pages of %d bytes "
                          "(%d bytes). The copy was cut short; copy or convert the database again"
                          % (path, size, last_page + 1, psize, needed))


def _lmdb_error(path, e):
    return FormatError("%s: the LMDB database is damaged (%s: %s); convert it again"
                       % (path, type(e).__name__, e))


def _open_lmdb_readonly(path):
    """One environment per database per process (LMDB allows no more), shared
    by the Readers of that database and closed with the last of them."""
    import lmdb
    key = os.path.realpath(path)
    entry = _ENVS.get(key)
    if entry is None:
        check_lmdb_file(path)
        try:
            # lock=False: reading must work on read-only media and shared copies.
            env = lmdb.open(path, readonly=True, lock=False, readahead=False, max_readers=512, subdir=True)
        except lmdb.Error as e:
            raise FormatError("%s: cannot open as LMDB: %s" % (path, e)) from None
        entry = _ENVS[key] = [env, 0]
    entry[1] += 1
    return entry[0]


def _release_lmdb(path):
    key = os.path.realpath(path)
    entry = _ENVS.get(key)
    if entry is not None:
        entry[1] -= 1
        if entry[1] <= 0:
            entry[0].close()
            del _ENVS[key]


class Reader:
    """Iterates (key, value) pairs in key order, starting over after the last."""

    def __init__(self, path, backend=LMDB):
        self.path = path
        self.backend = backend_name(backend)
        if not os.path.isdir(path):
            raise FormatError("%s: no such database directory (%s)" % (path, self.backend))
        if self.backend == LMDB:
            import lmdb
            self._env = _open_lmdb_readonly(path)
            try:
                self._txn = self._env.begin(buffers=False)
                self._cursor = self._txn.cursor()
                self._count = self._env.stat()["entries"]
            except lmdb.Error as e:
                _release_lmdb(path)
                raise _lmdb_error(path, e) from None
        else:
            self._db = _plyvel().DB(path, create_if_missing=False)
            self._count = sum(1 for _ in self._db.iterator(include_value=False))
            self._iter = None
        self._valid = False
        self.seek_first()

    def __len__(self):
        return self._count

    def seek_first(self):
        if self.backend == LMDB:
            import lmdb
            try:
                self._valid = self._cursor.first()
            except lmdb.Error as e:
                raise _lmdb_error(self.path, e) from None
        else:
            self._iter = self._db.iterator()
            self._advance_leveldb()
        self.position = 0

    def _advance_leveldb(self):
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
        if self.backend == LMDB:
            import lmdb
            try:
                item = (self._cursor.key(), self._cursor.value())
                self._valid = self._cursor.next()
            except lmdb.Error as e:
                raise _lmdb_error(self.path, e) from None
        else:
            item = self._item
            self._advance_leveldb()
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
        if self.backend == LMDB:
            if getattr(self, "_txn", None) is not None:
                self._txn.abort()
                self._txn = None
                _release_lmdb(self.path)
        else:
            self._db.close()


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

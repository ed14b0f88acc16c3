"""The structure of an LMDB database, checked in Python against the file.

LMDB's own library reads its memory map without checking page numbers against
the file: a database damaged on disk (a truncated copy, bytes shifted or
flipped) makes it touch pages past the end of the file, and the process dies
of SIGBUS. data/db.py reads records through the lmdb library, in a read
transaction; before it does, check() walks that transaction's snapshot of
the B+tree here, checking every page number, node offset and size against
the file, so damage is a FormatError naming the database and LMDB only ever
reads pages that exist. The layout is LMDB's (lmdb.h, mdb.c): two meta
pages, each with the id of the transaction that wrote it and its main
database's root, branch pages of child page numbers, leaf pages of keys and
values (in the leaf, or in a run of overflow pages). items() reads the
records the same way (tests compare it with the library)."""
import mmap
import os
import struct

from ..errors import FormatError

MAGIC = 0xBEEFC0DE
PAGE_HEADER = 16                 # mp_pgno (8), mp_pad, mp_flags, mp_lower, mp_upper (2 each)
NODE_HEADER = 8                  # mn_lo, mn_hi, mn_flags, mn_ksize (2 each)
P_BRANCH, P_LEAF, P_OVERFLOW, P_LEAF2 = 0x01, 0x02, 0x04, 0x20
F_BIGDATA, F_SUBDATA, F_DUPDATA = 0x01, 0x02, 0x04
P_INVALID = 2 ** 64 - 1
META_DB = 16 + 4 + 4 + 8 + 8     # after the page header: magic, version, address, mapsize
DB_SIZE = 48                     # MDB_db: pad, flags, depth, branch, leaf, overflow pages, entries, root


class LMDBFile:
    """The file's newest snapshot (or, with txnid, the snapshot that
    transaction wrote: None of it in the meta pages raises Overwritten)."""

    def __init__(self, path, txnid=None):
        self.path = path
        self.txnid = txnid
        name = os.path.join(path, "data.mdb") if os.path.isdir(path) else path
        try:
            self._file = open(name, "rb")
            size = os.fstat(self._file.fileno()).st_size
            self._map = mmap.mmap(self._file.fileno(), size, access=mmap.ACCESS_READ) if size else b""
        except (OSError, ValueError) as e:
            raise FormatError("%s: cannot read data.mdb: %s" % (path, getattr(e, "strerror", None) or e)) from None
        self.size = size
        self._read_meta()

    def _fail(self, what):
        raise FormatError("%s: the LMDB database is damaged (%s); convert or copy it again" % (self.path, what))

    def _read_meta(self):
        m = self._map
        if self.size < PAGE_HEADER + 160:
            raise FormatError("%s: data.mdb is %d bytes, too short to be an LMDB database (truncated?)"
                              % (self.path, self.size))
        if struct.unpack_from("<I", m, PAGE_HEADER)[0] != MAGIC:
            raise FormatError("%s: data.mdb does not start with LMDB's meta page (not an LMDB database, or "
                              "damaged)" % self.path)
        psize = struct.unpack_from("<I", m, META_DB)[0]          # the page size lives in the free DB's md_pad
        if psize < 512 or psize > 65536 or psize & (psize - 1):
            self._fail("a meta page gives the page size %d" % psize)
        self.psize = psize
        metas = []
        for page in (0, 1):
            base = page * psize
            if base + PAGE_HEADER + 160 > self.size or struct.unpack_from("<I", m, base + PAGE_HEADER)[0] != MAGIC:
                continue
            main = base + META_DB + DB_SIZE
            depth = struct.unpack_from("<H", m, main + 6)[0]
            entries, root = struct.unpack_from("<QQ", m, main + 32)
            last_page, txnid = struct.unpack_from("<QQ", m, base + META_DB + 2 * DB_SIZE)
            metas.append((txnid, last_page, root, entries, depth))
        if not metas:
            self._fail("no valid meta page")
        if self.txnid is not None:
            metas = [m for m in metas if m[0] == self.txnid]
            if not metas:
                raise Overwritten(self.txnid)
        txnid, last_page, root, entries, depth = max(metas)
        self.pages = min(last_page + 1, self.size // psize)
        if (last_page + 1) * psize > self.size:
            raise FormatError("%s: data.mdb is truncated: %d bytes, but its meta page counts %d pages of %d bytes "
                              "(%d bytes). The copy was cut short; copy or convert the database again"
                              % (self.path, self.size, last_page + 1, psize, (last_page + 1) * psize))
        self.root, self.entries, self.depth = root, entries, depth
        if root != P_INVALID and not 2 <= root < self.pages:
            self._fail("the root page %d is outside the file's %d pages" % (root, self.pages))

    def __len__(self):
        return self.entries

    def _page(self, pgno, kinds):
        if not 2 <= pgno < self.pages:
            self._fail("a page number %d outside the file's %d pages" % (pgno, self.pages))
        base = pgno * self.psize
        flags = struct.unpack_from("<H", self._map, base + 10)[0]
        if not flags & kinds:
            self._fail("page %d has flags %#x where a %s page was expected" % (pgno, flags, _kind(kinds)))
        if flags & P_LEAF2:
            self._fail("page %d is a LEAF2 page, which Caffe's databases do not hold" % pgno)
        return base, flags

    def _nodes(self, base, pgno):
        lower, upper = struct.unpack_from("<HH", self._map, base + 12)
        if lower < PAGE_HEADER or lower > upper or upper > self.psize or (lower - PAGE_HEADER) % 2:
            self._fail("page %d has bounds %d..%d" % (pgno, lower, upper))
        n = (lower - PAGE_HEADER) // 2
        offsets = struct.unpack_from("<%dH" % n, self._map, base + PAGE_HEADER)
        for off in offsets:
            if not upper <= off <= self.psize - NODE_HEADER:
                self._fail("page %d has a node at offset %d" % (pgno, off))
            lo, hi, flags, ksize = struct.unpack_from("<4H", self._map, base + off)
            if off + NODE_HEADER + ksize > self.psize:
                self._fail("page %d has a key running past the page" % pgno)
            yield base + off, lo, hi, flags, ksize

    def items(self):
        """(key, value) bytes pairs in key order."""
        return self._walk(values=True)

    def check(self):
        """Walk the snapshot's tree: every branch, leaf and overflow page
        number inside the file, every node inside its page, the records
        counted against the meta page (values are not read)."""
        for _ in self._walk(values=False):
            pass

    def _walk(self, values):
        """(key, value or None) of every record in key order, each page and
        node checked against the file on the way."""
        if self.root == P_INVALID:
            if self.entries:
                self._fail("its meta page counts %d records, but its tree holds 0" % self.entries)
            return
        stack = [(self.root, 0)]
        seen = set()
        held = 0
        while stack:
            pgno, level = stack.pop()
            if level > 64 or pgno in seen:
                self._fail("its tree loops back to page %d" % pgno)
            seen.add(pgno)
            base, flags = self._page(pgno, P_BRANCH | P_LEAF)
            if flags & P_BRANCH:
                children = [lo | (hi << 16) | (f << 32) for _, lo, hi, f, _ in self._nodes(base, pgno)]
                stack.extend((c, level + 1) for c in reversed(children))
                continue
            for node, lo, hi, nflags, ksize in self._nodes(base, pgno):
                key = self._map[node + NODE_HEADER:node + NODE_HEADER + ksize]
                dsize = lo | (hi << 16)
                if nflags & (F_SUBDATA | F_DUPDATA):
                    self._fail("record %r holds a sub-database, which Caffe's databases do not" % (key,))
                start = node + NODE_HEADER + ksize
                if nflags & F_BIGDATA:
                    if start + 8 > base + self.psize:
                        self._fail("page %d has a value pointer running past the page" % pgno)
                    first = struct.unpack_from("<Q", self._map, start)[0]
                    obase, _ = self._page(first, P_OVERFLOW)
                    run = struct.unpack_from("<I", self._map, obase + 12)[0]
                    if run < 1 or first + run > self.pages or PAGE_HEADER + dsize > run * self.psize:
                        self._fail("record %r has a value of %d bytes in %d overflow pages from page %d"
                                   % (key, dsize, run, first))
                    start = obase + PAGE_HEADER
                elif start + dsize > base + self.psize:
                    self._fail("record %r has a value running past its page" % (key,))
                held += 1
                yield bytes(key), (bytes(self._map[start:start + dsize]) if values else None)
        if held != self.entries:
            self._fail("its meta page counts %d records, but its tree holds %d" % (self.entries, held))

    def close(self):
        if self._map:
            self._map.close()
        self._file.close()


class Overwritten(Exception):
    """Both meta pages are newer than the snapshot asked for (two commits
    since the transaction began): ask again with a new one."""


def _kind(kinds):
    return " or ".join(name for bit, name in ((P_BRANCH, "branch"), (P_LEAF, "leaf"), (P_OVERFLOW, "overflow"))
                       if kinds & bit)

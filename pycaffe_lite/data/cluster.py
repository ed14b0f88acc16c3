"""Data preparation on a Dask cluster (the recipe's "resizing images in a
parallel fashion, using mapreduce"): workers read, decode, resize and encode
images into Datum bytes, or sum the pixels of a range of database records;
the driver writes the database in list order and adds the sums, so the files
are those the one-process tools write. Imported only with --scheduler."""

import numpy as np

from ..errors import ConfigError, FormatError


def client_for(spec, timeout=10):
    """A dask.distributed Client: 'local:N' starts N worker processes here,
    anything else is a scheduler address (tcp://host:8786)."""
    try:
        from dask.distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("--scheduler needs dask.distributed (pip install -e '.[cluster]')") from None
    if spec.startswith("local:"):
        try:
            workers = int(spec[len("local:"):])
        except ValueError:
            raise ConfigError("--scheduler=local:N needs a number of workers, got '%s'" % spec) from None
        if workers < 1:
            raise ConfigError("--scheduler=local:N needs N >= 1")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
        client.owned_cluster = cluster
        return client
    try:
        client = Client(spec, timeout=timeout)
    except (OSError, TimeoutError) as e:
        raise ConfigError("cannot reach the Dask scheduler at %s within %g s (%s); start one with "
                          "`dask scheduler` and its workers, or use --scheduler=local:N"
                          % (spec, timeout, e)) from None
    client.owned_cluster = None
    return client


def close(client):
    cluster = getattr(client, "owned_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


def ordered_results(client, fn, items, chunk=64, window=16):
    """fn(list of items) on the workers, chunk by chunk, results yielded in
    the items' order with a bounded number of chunks in flight. Dask runs a
    chunk again elsewhere when its worker dies."""
    from collections import deque
    chunks = [items[i:i + chunk] for i in range(0, len(items), chunk)]
    pending = deque()
    it = iter(chunks)
    for part in it:
        pending.append(client.submit(fn, part, pure=False, retries=3))
        if len(pending) >= window:
            yield from pending.popleft().result()
    while pending:
        yield from pending.popleft().result()


def _range_sum(args):
    """Exact (integer) per-pixel sum of records [start, stop) of a database."""
    (path, backend, start, stop), = args
    from . import db as dbmod
    from .datum import decode_datum, parse_datum
    reader = dbmod.Reader(path, backend)
    reader.skip(start)
    total, shape = None, None
    for _ in range(stop - start):
        key, value = reader.next()
        img = decode_datum(parse_datum(value, key), key=key)
        if total is None:
            total, shape, first_key = np.zeros(img.shape, np.int64 if img.dtype == np.uint8 else np.float64), \
                img.shape, key
        elif img.shape != shape:
            raise FormatError("%s: record %r is %s but record %r is %s; all records must have the same size"
                              % (path, key.decode(errors="replace"), img.shape, first_key.decode(errors="replace"),
                                 shape))
        total += img
    reader.close()
    return [(start, total)]


def mean_on(client, path, backend, records, chunk=500, progress=None):
    """The mean image of a database as a map-reduce over record ranges. Pixel
    sums are exact integers, so the mean is the one-process tool's float32
    mean whenever that one is exact too (sums below 2^24: up to 65793 images)."""
    jobs = [(path, backend, a, min(records, a + chunk)) for a in range(0, records, chunk)]
    total = None
    for start, part in ordered_results(client, _range_sum, jobs, chunk=1):
        total = part if total is None else total + part
        if progress is not None:
            progress.update(min(chunk, records - start))
    return total.astype(np.float32) / np.float32(records)

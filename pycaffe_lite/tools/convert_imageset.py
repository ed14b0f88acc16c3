"""Convert a set of images to an LMDB (or LevelDB) of Datums, as Caffe's
convert_imageset does:

    python -m pycaffe_lite.tools.convert_imageset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

LISTFILE lines are 'relative/path label'. Keys are '%08d_<path>' with the
0-based line number, so Caffe reads our databases and we read Caffe's. The
database is built under a temporary name and renamed when complete."""
import argparse
import collections
import functools
import os
import random
from concurrent.futures import ThreadPoolExecutor

from tqdm import tqdm

from .. import glog
from ..data import db as dbmod
from ..data.datum import image_file_to_datum
from ..errors import ConfigError, FormatError
from ..layers.data import read_list_file
from ._cli import add_bool, parse, run


def _parser():
    p = argparse.ArgumentParser(prog="convert_imageset", description=__doc__.split("\n\n")[0])
    add_bool(p, "--gray", "store images as one grey channel")
    add_bool(p, "--shuffle", "shuffle the list before converting (see --seed)")
    p.add_argument("--seed", type=int, default=None, help="random seed for --shuffle (repeatable runs)")
    p.add_argument("--backend", default="lmdb", help="lmdb or leveldb")
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--resize_height", type=int, default=0)
    add_bool(p, "--check_size", "require every image to have the same size")
    add_bool(p, "--encoded", "store the encoded image (see --encode_type) instead of raw pixels")
    p.add_argument("--encode_type", default="", help="png, jpg, ...; default: the file's own type")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="threads that decode and resize in parallel (default: one per core)")
    p.add_argument("--scheduler", default="",
                   help="decode and resize on a Dask cluster: tcp://host:8786, or local:N for N worker processes "
                        "here (the database is still written here, in list order)")
    p.add_argument("--scheduler_timeout", type=float, default=10, help="seconds to wait for the scheduler")
    p.add_argument("root_folder")
    p.add_argument("list_file")
    p.add_argument("db_name")
    return p


def _convert(job, item):
    """(line index, serialized Datum or None, pixel bytes) for one list line.
    OpenCV releases the GIL while it decodes and resizes, so threads scale
    without sending each 196 KB record between processes."""
    index, (name, label) = item
    enc = job["encode_type"]
    if job["encoded"] and not enc:
        enc = os.path.splitext(name)[1][1:].lower()
    datum = image_file_to_datum(os.path.join(job["root"], name), label, job["height"], job["width"],
                                not job["gray"], enc if job["encoded"] else "")
    if datum is None:
        return index, None, None
    return index, datum.SerializeToString(), len(datum.data)


def _convert_chunk(job, items):
    return [_convert(job, item) for item in items]


def _ordered(fn, items, workers):
    """fn over items on `workers` threads, results in order, a bounded number in flight."""
    if workers <= 1:
        yield from map(fn, items)
        return
    import cv2
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)                  # our threads already fill the cores
    pending = collections.deque()
    pool = ThreadPoolExecutor(workers)
    try:
        it = iter(items)
        for item in it:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 4 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        cv2.setNumThreads(threads)


def convert(args):
    if (args.resize_height > 0) != (args.resize_width > 0):
        raise ConfigError("give both --resize_height and --resize_width, or neither")
    backend = dbmod.backend_name(args.backend)
    if os.path.exists(args.db_name):
        raise ConfigError("%s already exists; remove it or choose another DB_NAME" % args.db_name)
    lines = read_list_file(args.list_file)
    if args.shuffle:
        random.Random(args.seed).shuffle(lines)
    glog.info("A total of %d images.", len(lines))
    job = {"root": args.root_folder, "height": args.resize_height, "width": args.resize_width,
           "gray": args.gray, "encoded": args.encoded, "encode_type": args.encode_type.lower()}
    client = None
    if args.scheduler:
        from ..data import cluster
        client = cluster.client_for(args.scheduler, args.scheduler_timeout)
        job["root"] = os.path.abspath(args.root_folder)     # the workers may start elsewhere
        glog.info("Converting on the Dask cluster at %s (%d workers)", client.scheduler.address,
                  len(client.scheduler_info()["workers"]))
    skipped, count, size = [], 0, None
    results = None
    try:       # the database appears only whole: whatever stops the run removes what it wrote
        with dbmod.new_database(args.db_name, backend) as writer:
            items = list(enumerate(lines))
            if client is not None:
                results = cluster.ordered_results(client, functools.partial(_convert_chunk, job), items)
            else:
                results = _ordered(lambda item: _convert(job, item), items, args.workers)
            for index, value, nbytes in tqdm(results, total=len(items), unit="img", disable=None,
                                             desc="convert_imageset"):
                name = lines[index][0]
                if value is None:
                    glog.warning("%s line %d: could not read image %s; skipped",
                                 args.list_file, index + 1, os.path.join(args.root_folder, name))
                    skipped.append(index + 1)
                    continue
                if args.check_size:
                    if size is None:
                        size = nbytes
                    elif nbytes != size:
                        raise FormatError("%s line %d: %s has %d bytes of pixels, the first image %d "
                                          "(--check_size)" % (args.list_file, index + 1, name, nbytes, size))
                writer.put(b"%08d_%s" % (index, name.encode()), value)
                count += 1
                if count % 1000 == 0:
                    glog.info("Processed %d files.", count)
    finally:
        if results is not None:
            results.close()
        if client is not None:
            cluster.close(client)
    glog.info("Processed %d files.", count)
    if skipped:
        glog.warning("Skipped %d of %d images (list lines %s).", len(skipped), len(lines),
                    ", ".join(map(str, skipped[:20])) + (" ..." if len(skipped) > 20 else ""))
    return 0


def main(argv=None):
    return run(lambda a: convert(parse(_parser(), a)), argv, "convert_imageset")


if __name__ == "__main__":
    raise SystemExit(main())

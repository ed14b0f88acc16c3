"""Convert images and their boxes to an LMDB (or LevelDB) of AnnotatedDatum
records, as the SSD fork's convert_annoset does:

    python -m pycaffe_lite.tools.convert_annoset [FLAGS] ROOTFOLDER/ LISTFILE DB_NAME

With --anno_type=detection, LISTFILE lines are 'image annotation' (VOC XML,
JSON or 'label xmin ymin xmax ymax' text, --label_type), names mapped to
labels by --label_map_file; with classification, 'image label' (plain
Datums in AnnotatedDatum records). Keys are '%08d_<image>'; the records are
byte for byte the fork's. The database is built under a temporary name and
renamed when complete."""
import argparse
import os
import random

from tqdm import tqdm

from .. import glog
from ..data import db as dbmod
from ..data.annotated import annotated_datum, image_to_datum, name_to_label, read_label_map
from ..errors import ConfigError, FormatError
from ..proto import caffe_pb2 as pb
from ._cli import add_bool, parse, run


def _parser():
    p = argparse.ArgumentParser(prog="convert_annoset", description=__doc__.split("\n\n")[0])
    add_bool(p, "--gray", "store images as one grey channel")
    add_bool(p, "--shuffle", "shuffle the list before converting (see --seed)")
    p.add_argument("--seed", type=int, default=None, help="random seed for --shuffle (repeatable runs)")
    p.add_argument("--backend", default="lmdb", help="lmdb or leveldb")
    p.add_argument("--anno_type", default="classification", choices=["classification", "detection"])
    p.add_argument("--label_type", default="xml", choices=["xml", "json", "txt"])
    p.add_argument("--label_map_file", default="", help="a LabelMap text proto (create_label_map writes one)")
    add_bool(p, "--check_label", "refuse a label map that gives a name twice")
    p.add_argument("--min_dim", type=int, default=0, help="resize so that the short side is at least this")
    p.add_argument("--max_dim", type=int, default=0, help="... and the long side at most this")
    p.add_argument("--resize_width", type=int, default=0)
    p.add_argument("--resize_height", type=int, default=0)
    add_bool(p, "--check_size", "require every image to have the same size")
    add_bool(p, "--encoded", "store the encoded image instead of raw pixels")
    p.add_argument("--encode_type", default="", help="png, jpg, ...; default: the file's own type")
    p.add_argument("root_folder")
    p.add_argument("list_file")
    p.add_argument("db_name")
    return p


def _list(path, detection):
    try:
        words = open(path).read().split()
    except OSError as e:
        raise FormatError("%s: cannot read the list: %s" % (path, e.strerror)) from None
    lines = []
    for k in range(0, len(words) - 1, 2):
        if detection:
            lines.append((words[k], words[k + 1]))
        else:
            try:
                lines.append((words[k], int(words[k + 1])))
            except ValueError:
                break                  # the fork's stream stops at the first line that is not 'image label'
    return lines


def convert(a):
    detection = a.anno_type == "detection"
    if os.path.exists(a.db_name):
        raise ConfigError("%s already exists; remove it or choose another DB_NAME" % a.db_name)
    names = {}
    if detection:
        if not a.label_map_file:
            raise ConfigError("--anno_type=detection needs --label_map_file (create_label_map writes one)")
        names = name_to_label(read_label_map(a.label_map_file), a.check_label, a.label_map_file)
    lines = _list(a.list_file, detection)
    if a.shuffle:
        glog.info("Shuffling data")
        random.Random(a.seed).shuffle(lines)
    glog.info("A total of %d images.", len(lines))
    encoded = a.encoded or bool(a.encode_type)
    count, size = 0, None
    with dbmod.new_database(a.db_name, dbmod.backend_name(a.backend)) as writer:
        record = pb.AnnotatedDatum()
        for index, (image, label) in enumerate(tqdm(lines, unit="img", disable=None, desc="convert_annoset")):
            enc = a.encode_type
            if encoded and not enc:
                enc = os.path.splitext(image)[1]      # with its dot: the fork then re-encodes, as it does
            path = os.path.join(a.root_folder, image)
            if detection:
                try:
                    ok = annotated_datum(path, os.path.join(a.root_folder, label), names, a.label_type,
                                         a.resize_height, a.resize_width, a.min_dim, a.max_dim, not a.gray,
                                         enc, out=record) is not None
                except FormatError as e:
                    raise FormatError("%s line %d (%s): %s" % (a.list_file, index + 1, image, e)) from None
            else:
                record.Clear()
                ok = image_to_datum(path, record.datum, a.resize_height, a.resize_width, a.min_dim, a.max_dim,
                                    not a.gray, enc)
                record.datum.label = label
            if not ok:
                glog.warning("Failed to read %s", image)
                continue
            if a.check_size:
                n = len(record.datum.data)
                if size is None:
                    size = n
                elif n != size:
                    raise FormatError("%s line %d: %s has %d bytes of pixels, the first image %d (--check_size)"
                                      % (a.list_file, index + 1, image, n, size))
            writer.put(b"%08d_%s" % (index, image.encode()), record.SerializeToString())
            count += 1
            if count % 1000 == 0:
                glog.info("Processed %d files.", count)
    glog.info("Processed %d files.", count)
    return 0


def main(argv=None):
    return run(lambda a: convert(parse(_parser(), a)), argv, "convert_annoset")


if __name__ == "__main__":
    raise SystemExit(main())

"""Write each listed image's height and width, as the SSD fork's tool does
(the name_size_file of DetectionOutput and DetectionEvaluate):

    python -m pycaffe_lite.tools.get_image_size [--name_id_file=F] ROOTFOLDER/ LISTFILE OUTFILE

LISTFILE lines are 'image label'; OUTFILE lines 'name height width', the
name being the image file's stem (or its id from --name_id_file)."""
import argparse
import os

from tqdm import tqdm

from .. import glog, protoio
from ..data.datum import read_image
from ..errors import FormatError
from ._cli import parse, run


def main(argv=None):
    def go(argv):
        p = argparse.ArgumentParser(prog="get_image_size", description=__doc__.split("\n\n")[0])
        p.add_argument("--name_id_file", default="", help="lines 'name id': write ids instead of names")
        p.add_argument("root_folder")
        p.add_argument("list_file")
        p.add_argument("out_file")
        a = parse(p, argv)
        try:
            words = open(a.list_file).read().split()
        except OSError as e:
            raise FormatError("%s: cannot read the list: %s" % (a.list_file, e.strerror)) from None
        lines = [words[k] for k in range(0, len(words) - 1, 2)]
        glog.info("A total of %d images.", len(lines))
        ids = {}
        if a.name_id_file:
            pairs = open(a.name_id_file).read().split()
            for k in range(0, len(pairs) - 1, 2):
                if pairs[k] in ids:
                    raise FormatError("%s: the name %s is given twice" % (a.name_id_file, pairs[k]))
                ids[pairs[k]] = int(pairs[k + 1])
            if len(ids) != len(lines):
                raise FormatError("%s names %d images, the list %d" % (a.name_id_file, len(ids), len(lines)))
        out = []
        for name in tqdm(lines, unit="img", disable=None, desc="get_image_size"):
            path = os.path.join(a.root_folder, name)
            img = read_image(path)
            if img is None:
                raise FormatError("%s: cannot read the image (listed in %s)" % (path, a.list_file))
            stem = os.path.splitext(os.path.basename(name))[0]
            if ids:
                if stem not in ids:
                    raise FormatError("%s has no id in %s" % (stem, a.name_id_file))
                stem = str(ids[stem])
            out.append("%s %d %d\n" % (stem, img.shape[0], img.shape[1]))
        protoio.atomic_write(a.out_file, "".join(out).encode())
        glog.info("Processed %d files.", len(lines))
    return run(go, argv, program="get_image_size")


if __name__ == "__main__":
    raise SystemExit(main())

"""Write a LabelMap (the SSD fork's label map) from a file of class names:

    python -m pycaffe_lite.tools.create_label_map [--include_background] [--delimiter=' '] NAMES OUT.prototxt

NAMES lines are 'name [label [display_name]]'; with only names, labels count
from 0 (from 1 after --include_background's none_of_the_above)."""
import argparse

from .. import glog, protoio
from ..data.annotated import label_map_from_names
from ._cli import add_bool, parse, run


def main(argv=None):
    def go(argv):
        p = argparse.ArgumentParser(prog="create_label_map", description=__doc__.split("\n\n")[0])
        add_bool(p, "--include_background", "add none_of_the_above as class 0")
        p.add_argument("--delimiter", default=" ", help="the characters between fields")
        p.add_argument("map_file")
        p.add_argument("out_file")
        a = parse(p, argv)
        label_map = label_map_from_names(a.map_file, a.include_background, a.delimiter)
        protoio.write_text(a.out_file, label_map)
        glog.info("Wrote %d labels to %s", len(label_map.item), a.out_file)
    return run(go, argv, program="create_label_map")


if __name__ == "__main__":
    raise SystemExit(main())

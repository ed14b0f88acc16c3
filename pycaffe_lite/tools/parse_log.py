"""Parse a training log (ours or BVLC Caffe's) into CSV tables:

    python -m pycaffe_lite.tools.parse_log LOGFILE [OUTPUT_DIR]

writes LOGFILE.train and LOGFILE.test (basename, in OUTPUT_DIR or beside the
log) with columns NumIters, Seconds, LearningRate, then one column per net
output (loss, accuracy, ...) in the order the log first names them."""
import argparse
import csv
import datetime
import os
import re

from ._cli import run

# glog writes I1128 or, in newer versions, I20261128.
_STAMP = re.compile(r"^[IWEF](\d{4})?(\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})\.(\d+)")
_ITER = re.compile(r"Iteration (\d+)")
_LR = re.compile(r"Iteration (\d+), lr = ([-+0-9.eE]+|nan|inf)")
_OUTPUT = re.compile(r"(Train|Test) net output #(\d+): (\S+) = ([-+0-9.eE]+|nan|-?inf)")


def _seconds(match, first, year):
    yr, mo, day, h, mi, s, frac = match.groups()
    year = int(yr) if yr else year
    t = datetime.datetime(year, int(mo), int(day), int(h), int(mi), int(s), int(frac[:6].ljust(6, "0")))
    if first[0] is None:
        first[0] = t
    if t < first[0]:                     # the log crossed a new year
        t = t.replace(year=year + 1)
    return (t - first[0]).total_seconds()


def parse(path):
    """(train rows, test rows, train columns, test columns); rows are dicts."""
    train, test = [], []
    cols = {"Train": [], "Test": []}
    rows = {"Train": train, "Test": test}
    first, seconds, iteration = [None], 0.0, -1
    lr_by_iter = {}
    current = {"Train": None, "Test": None}
    year = datetime.date.today().year
    with open(path, errors="replace") as f:
        for line in f:
            m = _STAMP.match(line)
            if m:
                seconds = _seconds(m, first, year)
            m = _LR.search(line)
            if m:
                lr_by_iter[int(m.group(1))] = float(m.group(2))
                continue
            m = _OUTPUT.search(line)
            if m:
                kind, index, name, value = m.group(1), int(m.group(2)), m.group(3), float(m.group(4))
                row = current[kind]
                if row is None or row["NumIters"] != iteration or index == 0:
                    row = {"NumIters": iteration, "Seconds": seconds}
                    rows[kind].append(row)
                    current[kind] = row
                row[name] = value
                if name not in cols[kind]:
                    cols[kind].append(name)
                continue
            m = _ITER.search(line)
            if m:
                iteration = int(m.group(1))
    # A row's learning rate is the one logged for its iteration (or the last before it).
    known = sorted(lr_by_iter)
    for row in train + test:
        earlier = [i for i in known if i <= row["NumIters"]]
        row["LearningRate"] = lr_by_iter[earlier[-1]] if earlier else float("nan")
    head = ["NumIters", "Seconds", "LearningRate"]
    return train, test, head + cols["Train"], head + cols["Test"]


def write_csv(rows, columns, path):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        for row in rows:
            w.writerow(row)


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="parse_log", description=__doc__.split("\n\n")[0])
        p.add_argument("logfile")
        p.add_argument("output_dir", nargs="?")
        p.add_argument("--delimiter", default=",")
        args = p.parse_args(a)
        train, test, tcols, vcols = parse(args.logfile)
        out = args.output_dir or os.path.dirname(os.path.abspath(args.logfile))
        base = os.path.join(out, os.path.basename(args.logfile))
        write_csv(train, tcols, base + ".train")
        write_csv(test, vcols, base + ".test")
        print("wrote %s.train (%d rows) and %s.test (%d rows)" % (base, len(train), base, len(test)))
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

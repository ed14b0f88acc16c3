"""Plot loss and accuracy curves of a training log as a PNG:

    python -m pycaffe_lite.tools.plot_training_log LOGFILE OUT.png

Train outputs are drawn against iterations on the left, test outputs on the
right (needs matplotlib)."""
import argparse

from ..errors import ConfigError
from ._cli import run
from .parse_log import parse


def plot(logfile, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib (pip install matplotlib)") from None
    train, test, tcols, vcols = parse(logfile)
    if not train and not test:
        raise ConfigError("%s: no 'Train net output' or 'Test net output' lines; is it a training log?" % logfile)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rows, cols, title in ((axes[0], train, tcols[3:], "Train net outputs"),
                                  (axes[1], test, vcols[3:], "Test net outputs")):
        for name in cols:
            pts = [(r["NumIters"], r[name]) for r in rows if name in r]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, marker="." if len(pts) < 50 else None)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if cols:
            ax.legend()
    fig.suptitle(logfile)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    def go(a):
        p = argparse.ArgumentParser(prog="plot_training_log", description=__doc__.split("\n\n")[0])
        p.add_argument("logfile")
        p.add_argument("output")
        args = p.parse_args(a)
        plot(args.logfile, args.output)
        print("wrote %s" % args.output)
    return run(go, argv)


if __name__ == "__main__":
    raise SystemExit(main())

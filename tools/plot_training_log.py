#!/usr/bin/env python3
"""Caffe's tools/plot_training_log path; runs pycaffe_lite.tools.plot_training_log."""
from pycaffe_lite.tools.plot_training_log import main

if __name__ == "__main__":
    raise SystemExit(main())

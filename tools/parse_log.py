#!/usr/bin/env python3
"""Caffe's tools/parse_log path; runs pycaffe_lite.tools.parse_log."""
from pycaffe_lite.tools.parse_log import main

if __name__ == "__main__":
    raise SystemExit(main())

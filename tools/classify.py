#!/usr/bin/env python3
"""Caffe's tools/classify path; runs pycaffe_lite.tools.classify."""
from pycaffe_lite.tools.classify import main

if __name__ == "__main__":
    raise SystemExit(main())

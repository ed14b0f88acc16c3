#!/usr/bin/env python3
"""Caffe's tools/caffe path; runs pycaffe_lite.tools.caffe."""
from pycaffe_lite.tools.caffe import main

if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python3
"""Caffe's tools/extract_features path; runs pycaffe_lite.tools.extract_features."""
from pycaffe_lite.tools.extract_features import main

if __name__ == "__main__":
    raise SystemExit(main())

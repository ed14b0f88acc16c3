#!/usr/bin/env python3
"""Caffe's tools/convert_mean path; runs pycaffe_lite.tools.convert_mean."""
from pycaffe_lite.tools.convert_mean import main

if __name__ == "__main__":
    raise SystemExit(main())

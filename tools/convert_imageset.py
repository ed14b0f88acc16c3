#!/usr/bin/env python3
"""Caffe's tools/convert_imageset path; runs pycaffe_lite.tools.convert_imageset."""
from pycaffe_lite.tools.convert_imageset import main

if __name__ == "__main__":
    raise SystemExit(main())

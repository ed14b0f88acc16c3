#!/usr/bin/env python3
"""Caffe's tools/make_imagenet_lists path; runs pycaffe_lite.tools.make_imagenet_lists."""
from pycaffe_lite.tools.make_imagenet_lists import main

if __name__ == "__main__":
    raise SystemExit(main())

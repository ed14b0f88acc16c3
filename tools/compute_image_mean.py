#!/usr/bin/env python3
"""Caffe's tools/compute_image_mean path; runs pycaffe_lite.tools.compute_image_mean."""
from pycaffe_lite.tools.compute_image_mean import main

if __name__ == "__main__":
    raise SystemExit(main())

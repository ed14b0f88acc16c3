#!/usr/bin/env python3
"""Caffe's tools/draw_net path; runs pycaffe_lite.tools.draw_net."""
from pycaffe_lite.tools.draw_net import main

if __name__ == "__main__":
    raise SystemExit(main())

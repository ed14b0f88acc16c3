#!/usr/bin/env python3
"""Export a Caffe net to ONNX; runs pycaffe_lite.tools.export_onnx."""
from pycaffe_lite.tools.export_onnx import main

if __name__ == "__main__":
    raise SystemExit(main())

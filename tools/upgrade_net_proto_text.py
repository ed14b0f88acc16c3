#!/usr/bin/env python3
"""Caffe's tools/upgrade_net_proto_text path; runs pycaffe_lite.tools.upgrade_net_proto_text."""
from pycaffe_lite.tools.upgrade_net_proto_text import main

if __name__ == "__main__":
    raise SystemExit(main())

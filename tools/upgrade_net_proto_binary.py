#!/usr/bin/env python3
"""Caffe's tools/upgrade_net_proto_binary path; runs pycaffe_lite.tools.upgrade_net_proto_binary."""
from pycaffe_lite.tools.upgrade_net_proto_binary import main

if __name__ == "__main__":
    raise SystemExit(main())

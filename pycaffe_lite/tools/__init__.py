"""The command lines, each runnable as python -m pycaffe_lite.tools.NAME."""

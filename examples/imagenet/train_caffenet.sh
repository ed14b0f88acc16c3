#!/usr/bin/env bash
# Step 4 of the recipe: train CaffeNet. Run from the project root.
set -euo pipefail
python -m pycaffe_lite.tools.caffe train --solver=models/bvlc_reference_caffenet/solver.prototxt "$@"

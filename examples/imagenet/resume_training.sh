#!/usr/bin/env bash
# Step 5 of the recipe: resume CaffeNet training from a snapshot. Run from the
# project root; pass the iteration to resume from (default 10000).
set -euo pipefail
ITER=${1:-10000}
python -m pycaffe_lite.tools.caffe train --solver=models/bvlc_reference_caffenet/solver.prototxt \
  --snapshot=models/bvlc_reference_caffenet/caffenet_train_iter_${ITER}.solverstate "${@:2}"

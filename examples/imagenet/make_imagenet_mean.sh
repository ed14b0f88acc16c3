#!/usr/bin/env bash
# Step 2 of the recipe: the mean image of the training LMDB. Run from the project root.
set -euo pipefail
python tools/compute_image_mean.py examples/imagenet/ilsvrc12_train_lmdb data/ilsvrc12/imagenet_mean.binaryproto
echo "Done."

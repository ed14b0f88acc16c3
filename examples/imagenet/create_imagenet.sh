#!/usr/bin/env bash
# Step 1 of the recipe: the ImageNet training and validation LMDBs.
# Run from the project root. Set TRAIN_DATA_ROOT / VAL_DATA_ROOT to the image
# folders; RESIZE=true resizes to 256x256 here (otherwise resize beforehand).
set -euo pipefail
EXAMPLE=examples/imagenet
DATA=data/ilsvrc12
TRAIN_DATA_ROOT=${TRAIN_DATA_ROOT:-/path/to/imagenet/train/}
VAL_DATA_ROOT=${VAL_DATA_ROOT:-/path/to/imagenet/val/}
RESIZE=${RESIZE:-false}
if [ "$RESIZE" = "true" ]; then
  RESIZE_HEIGHT=256
  RESIZE_WIDTH=256
else
  RESIZE_HEIGHT=0
  RESIZE_WIDTH=0
fi
for d in "$TRAIN_DATA_ROOT" "$VAL_DATA_ROOT"; do
  if [ ! -d "$d" ]; then
    echo "error: $d is not a folder; set TRAIN_DATA_ROOT and VAL_DATA_ROOT" >&2
    exit 2
  fi
done
echo "Creating train lmdb..."
python -m pycaffe_lite.tools.convert_imageset --resize_height=$RESIZE_HEIGHT --resize_width=$RESIZE_WIDTH \
  --shuffle "$TRAIN_DATA_ROOT" $DATA/train.txt $EXAMPLE/ilsvrc12_train_lmdb
echo "Creating val lmdb..."
python -m pycaffe_lite.tools.convert_imageset --resize_height=$RESIZE_HEIGHT --resize_width=$RESIZE_WIDTH \
  --shuffle "$VAL_DATA_ROOT" $DATA/val.txt $EXAMPLE/ilsvrc12_val_lmdb
echo "Done."

#!/usr/bin/env bash
# Every GPU check in one command, for a lent GPU machine (H100/H200 with cupy,
# torch, protobuf, pytest and OpenCV but no lmdb and no network):
#   1. the gpu test marker: golden layer and solver cases in GPU mode, CPU vs
#      GPU agreement, the Data layer feeding the device;
#   2. data-parallel training through NCCL (benchmarks/gpu_parallel_check.py);
#   3. CaffeNet batch 256 against PyTorch on the same GPU, strict fp32, then
#      with TF32 allowed on both, with peak memory.
# The machine has no lmdb and no network: first, here,
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl lmdb
# then run this script with .whl carried along. The summary goes to
# $OUT/gpu_summary.txt when OUT is set. Under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT_DIR"
SUMMARY="$OUT_DIR/gpu_summary.txt"
export PYTHONUNBUFFERED=1
if ! python3 -c "import lmdb" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/lmdb-*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
{
  echo "== device"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  python3 -c "import cupy, torch; print('cupy', cupy.__version__, '| torch', torch.__version__)" 2>&1
  echo "== gpu tests"
  timeout 240 python3 -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -15
  echo "== data-parallel training through NCCL (caffe train --gpu=all)"
  timeout 120 python3 benchmarks/gpu_parallel_check.py 2>&1 | tail -5
  echo "== CaffeNet, strict fp32"
  timeout 100 python3 benchmarks/bench_caffenet_gpu.py --batch 256 --iters 10 --json "$OUT_DIR/fp32.json" 2>&1
  echo "== CaffeNet, TF32 allowed"
  timeout 100 python3 benchmarks/bench_caffenet_gpu.py --batch 256 --iters 10 --tf32 --json "$OUT_DIR/tf32.json" 2>&1
} 2>&1 | tee "$SUMMARY"

#!/usr/bin/env bash
# The GPU half of bench/train_scale.py, as one prepared script for a lent GPU machine
# (at most 8 minutes): XLM-R large size, bf16, our loop against HF Trainer at sequence
# length 128 and 384, MFU against the device's nominal dense bf16 peak, peak memory, and
# DCP save time against the local disk's raw write rate. Run from the repository root
# after `make install` (CUDA torch) and `pip install -e '.[bench]'`:
#
#   NOMINAL_TFLOPS=989 bash bench/gpu_train_scale.sh      # H100/H200 SXM dense bf16
#
# One process, one GPU: our trainer shards with FSDP2 only when a node has several
# processes, so this measures the single-GPU path (bf16 autocast, SDPA, fused AdamW,
# compiled layers). Output goes to stdout and to ${OUT:-.}/gpu_train_scale.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
out=${OUT:-.}/gpu_train_scale.txt
nominal=${NOMINAL_TFLOPS:-989}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out"
for seq in 128 384; do
  timeout 210 "$python" bench/train_scale.py --device cuda --sizes large --seq-len "$seq" --batch-size 32 \
    --steps 30 --warmup-steps 10 --repeats 2 --nominal-tflops "$nominal" \
    $([ "$seq" = 384 ] && echo --checkpoint) 2>&1 | tee -a "$out"
done

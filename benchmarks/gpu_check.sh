#!/usr/bin/env bash
# Every GPU check in one go, from the repository root of a checkout on a CUDA machine (no
# install needed: the checkout is imported directly, the zoo read from ./models):
#
#     bash benchmarks/gpu_check.sh [OUT]      # OUT: results folder (default: $OUT or ./gpu-check)
#
# 1. tests/test_cuda.py (every GPU executor against the float64 pass and torch's samples),
# 2. the quick GPU benchmark (benchmarks/gpu.py --quick, about 30 s on an H200),
# 3. the probe's rows (benchmarks/gpu_probe.py: warps, batches, wider models, larger batches).
# Each stage has its own time limit, so one stuck stage leaves the others' results.
set -u
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 STREAMGEN_MODELS="$PWD/models"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
echo "== tests/test_cuda.py"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -15 | tee "$out/tests.txt"
echo "== benchmarks/gpu.py --quick"
timeout 240 python3 benchmarks/gpu.py --quick --out "$out" 2>&1 | tail -40
echo "== benchmarks/gpu_probe.py"
timeout 240 python3 benchmarks/gpu_probe.py --repeats 3 --out "$out" 2>&1 | tee "$out/probe.txt"

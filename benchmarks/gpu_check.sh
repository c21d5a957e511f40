#!/usr/bin/env bash
# Every GPU check in one go, from the repository root of a checkout on a CUDA machine (no
# install needed: the checkout is imported directly, the zoo read from ./models):
#
#     bash benchmarks/gpu_check.sh [OUT]      # OUT: results folder (default: $OUT or ./gpu-check)
#
# 1. the probe's rows (benchmarks/gpu_probe.py): by default first one row for each of the
#    issue's targets (batch 1: the clustered grid kernel and the one-block kernel on the
#    default, the grid kernel on the paper-size Seq-U-Net, the torch executor with the fused
#    sampler and with torch's; many streams: graphs at 4,096 and 65,536 streams with either
#    sampler, and the paper model at 16,384), then the grid kernel's variants (barriers,
#    whole ends, threads, blocks per stream, prefetch; default, paper models, batch 4 and 8),
#    graphs with fused gates and the persistent kernels' A/B at batch 1 (Triton, with 32 and
#    16 outputs a tile; numba-cuda with each mapping), batch 64 and the wider models, in that order (rows past the stage's
#    limit are left out); ROWS=a,b,... to choose;
# 2. tests/test_cuda.py (every GPU executor against the float64 pass and torch's samples),
# 3. the quick GPU benchmark (benchmarks/gpu.py --quick, about 50 s on an H200),
# 4. Nsight Compute's warp and scheduler statistics of one launch of the one-block kernel, of
#    the grid kernel on the paper-size model, and of the clustered grid kernel on the default
#    (benchmarks/kernel_profile.py), where ncu is installed.
# Each stage has its own time limit (590 s in all: one device call), so one stuck stage leaves
# the others' results; it writes 7 files (a device call returns at most 8).
set -u
out="${1:-${OUT:-gpu-check}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 STREAMGEN_MODELS="$PWD/models"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
python3 -c 'from importlib import metadata
def version(p):
    try:
        return metadata.version(p)
    except metadata.PackageNotFoundError:
        return "missing"
print(*(f"{p} {version(p)}" for p in ("torch", "triton", "numba", "numba-cuda")), sep=", ")' \
  2>&1 | tee -a "$out/gpu.txt"
echo "== benchmarks/gpu_probe.py"
rows="${ROWS:-grid-default-b1-cluster,nbc-default-b1,grid-paper-b1,torch-default-b1,torch-default-b1-torchsampler,graphs-default-b4096,graphs-default-b4096-torchsampler,graphs-default-b65536,graphs-default-b65536-torchsampler,graphs-paper-b16384,grid-default-b1,grid-default-b1-cluster-whole,grid-default-b1-whole,grid-default-b1-cluster-t128,grid-default-b1-cluster-g4,grid-paper-b1-cluster,grid-paper-b1-whole,grid-paperwavenet-b1,grid-paper-b1-coop,grid-paper-b1-bcast,grid-paper-b1-noprefetch,grid-paper-b1-t512,grid-paper-b1-g180,grid-paper-b4,grid-wide128-b1,grid-default-b8-cluster,nbc-paper-b1,graphs-default-b4096-fused,graphs-paper-b4096-fused,graphs-default-b65536-fused,nbc-default-b1-rows,default-b1-w16,default-b1-o16,default-b1-w16-greedy,default-b1-o16-greedy,nbc-default-b64,nbc-paperwavenet-b1,graphs-paper-b1,grid-wide64-b1-cluster}"
timeout 200 python3 benchmarks/gpu_probe.py --repeats 3 --rows "$rows" --out "$out" 2>&1 | tee "$out/probe.txt"
echo "== tests/test_cuda.py"
# every test's name and outcome kept as it runs: a stage cut short by its limit loses nothing
timeout 170 python3 -m pytest -v -p no:cacheprovider tests/test_cuda.py 2>&1 \
  | tee "$out/tests.txt" | grep -E "FAILED|ERROR|passed|failed" | tail -25
echo "== benchmarks/gpu.py --quick"
timeout 100 python3 benchmarks/gpu.py --quick --out "$out" 2>&1 | tail -40
echo "== ncu"
for kernel in lanes grid cluster; do
  case "$kernel" in
    grid) what=(-k regex:run_grid); how=(--grid --paper) ;;
    cluster) what=(-k regex:run_grid); how=(--grid --barrier cluster) ;;
    *) what=(-k regex:run_block); how=(--mapping "$kernel") ;;
  esac
  echo "== ncu: $kernel" >> "$out/ncu.txt"  # one file for all three (8 files come back)
  timeout 40 ncu --launch-count 1 "${what[@]}" --section WarpStateStats \
    --section SchedulerStats python3 benchmarks/kernel_profile.py "${how[@]}" \
    > "$out/ncu-part.txt" 2>&1
  grep -E "Issued Warp|No Eligible|Warp Cycles Per Issued" "$out/ncu-part.txt"
  cat "$out/ncu-part.txt" >> "$out/ncu.txt" && rm "$out/ncu-part.txt"
done

#!/usr/bin/env bash
# The engine's GPU checks, from the repository root of a checkout on a CUDA machine (no install
# needed: the checkout is imported directly, the zoo read from ./models):
#
#     bash benchmarks/gpu_check.sh [OUT] [first|second|all]   # OUT: default $OUT or ./gpu-check
#
# A lent machine gives a session 15 minutes in all, its starts included, so the checks come in
# two parts of under 5 minutes each, most telling first: `first`, then `second` at once on the
# still warm machine; or, if `first` shows a fault, give the machine back, mend it here and run
# `first` again on a fresh one. `all` runs both parts in one call of at most 570 s.
#
# first (280 s at most):
#   1. tests/test_cuda.py: every GPU executor against the float64 pass and torch's samples,
#      each test's name and outcome kept as it runs (in 8 processes with pytest-xdist);
#   2. the probe's rows for the targets (benchmarks/gpu_probe.py): batch 1, the grid
#      kernel with a thread-block cluster per stream and the one-block kernel on the default,
#      the grid kernel on the paper-size Seq-U-Net, the torch executor; many streams: graphs
#      at 4,096 and 65,536 streams and the paper model at 16,384.
# second (280 s at most):
#   3. the quick GPU benchmark (benchmarks/gpu.py --quick, about 50 s on an H200), whose
#      files are the ones to commit;
#   4. the probe's other rows: the grid kernel's variants (barriers, whole ends, threads,
#      blocks per stream, prefetch; default and paper models, batch 4 and 8), the samplers'
#      and fused gates' A/B, the one-block kernels' A/B (Triton with 32 and 16 outputs a tile;
#      numba-cuda with each mapping), batch 64 and the wider models, in that order (rows past
#      the stage's limit are left out);
#   5. Nsight Compute's warp and scheduler statistics of one launch of the clustered grid
#      kernel on the default (benchmarks/kernel_profile.py), where ncu is installed.
# ROWS=a,b,... replaces a part's probe rows. Each stage has its own time limit, so one stuck
# stage leaves the others' results; `all` writes 7 files (a call returns 8).
set -u
out="${1:-${OUT:-gpu-check}}"
part="${2:-first}"
case "$part" in
  first|second|all) ;;
  *) echo "gpu_check.sh: unknown part '$part'; give first, second or all" >&2; exit 2 ;;
esac
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 STREAMGEN_MODELS="$PWD/models"
first_rows="grid-default-b1-cluster,nbc-default-b1,grid-paper-b1,torch-default-b1,graphs-default-b4096,graphs-default-b65536,graphs-paper-b16384"
second_rows="grid-default-b1,torch-default-b1-torchsampler,graphs-default-b4096-torchsampler,graphs-default-b65536-torchsampler,grid-default-b1-cluster-whole,grid-default-b1-whole,grid-default-b1-cluster-t128,grid-default-b1-cluster-g4,grid-paper-b1-cluster,grid-paper-b1-whole,grid-paperwavenet-b1,grid-paper-b1-coop,grid-paper-b1-bcast,grid-paper-b1-noprefetch,grid-paper-b1-t512,grid-paper-b1-g180,grid-paper-b4,grid-wide128-b1,grid-default-b8-cluster,nbc-paper-b1,graphs-default-b4096-fused,graphs-paper-b4096-fused,graphs-default-b65536-fused,nbc-default-b1-rows,default-b1-w16,default-b1-o16,default-b1-w16-greedy,default-b1-o16-greedy,nbc-default-b64,nbc-paperwavenet-b1,graphs-paper-b1,grid-wide64-b1-cluster"

probe() {  # PART ROWS SECONDS: the rows into OUT/probe-PART.json (a line each printed)
  echo "== benchmarks/gpu_probe.py ($1)"
  timeout "$3" python3 benchmarks/gpu_probe.py --repeats 3 --rows "${ROWS:-$2}" \
    --out "$out" --name "probe-$1" 2>&1
}

if [ "$part" != second ]; then
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$out/gpu.txt"
  python3 -c 'from importlib import metadata
def version(p):
    try:
        return metadata.version(p)
    except metadata.PackageNotFoundError:
        return "missing"
print(*(f"{p} {version(p)}" for p in ("torch", "triton", "numba", "numba-cuda")), sep=", ")' \
    2>&1 | tee -a "$out/gpu.txt"
  echo "== tests/test_cuda.py"
  # in 8 processes where pytest-xdist is installed: compiling the kernels takes most of the time
  parallel=$(python3 -c "import xdist" 2>/dev/null && echo "-n 8")
  timeout 150 python3 -m pytest -v -p no:cacheprovider $parallel tests/test_cuda.py 2>&1 \
    | tee "$out/tests.txt" | grep -E "FAILED|ERROR|passed|failed" | tail -25
  probe first "$first_rows" 125
fi
if [ "$part" != first ]; then
  echo "== benchmarks/gpu.py --quick"
  timeout 100 python3 benchmarks/gpu.py --quick --out "$out" 2>&1 | tail -40
  probe second "$second_rows" 140
  echo "== ncu: the clustered grid kernel on the default"
  timeout 40 ncu --launch-count 1 -k regex:run_grid --section WarpStateStats \
    --section SchedulerStats python3 benchmarks/kernel_profile.py --grid --barrier cluster \
    > "$out/ncu.txt" 2>&1
  grep -E "Issued Warp|No Eligible|Warp Cycles Per Issued" "$out/ncu.txt"
fi

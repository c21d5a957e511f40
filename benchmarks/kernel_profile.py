"""A few launches of a numba-cuda kernel for a profiler to look at, e.g.

    ncu --launch-count 1 -k regex:run_block --section WarpStateStats --section SchedulerStats \\
        python3 benchmarks/kernel_profile.py --mapping rows
    ncu --launch-count 1 -k regex:run_grid ... python3 benchmarks/kernel_profile.py --grid

The default model (or ``--paper``, the paper-size Seq-U-Net with random weights) at batch 1
with the default's recommended sampling: two 256-step launches (one noise block each), the
first of which compiles the kernel. ``--grid``: the grid kernel (``numba-cuda-grid``).
"""

from __future__ import annotations

import argparse

import torch

from streamgen.bench.suite import PAPER_SEQUNET
from streamgen.engine import StreamingEngine
from streamgen.engine.gpu.cuda_executor import CudaExecutor
from streamgen.engine.gpu.grid_executor import GridExecutor
from streamgen.nn import build_network
from streamgen.zoo import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mapping", default=CudaExecutor.mapping, help="lanes or rows")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--unroll", type=int, default=None)
    ap.add_argument("--grid", action="store_true", help="the grid kernel (numba-cuda-grid)")
    ap.add_argument("--barrier", default=GridExecutor.barrier,
                    help="grid: counter, broadcast, cooperative or cluster")
    ap.add_argument("--paper", action="store_true", help="the paper-size Seq-U-Net")
    args = ap.parse_args()
    CudaExecutor.mapping, CudaExecutor.threads, CudaExecutor.unroll = (
        args.mapping, args.threads, args.unroll)
    GridExecutor.threads, GridExecutor.barrier = args.threads, args.barrier
    model, info = load_model("default")
    if args.paper:
        model = build_network(*PAPER_SEQUNET)
    engine = StreamingEngine(model.eval().cuda(), 1,
                             backend="numba-cuda-grid" if args.grid else "numba-cuda")
    sampler = engine.sampler(info.sampling, seed=0)
    for _ in range(2):
        engine.generate(256, sampler)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()

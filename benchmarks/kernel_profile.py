"""A few launches of the numba-cuda kernel for a profiler to look at, e.g.

    ncu --launch-count 1 -k regex:run_block --section WarpStateStats --section SchedulerStats \\
        python3 benchmarks/kernel_profile.py --mapping rows

The default model at batch 1 with its recommended sampling: two 256-step launches (one noise
block each), the first of which compiles the kernel.
"""

from __future__ import annotations

import argparse

import torch

from streamgen.engine import StreamingEngine
from streamgen.engine.gpu.cuda_executor import CudaExecutor
from streamgen.zoo import load_model


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mapping", default=CudaExecutor.mapping, help="lanes or rows")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--unroll", type=int, default=None)
    args = ap.parse_args()
    CudaExecutor.mapping, CudaExecutor.threads, CudaExecutor.unroll = (
        args.mapping, args.threads, args.unroll)
    model, info = load_model("default")
    engine = StreamingEngine(model.eval().cuda(), 1, backend="numba-cuda")
    sampler = engine.sampler(info.sampling, seed=0)
    for _ in range(2):
        engine.generate(256, sampler)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()

"""The GPU benchmark: torch and Triton side by side on the issue's targets.

    python benchmarks/gpu.py --quick     # under a minute once Triton's cache is warm
    python benchmarks/gpu.py             # the full run
    python benchmarks/gpu.py --dry-run   # tiny models on the CPU through Triton's interpreter

Writes benchmarks/results/gpu-<device>[-quick].{json,md} (a dry run writes under --out, by
default a temporary folder: its figures mean nothing). The default model's architecture and
recommended sampling come from the shipped ``models/default``; the paper-size models have
random weights (speed does not depend on them).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the one-minute subset")
    mode.add_argument("--dry-run", action="store_true",
                      help="tiny models on the CPU, Triton through its interpreter")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--model", default="default", help="zoo model measured as the default")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args()
    if args.dry_run:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.device = "cpu"

    import torch

    from streamgen.bench.gpu import run_gpu_benchmark

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU visible to torch; run with --dry-run to check the benchmark on the CPU")
    out = args.out or (Path(tempfile.mkdtemp()) if args.dry_run else Path(__file__).parent / "results")
    for path in run_gpu_benchmark(quick=args.quick, device=args.device, model=args.model,
                                  out=out, dry_run=args.dry_run):
        print(path)


if __name__ == "__main__":
    main()

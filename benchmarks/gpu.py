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
import re
import sys
import tempfile
import time
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

    from streamgen.bench.gpu import DRY_RUN, FULL, QUICK, gpu_markdown, run_gpu_suite
    from streamgen.bench.report import write_json_md
    from streamgen.nn import build_network
    from streamgen.zoo import load_model

    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU visible to torch; run with --dry-run to check the benchmark on the CPU")
    model, info = load_model(args.model)
    profile = DRY_RUN if args.dry_run else QUICK if args.quick else FULL
    if args.dry_run:  # the default's shape, shrunk
        model = build_network("sequnet", {"channels": 8, "levels": 3, "depth": 1, "kernel_size": 3})
        where = "cpu-interpreter"
    else:
        where = torch.cuda.get_device_name(0)
    out = args.out or (Path(tempfile.mkdtemp()) if args.dry_run else Path(__file__).parent / "results")
    start = time.perf_counter()
    results = run_gpu_suite(profile, device=args.device, default_model=(args.model, model),
                            sampling=info.sampling)
    results["wall_seconds"] = time.perf_counter() - start
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"gpu-{where}-{profile.name}").strip("-").lower()
    for path in write_json_md(results, gpu_markdown(results), out, stem):
        print(path)
    print(f"{results['wall_seconds']:.0f} s")


if __name__ == "__main__":
    main()

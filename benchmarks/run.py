"""Run the benchmark suite and write results under benchmarks/results/.

    python benchmarks/run.py                 # full suite on the CPU, one thread
    python benchmarks/run.py --quick         # the quick subset, about a minute
    python benchmarks/run.py --device cuda   # on a GPU: the GPU benchmark (benchmarks/gpu.py)

Same code as ``streamgen bench``; this script only picks the output folder and file stem.
The default model's weights do not matter for speed, but its architecture and recommended
sampling do: both come from the shipped ``models/default``.
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
from pathlib import Path

import torch

from streamgen.bench.gpu import run_gpu_benchmark
from streamgen.bench.report import write_results
from streamgen.bench.suite import FULL, QUICK, run_suite
from streamgen.checkpoint import CheckpointError
from streamgen.devices import DeviceError, resolve_device
from streamgen.zoo import ModelNotFoundError, load_model


def default_stem(quick: bool) -> str:
    where = f"cpu-{platform.machine()}"
    return re.sub(r"[^A-Za-z0-9]+", "-", f"{where}-{'quick' if quick else 'full'}").strip("-").lower()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--model", default="default", help="zoo model measured as the default (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be a whole number >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    try:
        device = str(resolve_device(args.device))
        model, info = load_model(args.model)  # a missing model fails before any work
    except (DeviceError, ModelNotFoundError, CheckpointError) as e:
        sys.exit(f"error: {e}")
    if device.startswith("cuda"):  # the GPU benchmark (benchmarks/gpu.py)
        for path in run_gpu_benchmark(quick=args.quick, device=device, model=args.model,
                                      out=args.out):
            print(path)
        return
    results = run_suite(QUICK if args.quick else FULL, device=device, default_model=(args.model, model),
                        sampling=info.sampling)
    for path in write_results(results, args.out, default_stem(args.quick)):
        print(path)


if __name__ == "__main__":
    main()

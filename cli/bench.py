"""``streamgen bench``: samples per second, side by side (see benchmarks/)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import CLIError, announce_compile, count


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark samples per second",
                       description="Measure the engine against its baselines (WaveNet, TCN, full "
                       "recomputation): throughput, scaling, batch sweep, worst-case step. On a "
                       "CUDA device, the GPU benchmark instead: each GPU backend at batch 1 and "
                       "4,096 against the issue's targets (--quick about 30 s on an H200).",
                       epilog="Results go to --out as bench-DEVICE-PROFILE.json and .md (plus plots "
                       "when matplotlib is installed; on a GPU gpu-NAME-PROFILE.json and .md), and "
                       "the tables to the terminal.\n\n"
                       "examples:\n  streamgen bench --quick            # writes ./bench-results/bench-cpu-quick.*\n"
                       "  streamgen bench --device cuda --out results/",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the quick subset, about a minute (the default: the full suite)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--threads", type=count(), default=1, help="torch CPU threads (default: 1)")
    p.add_argument("--model", help="model measured as the default (default: the zoo's default, "
                   "or its architecture with random weights where the zoo has none)")
    p.add_argument("--out", type=Path, default=Path("bench-results"),
                   help="folder the results are written to (default: ./%(default)s)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from streamgen.bench.report import markdown, write_results
    from streamgen.bench.suite import FULL, QUICK, run_suite
    from streamgen.devices import resolve_device
    from streamgen.zoo import ModelNotFoundError, load_model

    if args.out.exists() and not args.out.is_dir():
        raise CLIError(f"--out {args.out} is a file; give a folder for the results")
    device = str(resolve_device(args.device))
    torch.set_num_threads(args.threads)
    if device.startswith("cuda"):
        from streamgen.bench.gpu import run_gpu_benchmark

        paths = run_gpu_benchmark(quick=args.quick, device=device, model=args.model or "default",
                                  out=args.out, log=lambda s: print(s, flush=True))
    else:
        announce_compile("numba")
        try:
            model, info = load_model(args.model or "default")
            default, sampling = (args.model or "default", model), info.sampling
        except ModelNotFoundError:
            if args.model:  # named, so it must exist
                raise
            default, sampling = None, None  # the default architecture with random weights
        results = run_suite(QUICK if args.quick else FULL, device=device, default_model=default,
                            sampling=sampling, log=lambda s: print(s, flush=True))
        paths = write_results(results, args.out, f"bench-cpu-{'quick' if args.quick else 'full'}")
        print(markdown(results))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0

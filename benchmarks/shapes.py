"""CPU streaming speed of candidate shapes for the default model, side by side in one run.

    python benchmarks/shapes.py [--out DIR]

The default must stream in real time on one CPU core (numba backend, batch 1). This times
wider Seq-U-Nets of the default's shape beside the shipped one and the `wavenet-baseline`
shape, so a retrained default can be chosen at a known CPU speed, and compared with a WaveNet
of the same speed. Random weights: plain sampling does not depend on them; top-p does (random
weights give nearly flat logits, the nucleus's worst case, so those rates are a lower bound).
Writes ``shapes-<machine>.{json,md}`` under ``benchmarks/results/`` (or ``--out``).
"""

from __future__ import annotations

import argparse
import platform
import re
from pathlib import Path

import torch

from streamgen.bench.report import write_json_md
from streamgen.bench.suite import SAMPLE_RATE, generation_rate, mean_macs
from streamgen.bench.timing import machine_info
from streamgen.engine import SamplingConfig
from streamgen.nn import build_network

#: (name, kind, config): the shipped default's shape first.
SHAPES = [
    ("default shape (C=32)", "sequnet", {"channels": 32, "levels": 10, "depth": 2, "kernel_size": 5}),
    ("C=40", "sequnet", {"channels": 40, "levels": 10, "depth": 2, "kernel_size": 5}),
    ("C=48", "sequnet", {"channels": 48, "levels": 10, "depth": 2, "kernel_size": 5}),
    ("C=64", "sequnet", {"channels": 64, "levels": 10, "depth": 2, "kernel_size": 5}),
    ("wavenet-baseline shape", "wavenet", {"blocks": 3, "layers": 10, "kernel_size": 2,
                                           "residual_channels": 24, "dilation_channels": 24,
                                           "skip_channels": 64}),
]
SAMPLINGS = [SamplingConfig(), SamplingConfig(temperature=0.85, top_p=0.94)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for name, kind, config in SHAPES:
        net = build_network(kind, config).eval()
        row = {"name": name, "kind": kind, "config": config, "params": net.num_parameters(),
               "macs_per_sample": mean_macs(net), "receptive_field": net.receptive_field}
        for sampling in SAMPLINGS:
            rate = generation_rate(net, backend="numba", n=16384, repeats=5, sampling=sampling)
            row[sampling.describe()] = rate["samples_per_s"]
        rows.append(row)
        print(row, flush=True)
    machine = machine_info("cpu")
    plain, top_p = (s.describe() for s in SAMPLINGS)
    lines = ["# Candidate default shapes: CPU streaming speed", "",
             f"numba backend, batch 1, one thread, medians of 5 calls of 16,384 samples, every "
             f"row in one run; machine `{machine['machine']}` ({machine['processor']}), numba "
             f"{machine.get('numba', '?')}; random weights (top-p on nearly flat logits: its "
             "worst case). `python benchmarks/shapes.py`.", "",
             "| shape | params | MACs/sample | receptive field | samples/s plain | x real time "
             "| samples/s top-p 0.94 | x real time |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['params']:,} | {r['macs_per_sample']:,.0f} | "
                     f"{r['receptive_field']:,} | {r[plain]:,.0f} | {r[plain] / SAMPLE_RATE:.2f} "
                     f"| {r[top_p]:,.0f} | {r[top_p] / SAMPLE_RATE:.2f} |")
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"shapes-cpu-{platform.machine()}").lower()
    for path in write_json_md({"machine": machine, "rows": rows}, "\n".join(lines) + "\n",
                              args.out, stem):
        print(path)


if __name__ == "__main__":
    main()

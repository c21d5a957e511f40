"""The paper's polyphonic-music comparison: plain Seq-U-Net vs TCN on JSB Chorales and Nottingham.

    python benchmarks/paper/symbolic.py train --task jsb --model sequnet   # one run
    python benchmarks/paper/symbolic.py train --task jsb                   # both models in turn
    python benchmarks/paper/symbolic.py report                             # collect the table

``train`` writes ``<runs>/<task>-<model>/`` (per-epoch ``log.jsonl``, the best weights as a
checkpoint, ``result.json``); ``report`` writes ``benchmarks/results/paper_symbolic.{json,md}``
from every run found, testing the best weights of a run that was interrupted (marked so).
Data: ``--data DIR`` or ``$STREAMGEN_POLY_MUSIC`` or the ``shared/data/poly_music`` folder
found above the repository. Sizes and dropout are the paper's (its authors' commands); the
learning rate, which the authors tuned per run by a hyper-parameter search, is fixed here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from streamgen.train.symbolic import (
    LOG_FILE,
    RESULT_FILE,
    PolyMusicError,
    SymbolicTrainConfig,
    evaluate_best,
    train_symbolic,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
STEM = "paper_symbolic"

# (network kind, config) per task and model: the authors' commands in poly_music/README.md.
MODELS: dict[str, dict[str, tuple[str, dict[str, Any]]]] = {
    "jsb": {
        "sequnet": ("plain_sequnet", dict(channels=175, levels=2, kernel_size=3, dropout=0.5)),
        "tcn": ("tcn", dict(channels=220, levels=2, kernel_size=3, dropout=0.5, classes=88)),
    },
    "nottingham": {
        "sequnet": ("plain_sequnet", dict(channels=150, levels=4, kernel_size=5, dropout=0.2)),
        "tcn": ("tcn", dict(channels=215, levels=4, kernel_size=5, dropout=0.2, classes=88)),
    },
}
# Test NLL and parameter count reported in the paper (Stoller et al. 2020, Table 3).
PAPER = {
    ("jsb", "sequnet"): (8.173, "522K"), ("jsb", "tcn"): (8.154, "534K"),
    ("nottingham", "sequnet"): (2.97, "1.7M"), ("nottingham", "tcn"): (2.783, "1.7M"),
}
TOLERANCE = 0.15


def machine(threads: list[int]) -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores), torch threads per run: {', '.join(map(str, threads))}, torch {torch.__version__}"


def train(args: argparse.Namespace) -> None:
    for model in args.model or list(MODELS[args.task]):
        kind, cfg = MODELS[args.task][model]
        config = SymbolicTrainConfig(
            task=args.task, kind=kind, model=cfg, out_dir=str(args.runs / f"{args.task}-{model}"),
            data=args.data, lr=args.lr, epochs=args.epochs, patience=args.patience, seed=args.seed,
            threads=args.threads, time_budget_s=args.time_budget_h * 3600 if args.time_budget_h else None,
        )
        result = train_symbolic(config)
        print(f"{args.task} {model}: test NLL {result['test_nll']:.3f} after {result['epochs_run']} "
              f"epochs ({result['stopped']}, {result['train_seconds']:.0f} s)", flush=True)


def collect(runs: Path) -> list[dict[str, Any]]:
    rows = []
    for task, models in MODELS.items():
        for model in models:
            out = runs / f"{task}-{model}"
            if (out / RESULT_FILE).is_file():
                result = json.loads((out / RESULT_FILE).read_text())
            elif (out / LOG_FILE).is_file() and (out / "best").is_dir():
                result = evaluate_best(out)  # interrupted: the best epoch so far
                result["stopped"] = "interrupted"
            else:
                continue
            paper_nll, paper_params = PAPER[(task, model)]
            result.update(model=model, paper_test_nll=paper_nll, paper_params=paper_params,
                          gap=result["test_nll"] - paper_nll,
                          within_tolerance=abs(result["test_nll"] - paper_nll) <= TOLERANCE)
            rows.append(result)
    return rows


def report(args: argparse.Namespace) -> None:
    rows = collect(args.runs)
    if not rows:
        sys.exit(f"error: no runs under {args.runs}; train first (see --help)")
    where = machine(sorted({r["threads"] for r in rows}))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{STEM}.json").write_text(json.dumps({"machine": where, "runs": rows}, indent=2) + "\n")
    lines = [
        "# Polyphonic music: plain Seq-U-Net vs TCN (paper reproduction)",
        "",
        f"Machine: {where}. Written by `python benchmarks/paper/symbolic.py report`.",
        "Test NLL: nats per frame (BCE summed over 88 keys, averaged over predicted frames), of the",
        "best validation epoch. Training time: wall clock of all epochs run, validation included,",
        "on the machine as it was (shared with other jobs: compare epochs, not seconds).",
        "",
        "| task | model | params | paper params | test NLL | paper | gap | best epoch / run | stopped | training time |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['task']} | {r['model']} | {r['params']:,} | {r['paper_params']} | {r['test_nll']:.3f} | "
            f"{r['paper_test_nll']} | {r['gap']:+.3f} | {r['best_epoch']} / {r['epochs_run']} | "
            f"{r['stopped']} | {r['train_seconds'] / 60:.1f} min ({r['epoch_seconds_mean']:.1f} s/epoch) |")
    (RESULTS / f"{STEM}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the paper's models on one task")
    t.add_argument("--task", choices=sorted(MODELS), required=True)
    t.add_argument("--model", choices=["sequnet", "tcn"], action="append",
                   help="sequnet or tcn (repeatable; default both)")
    t.add_argument("--data", help="folder holding the .mat files")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--epochs", type=int, default=100)
    t.add_argument("--patience", type=int, default=20, help="early stop after this many epochs without improvement")
    t.add_argument("--time-budget-h", type=float, help="stop before an epoch would end past this many hours")
    t.add_argument("--seed", type=int, default=1111)
    t.add_argument("--threads", type=int, default=1)
    for p in (t, sub.add_parser("report", help="write benchmarks/results/paper_symbolic.{json,md}")):
        p.add_argument("--runs", type=Path, default=Path("runs/paper_symbolic"), help="run folders (default: %(default)s)")
    args = parser.parse_args()
    torch.set_num_threads(getattr(args, "threads", 1))
    try:
        train(args) if args.command == "train" else report(args)
    except PolyMusicError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()

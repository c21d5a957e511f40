"""``streamgen publish``: score a training run fairly and turn it into a zoo entry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from streamgen.sampling import STARTS

from .common import CLIError, add_sampling_options, count, require, sampling_config, seconds

EXAMPLE_LINES = [
    "streamgen publish eval runs/mine --data data/bach16k          # -> runs/mine/eval.json",
    "streamgen publish card runs/mine models/mine --data data/bach16k --top-p 0.94 \\",
    "    --baseline wavenet-baseline=runs/wavenet-baseline",
    "streamgen publish card runs/wide models/wide --data data/bach16k --weights-dtype float16",
    "streamgen publish example models/default                       # after an engine change",
]


def examples(*lines: str) -> str:
    """An epilog of example command lines."""
    return "examples:\n" + "".join(f"  {line}\n" for line in lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("publish", help="evaluate a run and write its model card",
                       description="eval scores a checkpoint on validation targets that do not depend "
                       "on its receptive field (the same samples for every network); card copies an "
                       "evaluated run into a zoo folder with an example clip, its spectrogram and a "
                       "model card (README.md).",
                       epilog=examples(*EXAMPLE_LINES), formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", metavar="STEP", required=True)
    raw = argparse.RawDescriptionHelpFormatter
    e = steps.add_parser("eval", help="score RUN on the fixed validation targets (writes RUN/eval.json)",
                         epilog=examples(EXAMPLE_LINES[0]), formatter_class=raw)
    e.add_argument("run_dir", type=Path, metavar="RUN", help="checkpoint folder of a training run")
    e.add_argument("--data", type=Path, required=True, help="the folder the run was trained on")
    e.add_argument("--every", type=count(), default=4, help="score one block in every N (default: %(default)s)")
    e.add_argument("--threads", type=count(), default=1, help="torch CPU threads (default: %(default)s)")
    e.set_defaults(run=run_eval)
    c = steps.add_parser("card", help="copy an evaluated RUN to DEST with an example and a model card",
                         epilog=examples(*EXAMPLE_LINES[1:4]), formatter_class=raw)
    c.add_argument("run_dir", type=Path, metavar="RUN", help="checkpoint folder scored by `publish eval`")
    c.add_argument("dest", type=Path, metavar="DEST", help="zoo folder to write (e.g. models/NAME)")
    c.add_argument("--data", type=Path, required=True, help="the folder the run was trained on")
    c.add_argument("--baseline", action="append", default=[], metavar="NAME=RUN",
                   help="another evaluated run for the comparison table (repeatable; RUN alone: "
                   "named after its folder)")
    c.add_argument("--force", action="store_true", help="replace the model DEST holds")
    c.add_argument("--seconds", type=seconds(), default=8.0, help="length of the example (default: %(default)s)")
    c.add_argument("--hardware", default="", help="training hardware as the card names it "
                   "(default: this machine's CPU)")
    add_sampling_options(c)  # the sampling the card recommends (stored in config.json) and the example's seed
    c.add_argument("--start", choices=STARTS, help="the start history the card recommends "
                   "(stored in config.json; default: the run's, zeros)")
    c.add_argument("--weights-dtype", choices=["float32", "float16", "bfloat16"],
                   help="how DEST stores the weights (default: as the run does; a zoo entry's "
                   "model.safetensors takes at most 16 MB, and they load as float32 unless asked "
                   "otherwise)")
    c.set_defaults(run=run_card)
    x = steps.add_parser("example", help="generate a zoo entry's example again and replace "
                         "that section of its card (the rest of the card stays)",
                         epilog=examples(EXAMPLE_LINES[4]), formatter_class=raw)
    x.add_argument("dest", type=Path, metavar="DEST", help="zoo folder (e.g. models/default)")
    x.add_argument("--seconds", type=seconds(), default=8.0, help="length of the example (default: %(default)s)")
    x.add_argument("--seed", type=int, default=0, help="the example's seed (default: %(default)s)")
    x.set_defaults(run=run_example)


def run_eval(args: argparse.Namespace) -> int:
    from streamgen.publish import EVAL, evaluate_run

    try:
        result = evaluate_run(args.run_dir, args.data, args.every, args.threads)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    (args.run_dir / EVAL).write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


def run_card(args: argparse.Namespace) -> int:
    require("matplotlib", "publish card (its spectrogram)")
    from streamgen.checkpoint import read_info
    from streamgen.publish import write_card

    baselines = {}
    for item in args.baseline:
        label, _, path = item.rpartition("=")
        baselines[label or Path(path).name] = Path(path)
    sampling = sampling_config(args, read_info(args.run_dir))  # the run's recommendation, if any
    try:
        dest = write_card(args.run_dir, args.dest, args.data, baselines, args.seconds, args.seed,
                          sampling=sampling, hardware=args.hardware, start=args.start,
                          weights_dtype=args.weights_dtype, force=args.force)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    print(dest)
    return 0


def run_example(args: argparse.Namespace) -> int:
    require("matplotlib", "publish example (its spectrogram)")
    from streamgen.publish import refresh_example

    try:
        print(refresh_example(args.dest, args.seconds, args.seed))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return 0

"""``streamgen train``: train a Seq-U-Net, WaveNet or TCN on a folder of audio."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from .common import count, seconds

EXAMPLES = """examples:
  streamgen train --build-corpus data/bach16k              # the default Bach-piano corpus
  streamgen train --data data/bach16k --out runs/mine --steps 20000
  streamgen train --data ~/music --out runs/wn --kind wavenet --config '{"blocks": 3, "layers": 10}'
  streamgen train --out runs/mine --steps 40000 --resume       # continue (and extend) a run
  streamgen train --pack-corpus data/bach16k data/bach16k-packed --subset 120
  torchrun --nproc_per_node=2 -m streamgen.cli.main train --data data/bach16k --out runs/ddp
"""


DESCRIPTION = """\
Train on any folder of audio (wav, flac, ogg, mp3; any rate and channel count), split into
train/validation by file, or on a folder packed by --pack-corpus. The output folder is a
checkpoint usable with --model.

Ctrl-C (or SIGTERM) finishes the step under way, saves a checkpoint and says how to resume.
--resume continues the stored run exactly: the options it stored are reused, and only --steps
(to extend it), --data (the same data elsewhere), --device, --threads and --cache-dir may be
given anew; on an --out that holds no run yet, it starts one.
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a folder of audio",
                       description=DESCRIPTION,
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of audio files (searched recursively)")
    p.add_argument("--out", dest="out_dir", help="checkpoint folder to write")
    p.add_argument("--build-corpus", metavar="DIR",
                   help="render the Bach chorale piano corpus into DIR (needs fluidsynth) and exit")
    p.add_argument("--pack-corpus", nargs=2, metavar=("DATA", "OUT"),
                   help="pack DATA's encoded tracks (split kept) into OUT as parts of at most "
                   "--max-bytes, for copying to another machine, and exit; train with --data OUT")
    p.add_argument("--max-bytes", type=_size, default=None, metavar="SIZE",
                   help="largest packed part, e.g. 60M (default: 60M)")
    p.add_argument("--subset", type=count(), metavar="N", help="pack only the first N training files "
                   "(all validation files)")
    p.add_argument("--kind", choices=["sequnet", "wavenet", "tcn"], help="network (default: sequnet)")
    p.add_argument("--config", dest="model", type=json.loads, default=None, metavar="JSON",
                   help="network config fields, e.g. '{\"channels\": 32, \"levels\": 10}'")
    p.add_argument("--window", dest="output_length", type=count(), help="output samples per window")
    p.add_argument("--batch", dest="batch_size", type=count(), help="windows per step")
    p.add_argument("--steps", type=count(), help="optimizer steps in total")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--lr-final", type=float, help="decay the learning rate to this (cosine) by the last step")
    p.add_argument("--decay-from", type=count(0), help="step where the decay starts (default 0)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    p.add_argument("--start-windows", type=float, metavar="FRACTION",
                   help="share of windows that start before a file, with silence before it, so "
                        "the model learns to begin from silence (generate --start silence)")
    p.add_argument("--val-fraction", type=float, help="fraction of files held out")
    p.add_argument("--val-every", type=count(), help="steps between validations")
    p.add_argument("--checkpoint-every", type=count(), help="steps between checkpoints")
    p.add_argument("--time-budget", dest="time_budget_s", type=seconds(), metavar="TIME",
                   help="fit the step count so that the whole run takes about TIME (e.g. 540, "
                        "9m, 1.5h): the pace is measured over the first steps, --steps and "
                        "--decay-from give the schedule's shape")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly (start it if there is none)")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="no mixed precision on GPU")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto, cuda when available; "
                   "under torchrun cuda means each process's own GPU)")
    p.add_argument("--threads", type=count(), help="torch CPU threads")
    p.add_argument("--cache-dir", help="where the mu-law encoded files are cached")
    p.set_defaults(run=run, parser_actions=p._actions)


def _size(text: str) -> int:
    """``60M``, ``1.5G``, ``500k`` or a plain byte count -> bytes (binary units)."""
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    scale = units.get(text[-1:].lower(), 1)
    try:
        value = int(float(text[:-1] if scale > 1 else text) * scale)
    except (ValueError, OverflowError):  # not a number, inf, nan
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 60M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"a size must be positive, got {text!r}")
    return value


def _flag(parser_actions: list[argparse.Action], field: str) -> str:
    """The command-line option that sets TrainConfig ``field`` (``model.x`` -> --config)."""
    dest = "model" if field.startswith("model.") else field
    return next((a.option_strings[-1] for a in parser_actions if a.dest == dest and a.option_strings), field)


def pack(args: argparse.Namespace) -> int:
    from streamgen.train.data import open_training_data
    from streamgen.train.loop import TrainConfig, warn
    from streamgen.train.pack import DEFAULT_MAX_BYTES, write_pack

    source, out = args.pack_corpus
    val_fraction = TrainConfig.val_fraction if args.val_fraction is None else args.val_fraction
    data = open_training_data(source, TrainConfig.sample_rate, val_fraction, cache_dir=args.cache_dir,
                              warn=warn).subset(args.subset)
    print(data.summary(), file=sys.stderr)
    manifest = json.loads(write_pack(data, out, args.max_bytes or DEFAULT_MAX_BYTES).read_text())
    samples = sum(manifest["samples"].values())
    print(f"packed {samples:,} samples in {len(manifest['parts'])} parts, {manifest['bytes']:,} bytes "
          f"({manifest['bytes'] / samples:.3f} bytes/sample): {out}/pack.json")
    return 0


def run(args: argparse.Namespace) -> int:
    from .common import CLIError, require

    if args.build_corpus:
        require("music21", "--build-corpus")
        from streamgen.train.corpus import build_corpus

        if Path(args.build_corpus).exists() and not Path(args.build_corpus).is_dir():
            raise CLIError(f"--build-corpus {args.build_corpus} is a file; give a folder (a new "
                           "one, or one to go on with)")
        try:
            manifest = build_corpus(args.build_corpus)
        except (FileNotFoundError, PermissionError):  # one line as they are (main's known errors)
            raise
        except OSError as exc:
            raise CLIError(f"--build-corpus {args.build_corpus}: cannot write there "
                           f"({exc.strerror or exc})") from exc
        print(f"corpus written: {manifest}")
        return 0
    from streamgen.devices import resolve_device
    from streamgen.nn import build_network
    from streamgen.train.loop import ResumeConflict, TrainConfig, TrainingInterrupted, train

    if not args.pack_corpus and (args.out_dir is None or args.data is None and not args.resume):
        raise CLIError("train needs --data FOLDER and --out FOLDER (or --build-corpus DIR, or "
                       "--out RUN --resume); see streamgen train --help")
    try:
        if args.pack_corpus:
            return pack(args)
        config = TrainConfig.from_options(args)  # a resumed run's stored options as the base
        if args.data is None and not Path(config.data).exists():
            raise CLIError(f"the run in {args.out_dir} was trained on --data {config.data} (as "
                           f"given where it started), which is not found from {Path.cwd()}; "
                           "pass --data with where that folder is now")
        if not isinstance(config.model, dict):
            raise ValueError(f"--config must be a JSON object of network fields, not {config.model!r}")
        build_network(config.kind, config.model)  # unknown or bad fields fail before any work
        resolve_device(config.device)  # so does an unusable --device
    except ResumeConflict as exc:
        flag = _flag(args.parser_actions, exc.name)
        raise CLIError(f"{flag} {exc.given if flag != '--config' else exc.name + '=' + repr(exc.given)} "
                       f"conflicts with the run in {args.out_dir} (stored: {exc.stored!r}); leave "
                       f"{flag} out to continue that run, or pass another --out") from exc
    except FileExistsError as exc:  # packing into an existing folder
        raise CLIError(str(exc)) from exc
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{exc}; see streamgen train --help") from exc
    try:
        path = train(config)
    except FileExistsError as exc:
        raise CLIError(f"{args.out_dir} already holds a checkpoint; pass --resume to continue it "
                       "or choose another --out") from exc
    except (TypeError, ValueError) as exc:  # bad data: the message names the fix
        raise CLIError(str(exc)) from exc
    except TrainingInterrupted as stop:
        print(f"streamgen: interrupted at step {stop.step}; checkpoint saved in {stop.out_dir}; "
              f"resume with: streamgen train --out {shlex.quote(str(stop.out_dir))} --resume",
              file=sys.stderr)
        return 128 + stop.signum  # 130 for Ctrl-C, 143 for SIGTERM, as the shell has them
    print(f"checkpoint: {path}")
    return 0

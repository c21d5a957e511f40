"""``streamgen train``: train a Seq-U-Net, WaveNet or TCN on a folder of audio."""

from __future__ import annotations

import argparse
import json

EXAMPLES = """examples:
  streamgen train --build-corpus data/bach16k              # the default Bach-piano corpus
  streamgen train --data data/bach16k --out runs/mine --steps 20000
  streamgen train --data ~/music --out runs/wn --kind wavenet --config '{"blocks": 3, "layers": 10}'
  streamgen train --data data/bach16k --out runs/mine --steps 40000 --resume
  torchrun --nproc_per_node=2 -m streamgen.cli.main train --data data/bach16k --out runs/ddp
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model on a folder of audio",
                       description="Train on any folder of audio (wav, flac, ogg, mp3; any rate and "
                       "channel count), split into train/validation by file. The output folder is a "
                       "checkpoint usable with --model.",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="folder of audio files (searched recursively)")
    p.add_argument("--out", dest="out_dir", help="checkpoint folder to write")
    p.add_argument("--build-corpus", metavar="DIR",
                   help="render the Bach chorale piano corpus into DIR (needs fluidsynth) and exit")
    p.add_argument("--kind", choices=["sequnet", "wavenet", "tcn"], default="sequnet")
    p.add_argument("--config", dest="model", type=json.loads, default=None, metavar="JSON",
                   help="network config fields, e.g. '{\"channels\": 32, \"levels\": 10}'")
    p.add_argument("--window", dest="output_length", type=int, help="output samples per window")
    p.add_argument("--batch", dest="batch_size", type=int, help="windows per step")
    p.add_argument("--steps", type=int, help="optimizer steps in total")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--lr-final", type=float, help="decay the learning rate to this (cosine) by the last step")
    p.add_argument("--decay-from", type=int, help="step where the decay starts (default 0)")
    p.add_argument("--grad-clip", type=float, help="clip the gradient norm to this value")
    p.add_argument("--val-fraction", type=float, help="fraction of files held out")
    p.add_argument("--val-every", type=int, help="steps between validations")
    p.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue the run in --out exactly")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="no mixed precision on GPU")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: auto, cuda when available; "
                   "under torchrun cuda means each process's own GPU)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--cache-dir", help="where the mu-law encoded files are cached")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import CLIError, require

    if args.build_corpus:
        require("music21", "--build-corpus")
        from streamgen.train.corpus import build_corpus

        manifest = build_corpus(args.build_corpus)
        print(f"corpus written: {manifest}")
        return 0
    from streamgen.devices import resolve_device
    from streamgen.nn import build_network
    from streamgen.train.loop import TrainConfig, train

    if args.data is None or args.out_dir is None:
        raise CLIError("train needs --data FOLDER and --out FOLDER (or --build-corpus DIR); "
                       "see streamgen train --help")
    try:
        config = TrainConfig.from_options(args)
        if not isinstance(config.model, dict):
            raise ValueError(f"--config must be a JSON object of network fields, not {config.model!r}")
        build_network(config.kind, config.model)  # unknown or bad fields fail before any work
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{exc}; see streamgen train --help") from exc
    resolve_device(config.device)  # an unusable --device fails before any work
    try:
        path = train(config)
    except FileExistsError as exc:
        raise CLIError(f"{config.out_dir} already holds a checkpoint; pass --resume to continue "
                       "it or choose another --out") from exc
    print(f"checkpoint: {path}")
    return 0

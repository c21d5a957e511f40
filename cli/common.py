"""What the subcommands share: model loading, error reporting, output-path checks."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

# torch-free: building the parser (and --help) imports nothing heavy
from streamgen.engine.backends import BACKENDS
from streamgen.sampling import STARTS, SamplingConfig

if TYPE_CHECKING:
    from streamgen.checkpoint import ModelInfo

DEFAULT_MODEL = "default"


#: Optional packages -> the extra that installs them (pyproject.toml [project.optional-dependencies]).
EXTRAS = {"matplotlib": "plot", "librosa": "train", "music21": "train"}  # sounddevice: audio.devices


class CLIError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse with usage errors in one line (``streamgen: error: ...; see --help``), status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"streamgen: error: {message}; see {self.prog} --help\n")


def require(module: str, feature: str) -> None:
    """Import an optional ``module`` now, before any work; missing -> one line naming its extra."""
    try:
        importlib.import_module(module)
    except ImportError:
        raise CLIError(f"{feature} needs the {module} package, which is not installed: "
                       f'pip install "streamgen[{EXTRAS[module]}]"') from None


def seconds(zero: str | None = None):
    """argparse type for durations, in seconds or with a unit (``540``, ``540s``, ``9m``,
    ``1.5h``): finite and positive (``zero``: 0 allowed too, meaning that: ``"forever"``,
    ``"none"``)."""
    units = {"s": 1, "m": 60, "h": 3600}

    def parse(text: str) -> float:
        scale = units.get(text[-1:].lower())
        try:
            value = float(text[:-1] if scale else text) * (scale or 1)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0 or (value == 0 and zero is None):
            bound = f">= 0 (0: {zero})" if zero else "> 0"
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a duration; give seconds {bound}, or 9m, 1.5h")
        return value

    return parse


def count(minimum: int = 1):
    """argparse type for whole numbers of at least ``minimum`` (batches, blocks, threads, steps)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {minimum}")
        return value

    return parse


def add_model_options(p: argparse.ArgumentParser, streams: bool = False) -> None:
    """--model, --device, --backend, --start, --threads (``streams``: the command has --batch)."""
    p.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME|PATH",
                   help="zoo model name or checkpoint folder (default: %(default)s)")
    p.add_argument("--device", default="auto",
                   help="torch device: auto, cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="engine backend; auto takes the fastest that applies")
    p.add_argument("--start", choices=STARTS,
                   help="history before the first sample: zero vectors, or the silence class "
                        "(default: the model's recommendation, zeros unless its card says otherwise)")
    p.add_argument("--threads", type=count(), default=1,
                   help="torch CPU threads (default: %(default)s; a stream of single samples gains "
                   "nothing from more, and loses much on a busy machine)" + (
                       ". The numba backend runs the streams of a --batch on every core "
                       "(NUMBA_NUM_THREADS=N to limit)" if streams else ""))


def audio_rate(info: ModelInfo, name: str) -> int:
    """The sample rate of an audio model (a model of symbolic sequences stores 0)."""
    if info.sample_rate < 1:
        raise CLIError(f"{name} is not an audio model (sample_rate {info.sample_rate} in its "
                       "config.json: a model of symbolic sequences); choose an audio model "
                       "(streamgen models)")
    return info.sample_rate


def set_threads(args: argparse.Namespace) -> None:
    """Apply --threads (before any torch work)."""
    import torch

    torch.set_num_threads(args.threads)


def add_sampling_options(p: argparse.ArgumentParser, streams: bool = False) -> None:
    """The sampling options; ``streams``: the command has --batch (its seeds per stream)."""
    g = p.add_argument_group("sampling (unset options take the model's recommended values)")
    g.add_argument("--seed", type=int, default=0,
                   help="random seed (default: %(default)s)" + (
                       "; stream i of a --batch uses SEED + i, so any one of them plays again "
                       "alone with --seed SEED+i" if streams else ""))
    g.add_argument("--temperature", type=float, help="softmax temperature (plain: 1)")
    g.add_argument("--top-k", type=int, help="keep the k most likely classes (0: off)")
    g.add_argument("--top-p", type=float, help="nucleus sampling mass (1: off)")
    g.add_argument("--greedy", action="store_true", default=None,
                   help="always take the most likely class (for tests: audio models then fall "
                   "into near-silence)")


def sampling_config(args: argparse.Namespace, info: ModelInfo | None = None) -> SamplingConfig:
    """The model's recommended sampling (plain without a model), overridden by options."""
    from streamgen.checkpoint import merge_sampling

    given = {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
             "greedy": args.greedy}
    try:
        return info.sampling_with(given) if info else merge_sampling(SamplingConfig(), given)
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{exc}; see --help") from exc


def check_output(path: str, force: bool, audio: bool = True) -> None:
    """Refuse to overwrite without --force; fail early on unwritable folders and (``audio``)
    on extensions the audio writer cannot write."""
    from streamgen.audio.io import output_format

    if path == "-":
        return
    if audio:
        output_format(path)  # an extension the writer cannot write fails before any work
    p = Path(path)
    if p.exists() and not force:
        raise CLIError(f"{path} exists; pass --force to overwrite it")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise CLIError(f"cannot write {path}: folder {folder} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise CLIError(f"cannot write {path}: permission denied; choose another output path")


def announce_compile(backend: str, quiet: bool = False) -> None:
    """One line on stderr when the numba kernels are about to compile (first use only), so a
    wait of seconds before the first sample does not look like a hang."""
    if quiet or backend != "numba":
        return
    from streamgen.engine.fast.kernels import kernels_cached

    if not kernels_cached():
        print("streamgen: compiling the CPU kernels for first use (once for every model, cached "
              "afterwards; about 10 s)", file=sys.stderr)


def fail(message: str, status: int = 2) -> int:
    print(f"streamgen: error: {message}", file=sys.stderr)
    return status

"""``streamgen generate``: audio from a model into files or raw PCM on stdout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .common import (CLIError, add_model_options, add_sampling_options, announce_compile, audio_rate, check_output,
                     count, require, sampling_config, seconds, set_threads)

EXAMPLES = """examples:
  streamgen generate -o out.wav --seconds 10
  streamgen generate -o take.flac --seconds 30 --temperature 0.9 --top-p 0.95 --seed 7
  streamgen generate -o 'take_{i}.wav' --batch 4 --seconds 5        # four files
  streamgen generate -o cont.wav --prime prompt.mp3 --seconds 8      # continue a recording
  streamgen generate -o both.mp3 --prime prompt.mp3 --include-prime  # prompt, then continuation
  streamgen generate -o - --seconds 5 | sox -t raw -r 16000 -e signed -b 16 -c 1 - out.ogg
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="generate audio into a file (or raw PCM on stdout)",
                       description="Generate audio with the streaming engine, written block by "
                       "block (Ctrl-C keeps a valid file with everything so far).",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", required=True,
                   help="output file (.wav, .flac, .ogg, .mp3), '-' for raw s16le PCM on stdout (a "
                   "pipe, not a terminal); with --batch N, '{i}' in the name numbers the files "
                   "(else _0, _1, ... are added)")
    p.add_argument("--seconds", type=seconds(), default=10.0,
                   help="duration generated, in seconds or with a unit: 90, 1.5m (default: %(default)s)")
    p.add_argument("--batch", type=count(), default=1,
                   help="independent streams, one file each (default: %(default)s)")
    p.add_argument("--prime", metavar="FILE", help="continue this audio (any format and rate)")
    p.add_argument("--include-prime", action="store_true",
                   help="start the output with the --prime audio (mono, at the model's rate)")
    p.add_argument("--spectrogram", metavar="PNG", help="also save a spectrogram image")
    p.add_argument("--block", type=count(), default=4096,
                   help="samples per written block (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_model_options(p, streams=True)
    add_sampling_options(p, streams=True)
    p.set_defaults(run=run)


def output_paths(output: str, batch: int) -> list[str]:
    if batch == 1:
        return [output]
    if output == "-":
        raise CLIError("raw PCM on stdout carries one stream; use --batch 1 or file outputs")
    if "{i}" in output:
        return [output.replace("{i}", str(i)) for i in range(batch)]
    p = Path(output)
    return [str(p.with_name(f"{p.stem}_{i}{p.suffix}")) for i in range(batch)]


def run(args: argparse.Namespace) -> int:
    from streamgen.audio.io import load_audio
    from streamgen.generation import AudioGenerator
    from streamgen.zoo import load_model

    if args.include_prime and not args.prime:
        raise CLIError("--include-prime needs --prime FILE")
    if args.output == "-" and sys.stdout.isatty():
        raise CLIError("-o - writes raw PCM, which a terminal cannot show; pipe it into a player "
                       "or encoder (see --help) or give a file name")
    if args.spectrogram:
        require("matplotlib", "--spectrogram")
    sampling_config(args)  # bad values fail before any work
    set_threads(args)
    paths = output_paths(args.output, args.batch)
    for path in paths:
        check_output(path, args.force)
    if args.spectrogram:
        check_output(args.spectrogram, args.force, audio=False)
    model, info = load_model(args.model)
    sampling = sampling_config(args, info)
    rate = audio_rate(info, args.model)
    total = int(round(args.seconds * rate))
    if total < 1:
        raise CLIError(f"--seconds {args.seconds:g} is less than one sample at {rate} Hz; give "
                       f"at least {1 / rate:g}")
    prime = load_audio(args.prime, rate) if args.prime else None
    gen = AudioGenerator(model, batch=args.batch, device=args.device, sampling=sampling,
                         seed=args.seed, backend=args.backend, prime=prime, start=args.start or info.start)
    writers = _open_writers(paths, rate)
    kept: list[np.ndarray] = []
    if args.include_prime:
        for writer in writers:
            writer.write(prime)
        kept.append(prime)
    announce_compile(gen.engine.backend, args.quiet)
    progress = _progress(total, args.quiet or args.output == "-" and not sys.stderr.isatty())
    interrupted = False
    try:
        for block in gen.blocks(total, args.block):
            for writer, stream in zip(writers, block):
                writer.write(stream)
            if args.spectrogram:
                kept.append(block[0])
            _advance(progress, block.shape[1], rate)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        for writer in writers:
            writer.close()
        if progress is not None:
            progress.close()  # the bar's last line comes before any message
    if interrupted:
        done = writers[0].frames_written
        print(f"streamgen: interrupted; kept {done} samples ({done / rate:.2f} s) in "
              f"{', '.join(paths)}", file=sys.stderr)
        return 130
    if args.spectrogram and kept:
        from streamgen.audio.plots import save_spectrogram

        save_spectrogram(np.concatenate(kept), rate, args.spectrogram,
                         title=f"{Path(paths[0]).name}: {args.model}, seed {args.seed}")
    return 0


def _open_writers(paths: list[str], rate: int) -> list:
    """One writer per output, every one opened or none: ``--batch N`` keeps N files open at
    once, which the process's limit may not allow (checked first; a file that fails to open
    takes back the empty ones opened before it)."""
    from streamgen.audio.io import AudioWriter

    files = [p for p in paths if p != "-"]
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except ImportError:  # not on Windows
        soft = resource = None
    need = len(files) + 64  # beside the outputs, the interpreter's own (libraries, pipes)
    if resource is not None and soft != resource.RLIM_INFINITY and need > soft:
        raise CLIError(f"--batch {len(files)} writes {len(files)} files at once, more than this "
                       f"process may keep open ({soft}, ulimit -n); raise the limit (ulimit -n "
                       f"{need}) or use a smaller --batch")
    writers: list[AudioWriter] = []
    try:
        for path in paths:
            writers.append(AudioWriter(path, rate))
    except BaseException:
        for writer in writers:
            writer.close()
            if writer.path != "-":
                Path(writer.path).unlink(missing_ok=True)
        raise
    return writers


def _progress(total: int, quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    # no rate field of tqdm's own: the postfix shows one speed in two units (see _advance)
    return tqdm(total=total, unit="sample", unit_scale=True, file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")


def _advance(progress, n: int, rate: int) -> None:
    """Advance the bar; the speed is tqdm's smoothed current one (so a one-off start-up cost,
    such as compiling the kernels on first use, fades out of it), in samples/s and real time."""
    if progress is None:
        return
    progress.update(n)
    speed = progress.format_dict.get("rate")
    if speed:
        progress.set_postfix_str(f"{speed / 1000:.1f} ksample/s, {speed / rate:.2f}x real time")

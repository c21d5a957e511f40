"""Entry point of the ``streamgen`` console script."""

from __future__ import annotations

import argparse
import os
import signal
import sys

EPILOG = """examples:
  streamgen generate -o out.wav --seconds 10
  streamgen play --seconds 30
  streamgen models
  streamgen info default
  streamgen train --data ./my-audio --out runs/mine
  streamgen bench --quick
"""


def build_parser() -> argparse.ArgumentParser:
    from streamgen import __version__

    from . import bench, generate, models, play, publish, train
    from .common import Parser

    parser = Parser(
        prog="streamgen",
        description="Real-time streaming audio generation with a causal Seq-U-Net.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"streamgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    generate.add_parser(sub)
    play.add_parser(sub)
    models.add_parsers(sub)
    train.add_parser(sub)
    bench.add_parser(sub)
    publish.add_parser(sub)
    return parser


def known_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: reported in one line, no traceback."""
    from streamgen.audio.io import AudioFileError
    from streamgen.checkpoint import CheckpointError
    from streamgen.devices import DeviceError
    from streamgen.engine.tables import BackendError
    from streamgen.zoo import ModelNotFoundError

    from .common import CLIError

    errors: list[type[BaseException]] = [CLIError, AudioFileError, CheckpointError,
                                         ModelNotFoundError, DeviceError, BackendError,
                                         FileNotFoundError, PermissionError]
    try:
        from streamgen.audio.live import AudioDeviceError, TooSlowError

        errors += [AudioDeviceError, TooSlowError]
    except ImportError:  # sounddevice / PortAudio missing: play reports it itself
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Ctrl-C at any moment, start-up (importing torch) included, exits 130
    with one line and no traceback; a closed stdout (``streamgen info | head``) ends quietly."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("streamgen: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away: send what is still buffered nowhere, so exit does not fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _run(argv: list[str] | None) -> int:
    from streamgen.signals import deferred_signals

    from .common import fail

    # Ctrl-C held until the imports are whole: one cut short leaves its module half-initialised
    # (torch then fails in its own ways, or crashes the interpreter)
    with deferred_signals(signal.SIGINT) as interrupted:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is not None:
            import torch  # noqa: F401  (every command's)
    if interrupted():
        raise KeyboardInterrupt
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except known_errors() as exc:
        return fail(str(exc))
    except (MemoryError, RuntimeError) as exc:  # torch's allocators raise RuntimeErrors
        detail = (str(exc).strip().splitlines() or ["MemoryError"])[0]
        if not isinstance(exc, MemoryError) and not any(
                s in detail.lower() for s in ("out of memory", "can't allocate memory")):
            raise
        return fail(f"out of memory ({detail[:200]}); make the job smaller: fewer streams "
                    "(--batch), or shorter training windows (--window)")


if __name__ == "__main__":
    sys.exit(main())

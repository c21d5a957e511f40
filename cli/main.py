"""Entry point of the ``streamgen`` console script."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  streamgen generate -o out.wav --seconds 10
  streamgen play --seconds 30
  streamgen models
  streamgen bench --quick
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamgen",
        description="Real-time streaming audio generation with a causal Seq-U-Net.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from streamgen import __version__

    parser.add_argument("--version", action="version", version=f"streamgen {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in [
        ("generate", "generate audio into a file (or raw PCM on stdout)"),
        ("play", "stream generated audio live to the speakers"),
        ("models", "list the model zoo"),
        ("info", "describe one model"),
        ("train", "train a model on a folder of audio"),
        ("bench", "benchmark samples per second"),
    ]:
        sub.add_parser(name, help=help_text, description=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    print(f"streamgen: '{args.command}' is not available in this version yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

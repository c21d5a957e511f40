"""The installed distribution holds ``streamgen`` alone, with the CLI as ``streamgen.cli``."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys
from pathlib import Path

import pytest


def editable_install() -> bool:
    dist = importlib.metadata.distribution("streamgen")
    direct = dist.read_text("direct_url.json")
    return bool(direct and json.loads(direct).get("dir_info", {}).get("editable"))


requires_regular_install = pytest.mark.skipif(
    editable_install(), reason="streamgen is installed in editable mode; these checks need a "
    "regular install (pip install .), as CI does")


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True)


@requires_regular_install
def test_only_streamgen_is_importable_outside_the_repo(tmp_path: Path) -> None:
    for name in ["cli", "models", "tests"]:
        result = run_python(f"import {name}", tmp_path)
        assert result.returncode != 0 and "ModuleNotFoundError" in result.stderr, name
    result = run_python("import streamgen, streamgen.cli.main; print(streamgen.__file__)", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "site-packages" in result.stdout or "dist-packages" in result.stdout


@requires_regular_install
def test_distribution_files_are_under_streamgen() -> None:
    files = importlib.metadata.files("streamgen") or []
    top = {f.parts[0] for f in files if f.suffix == ".py"}
    assert top == {"streamgen"}, top


def test_console_script_help_lists_subcommands(tmp_path: Path) -> None:
    result = subprocess.run(["streamgen", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0
    for sub in ["generate", "play", "models", "info", "train", "bench"]:
        assert sub in result.stdout


def test_training_depends_only_on_networks_checkpoints_and_data() -> None:
    """Importing the training loop loads no engine, live audio, benchmark or CLI module."""
    probe = ("import sys, streamgen.train.loop; "
             "print(' '.join(m for m in sys.modules if m.startswith('streamgen.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "streamgen.train.loop" in loaded
    banned = ("streamgen.engine", "streamgen.bench", "streamgen.cli", "streamgen.audio.live",
              "streamgen.publish", "streamgen.generation")
    assert not [m for m in loaded if m.startswith(banned)], loaded

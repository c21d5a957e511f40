"""Model zoo lookup: explicit paths, $STREAMGEN_MODELS, the packaged zoo and its wheel data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from streamgen import zoo
from streamgen.checkpoint import load_checkpoint, save_checkpoint
from streamgen.nn import build_network
from streamgen.zoo import ModelNotFoundError, list_models, resolve_model

ROOT = Path(__file__).resolve().parents[1]


def make_model(folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    return save_checkpoint(folder, build_network("tcn", {"channels": 4, "levels": 1}))


@pytest.fixture
def two_zoos(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    make_model(first / "piano", seed=1)
    make_model(first / "organ", seed=2)
    make_model(second / "piano", seed=3)
    make_model(second / "strings", seed=4)
    (second / "not-a-model").mkdir()
    monkeypatch.setenv(zoo.ENV_VAR, os.pathsep.join([str(first), str(tmp_path / "absent"), str(second)]))
    monkeypatch.setattr(zoo, "packaged_zoo", lambda: None)
    return first, second


def test_list_models_in_priority_order(two_zoos: tuple[Path, Path]) -> None:
    first, second = two_zoos
    entries = {e.name: e.path for e in list_models()}
    assert entries == {"organ": first / "organ", "piano": first / "piano", "strings": second / "strings"}


def test_resolve_by_name_and_by_path(two_zoos: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = two_zoos
    assert resolve_model("piano") == first / "piano"  # the earlier folder wins
    assert resolve_model(second / "piano") == second / "piano"
    assert resolve_model(str(second / "piano" / "config.json")) == second / "piano"
    load_checkpoint(resolve_model("strings"))


def test_unknown_name_lists_what_exists(two_zoos: tuple[Path, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model("violin")
    message = str(err.value)
    assert message.startswith("no model named 'violin'") and "organ, piano, strings" in message
    assert "\n" not in message
    second = two_zoos[1]
    for path in (tmp_path / "first",  # a folder, but not a checkpoint
                 second / "piano" / "model.safetensors",  # a checkpoint's file other than its config
                 os.path.join("zoo", "violin"), os.path.join("missing", "config.json")):  # absent paths
        with pytest.raises(ModelNotFoundError, match="no checkpoint folder"):
            resolve_model(path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no checkpoint folder .* 'first'"):
        resolve_model("first")  # a folder here, named without a separator


def test_empty_zoo_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(zoo.ENV_VAR, raising=False)
    monkeypatch.setattr(zoo, "packaged_zoo", lambda: None)
    with pytest.raises(ModelNotFoundError, match="none installed"):
        resolve_model("piano")


def test_packaged_zoo_is_found_through_importlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = tmp_path / "packaged"
    make_model(packaged / "bach")
    monkeypatch.delenv(zoo.ENV_VAR, raising=False)
    monkeypatch.setattr(zoo.resources, "files", lambda name: packaged if name == "streamgen.models" else None)
    assert [(e.name, e.source) for e in list_models()] == [("bach", "packaged")]


def test_wheel_ships_the_models_folder_inside_streamgen(tmp_path: Path) -> None:
    """Build a wheel from a copy of the repo with one model; it lands in streamgen/models."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ["pyproject.toml", "README.md", "LICENSE", "streamgen", "cli", "models"]:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    (src / "streamgen" / "engine").mkdir(exist_ok=True)  # listed in pyproject, may be absent here
    make_model(src / "models" / "tiny")
    (src / "models" / "tiny" / "README.md").write_text("card")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "wheel"), str(src)],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for file in ["config.json", "model.safetensors", "README.md"]:
        assert f"streamgen/models/tiny/{file}" in names
    assert "streamgen/models/__init__.py" in names
    assert not any(n.startswith("models/") for n in names)

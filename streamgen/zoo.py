"""The model zoo: find checkpoint folders by name or path, and load them.

A name is looked up, in order, in the folders listed in ``$STREAMGEN_MODELS``
(``os.pathsep``-separated) and in the zoo packaged with streamgen (``streamgen.models``, the
repository's top-level ``models/`` folder). A model is any sub-folder holding ``config.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn

from streamgen.checkpoint import CONFIG, ModelInfo, load_checkpoint

ENV_VAR = "STREAMGEN_MODELS"


class ModelNotFoundError(LookupError):
    """No model of that name or path; the message lists the models that exist."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    source: str  # "$STREAMGEN_MODELS" or "packaged"


def packaged_zoo() -> Path | None:
    """The folder of the packaged zoo, if streamgen was installed with it."""
    try:
        root = resources.files("streamgen.models")
    except ModuleNotFoundError:
        return None
    path = Path(str(root))
    return path if path.is_dir() else None


def zoo_dirs() -> list[tuple[Path, str]]:
    """Folders searched for models, in priority order, with their source labels."""
    dirs = [(Path(p).expanduser(), f"${ENV_VAR}") for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p]
    packaged = packaged_zoo()
    if packaged is not None:
        dirs.append((packaged, "packaged"))
    return dirs


def list_models() -> list[ModelEntry]:
    """Every model in the zoo folders; a name found twice resolves to the first folder's."""
    seen: dict[str, ModelEntry] = {}
    for root, source in zoo_dirs():
        if not root.is_dir():
            continue
        for child in sorted(root.iterdir()):
            if (child / CONFIG).is_file() and child.name not in seen:
                seen[child.name] = ModelEntry(child.name, child, source)
    return list(seen.values())


def resolve_model(name_or_path: str | os.PathLike[str]) -> Path:
    """The checkpoint folder for an explicit path or a zoo name."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and (path / CONFIG).is_file():
        return path
    if path.is_file() and path.name == CONFIG:
        return path.parent
    for entry in list_models():
        if entry.name == str(name_or_path):
            return entry.path
    names = ", ".join(entry.name for entry in list_models()) or "none installed"
    looks_like_path = os.sep in str(name_or_path) or path.exists()
    what = "no checkpoint folder (with config.json) at" if looks_like_path else "no model named"
    raise ModelNotFoundError(
        f"{what} {str(name_or_path)!r}; available models: {names} "
        f"(add folders to ${ENV_VAR} or pass a checkpoint directory)"
    )


def load_model(name_or_path: str | os.PathLike[str]) -> tuple[nn.Module, ModelInfo]:
    """``(model, info)`` for a zoo name or checkpoint path (sha256 checked)."""
    return load_checkpoint(resolve_model(name_or_path))

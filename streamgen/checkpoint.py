"""Checkpoints as folders of safetensors + JSON (no pickle anywhere).

A checkpoint directory holds

- ``model.safetensors``: the network's ``state_dict`` (weights only); weights beyond
  ``SHARD_BYTES`` go on into ``model.1.safetensors``, ``model.2...`` (a float32 Seq-U-Net of
  the default's shape is 12.6 MB at C=64, 27.9 MB at C=96);
- ``config.json``: format, version, network kind and config, sample rate, parameter count,
  receptive field, the sha256 of ``model.safetensors`` (and of each further weights file, in
  ``weights_shards``) and the weights' storage dtype when not float32
  (``WEIGHT_DTYPES``: a zoo entry may ship float16 weights to stay small; they load in the
  dtype asked for, float32 by default), and a free ``training`` dict;
- optionally ``optimizer.safetensors`` + ``optimizer.json``: the optimizer's tensors and the
  rest of its state dict, for exact resumption; tensors beyond ``SHARD_BYTES`` go on into
  ``optimizer.1.safetensors``, ``optimizer.2...``, so that no file exceeds 16 MB (for transfers);
- optionally ``extra.safetensors``: named tensors a trainer needs to resume (RNG states).

``config.json`` is read into a ``ModelInfo`` record (``read_info``; ``ModelInfo.to_json`` writes
it). ``load_checkpoint`` verifies the hash and that the weights' names and shapes match the
config before building the model; every problem is one ``CheckpointError`` line with a fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from streamgen.sampling import STARTS, SamplingConfig
from streamgen.nn import NETWORKS, NetworkConfig, StreamableNetwork, build_network

FORMAT = "streamgen-checkpoint"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_META = "optimizer.json"
EXTRA_TENSORS = "extra.safetensors"
SHARD_BYTES = 16_000_000  # largest weights or optimizer file, bar a single larger tensor
#: How ``model.safetensors`` may store a network's floating-point weights
#: (``config.json``'s ``weights_dtype``, float32 when absent).
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16, "float64": torch.float64}


def _optimizer_file(index: int) -> str:
    return OPTIMIZER_TENSORS if index == 0 else f"optimizer.{index}.safetensors"


def _weights_file(index: int) -> str:
    return WEIGHTS if index == 0 else f"model.{index}.safetensors"


#: The files ``save_checkpoint`` writes beside the config: replaced, never kept, on overwrite.
_OURS = re.compile(r"(model|optimizer)(\.\d+)?\.safetensors|optimizer\.json|extra\.safetensors")


def _shards(tensors: Mapping[str, torch.Tensor], limit: int) -> list[dict[str, torch.Tensor]]:
    """Consecutive groups of ``tensors`` of at most ``limit`` bytes each (header room kept)."""
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size() + 256
        if shards[-1] and size + nbytes > limit - 4096:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message names the problem and the fix."""


def merge_sampling(recommended: SamplingConfig, overrides: Mapping[str, Any],
                   classes: int | None = None) -> SamplingConfig:
    """``recommended`` with each override that is not ``None`` in its place (the user's value
    wins; an option left unset keeps the model's).

    Raises a one-line ``ValueError`` naming the problem: an unknown or invalid value, a
    ``top_k`` beyond the model's ``classes``, or ``greedy`` given together with a
    temperature, top-k or top-p (greedy decoding ignores them).
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    known = [f.name for f in fields(SamplingConfig)]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown sampling options {unknown}; known: {known}")
    if given.get("greedy") and len(given) > 1:
        raise ValueError(f"greedy sampling ignores {sorted(set(given) - {'greedy'})}; "
                         "give greedy or temperature/top-k/top-p, not both")
    sampling = replace(recommended, **given)
    if classes is not None and sampling.top_k > classes:
        raise ValueError(f"top_k {sampling.top_k} exceeds the model's {classes} classes; "
                         f"choose at most {classes} (0: off)")
    return sampling


@dataclass(frozen=True)
class ModelInfo:
    """What a checkpoint's ``config.json`` says about its model (read without the weights)."""

    kind: str  # a key of ``streamgen.nn.NETWORKS``
    config: NetworkConfig  # the network's own dataclass config
    sample_rate: int
    sampling: SamplingConfig  # the model's recommended sampling (plain if none is recorded)
    training: dict[str, Any]  # free record of the run that produced it
    sha256: str  # of ``model.safetensors``
    params: int
    receptive_field: int
    folder: Path
    # the history its streams start from (``STARTS``): a recommendation, like ``sampling``
    # (``streamgen publish card --start``; a run trained with start windows still records
    # "zeros": under nucleus sampling a silent history can stay silent, see the zoo's cards)
    start: str = "zeros"
    weights_dtype: str = "float32"  # how ``model.safetensors`` stores them (``WEIGHT_DTYPES``)
    # the further weights files beyond ``model.safetensors``, each with its sha256
    weight_shards: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"unknown start {self.start!r}; choose one of {STARTS}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise ValueError(f"unknown weights dtype {self.weights_dtype!r}; choose one of "
                             f"{sorted(WEIGHT_DTYPES)}")

    @classmethod
    def from_model(cls, model: StreamableNetwork, folder: Path, sha256: str, *, sample_rate: int,
                   training: Mapping[str, Any] | None = None,
                   weight_shards: Mapping[str, str] | None = None) -> ModelInfo:
        """The record of a freshly saved network (plain sampling recommended), its weights
        stored in their own dtype."""
        return cls(model.kind, model.config, sample_rate, SamplingConfig(), dict(training or {}), sha256,
                   model.num_parameters(), model.receptive_field, Path(folder),
                   weights_dtype=dtype_name(model.state_dict()),
                   weight_shards=dict(weight_shards or {}))

    @classmethod
    def from_json(cls, data: Mapping[str, Any], folder: Path) -> ModelInfo:
        """Parse a ``config.json`` dict; raises ``CheckpointError`` (one line) on any problem."""
        where = Path(folder) / CONFIG
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not a {FORMAT} config; point at a folder "
                                  "saved by streamgen.checkpoint.save_checkpoint")
        if data.get("version") != VERSION:
            raise CheckpointError(f"{where}: checkpoint version {data.get('version')!r} "
                                  f"is not supported (this streamgen reads {VERSION}); upgrade streamgen")
        missing = [k for k in REQUIRED if k not in data]
        if missing:
            raise CheckpointError(f"{where}: missing fields {missing}; re-save the checkpoint")
        kind = data["kind"]
        if kind not in NETWORKS:
            raise CheckpointError(f"{where}: unknown network kind {kind!r}; known kinds are "
                                  f"{sorted(NETWORKS)} (a newer streamgen may be needed)")
        try:
            config = NETWORKS[kind].config_class.from_dict(data["config"])
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid {kind} config ({exc}); "
                                  "fix the config or re-save the checkpoint") from exc
        classes = config.classes  # type: ignore[attr-defined]
        try:
            sampling = merge_sampling(SamplingConfig(), data.get("sampling") or {}, classes)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: invalid recommended sampling ({exc}); "
                                  "fix its \"sampling\" entry") from exc
        rate = data["sample_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int) or rate < 0:
            raise CheckpointError(f"{where}: sample_rate must be a whole number of Hz (0: not "
                                  f"audio, e.g. a model of notes), not {rate!r}; fix it (the "
                                  "rate the model was trained at)")
        if data.get("start", "zeros") not in STARTS:
            raise CheckpointError(f"{where}: unknown start {data['start']!r}; use one of {STARTS} "
                                  "or leave \"start\" out")
        if data.get("weights_dtype", "float32") not in WEIGHT_DTYPES:
            raise CheckpointError(f"{where}: unknown weights dtype {data['weights_dtype']!r}; use "
                                  f"one of {sorted(WEIGHT_DTYPES)} or leave \"weights_dtype\" out")
        shards = data.get("weights_shards", {})
        if not isinstance(shards, dict) or not all(
                isinstance(v, str) and re.fullmatch(r"model\.\d+\.safetensors", k)
                for k, v in shards.items()):
            raise CheckpointError(f"{where}: \"weights_shards\" must map model.N.safetensors "
                                  "files to their sha256; re-save the checkpoint")
        try:
            return cls(kind, config, int(data["sample_rate"]), sampling, dict(data.get("training") or {}),
                       str(data["weights_sha256"]), int(data["params"]), int(data["receptive_field"]),
                       Path(folder), data.get("start", "zeros"),
                       data.get("weights_dtype", "float32"), dict(shards))
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{where}: a field has the wrong type ({exc}); re-save the checkpoint") from exc

    def to_json(self) -> dict[str, Any]:
        """The ``config.json`` dict (``sampling`` only when it differs from plain sampling)."""
        data = {"format": FORMAT, "version": VERSION, "kind": self.kind, "config": self.config.to_dict(),
                "sample_rate": self.sample_rate, "params": self.params,
                "receptive_field": self.receptive_field, "weights_sha256": self.sha256,
                "training": dict(self.training)}
        if self.sampling.changes():
            data["sampling"] = self.sampling.changes()
        if self.start != "zeros":
            data["start"] = self.start
        if self.weights_dtype != "float32":
            data["weights_dtype"] = self.weights_dtype
        if self.weight_shards:
            data["weights_shards"] = dict(self.weight_shards)
        return data

    def sampling_with(self, overrides: Mapping[str, Any]) -> SamplingConfig:
        """The recommended sampling merged with a user's ``overrides`` (see ``merge_sampling``)."""
        return merge_sampling(self.sampling, overrides, self.config.classes)  # type: ignore[attr-defined]


REQUIRED = ("kind", "config", "sample_rate", "params", "receptive_field", "weights_sha256")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _tensors_for_file(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}


def dtype_name(tensors: Mapping[str, torch.Tensor]) -> str:
    """The ``WEIGHT_DTYPES`` name of the floating-point ``tensors`` (float32 if none; a mix
    is named by its first), e.g. of a state dict."""
    dtype = next((t.dtype for t in tensors.values() if t.is_floating_point()), torch.float32)
    names = [name for name, d in WEIGHT_DTYPES.items() if d == dtype]
    if not names:
        raise ValueError(f"weights of dtype {dtype} cannot be stored; use one of "
                         f"{sorted(WEIGHT_DTYPES)}")
    return names[0]


def write_weights(tensors: Mapping[str, torch.Tensor], path: Path,
                  dtype: str | None = None) -> str:
    """Write a state dict to ``path`` as safetensors, its floating-point tensors cast to
    ``dtype`` (a ``WEIGHT_DTYPES`` name; None: as they are); returns the file's sha256."""
    cast = WEIGHT_DTYPES[dtype] if dtype else None
    save_file({k: v.to(cast) if cast is not None and v.is_floating_point() else v
               for k, v in _tensors_for_file(tensors).items()}, str(path))
    return sha256_file(path)


# -- optimizer state dicts <-> (tensors, JSON) ------------------------------------------
def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors of ``optimizer.state_dict()`` keyed ``state.<param>.<name>``; the rest as JSON."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value
            else:
                plain.setdefault(str(param_id), {})[name] = value
    meta = {"param_groups": state["param_groups"], "plain_state": plain}
    return tensors, meta


def _join_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, param_id, name = key.split(".", 2)
        state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in meta["plain_state"].items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def _make_readable(directory: Path) -> None:
    """Give the folder and its files the usual umask permissions (mkdtemp makes them private)."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for item in directory.iterdir():
        if item.is_file():
            item.chmod(0o666 & ~umask)


# -- saving --------------------------------------------------------------------------------
def save_checkpoint(
    directory: str | Path,
    model: StreamableNetwork,
    *,
    sample_rate: int = 16000,
    training: Mapping[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (and optionally optimizer state and extra tensors) to ``directory``.

    The folder is assembled next to its destination and swapped in, so an interrupted save
    leaves the previous checkpoint intact. Returns the directory.
    """
    directory = Path(directory)
    recover_checkpoint(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        shas = [write_weights(shard, tmp / _weights_file(index))
                for index, shard in enumerate(_shards(model.state_dict(), SHARD_BYTES))]
        if optimizer is not None:
            tensors, meta = _split_optimizer_state(optimizer.state_dict())
            meta["files"] = {}
            for index, shard in enumerate(_shards(tensors, SHARD_BYTES)):
                save_file(_tensors_for_file(shard), str(tmp / _optimizer_file(index)))
                meta["files"][_optimizer_file(index)] = sha256_file(tmp / _optimizer_file(index))
            (tmp / OPTIMIZER_META).write_text(json.dumps(meta, indent=1) + "\n")
        if extra:
            save_file(_tensors_for_file(extra), str(tmp / EXTRA_TENSORS))
        info = ModelInfo.from_model(model, directory, shas[0], sample_rate=sample_rate,
                                    training=training,
                                    weight_shards={_weights_file(i): sha
                                                   for i, sha in enumerate(shas) if i})
        (tmp / CONFIG).write_text(json.dumps(info.to_json(), indent=2) + "\n")
        _make_readable(tmp)
        # Keep files that are not ours (a model card, samples) when overwriting.
        if directory.is_dir():
            for item in directory.iterdir():
                if item.name != CONFIG and not _OURS.fullmatch(item.name):
                    os.replace(item, tmp / item.name)
            old = _previous(directory)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


# -- loading -------------------------------------------------------------------------------
def _previous(directory: Path) -> Path:
    """Where ``save_checkpoint`` moves the checkpoint it replaces, for an instant."""
    return directory.with_name(f".{directory.name}.old")


def recover_checkpoint(directory: str | Path) -> None:
    """Put back the previous checkpoint if a save was cut short (a kill, a power cut) between
    moving it aside and moving the new one in, which leaves ``directory`` missing."""
    directory = Path(directory)
    previous = _previous(directory)
    if not directory.exists() and (previous / CONFIG).is_file():
        try:
            os.replace(previous, directory)
        except OSError:  # a folder this process may not write: load what is there as it is
            pass


def _checkpoint_dir(path: str | Path) -> Path:
    path = Path(path)
    if path.is_file() and path.name in (CONFIG, WEIGHTS):
        path = path.parent
    recover_checkpoint(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint directory; pass a folder holding "
                              f"{CONFIG} and {WEIGHTS}")
    for name in (CONFIG, WEIGHTS):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: {name} is missing; the checkpoint is incomplete, "
                                  "copy the whole folder again or re-save it")
    return path


def read_info(path: str | Path) -> ModelInfo:
    """Read and check ``config.json`` of a checkpoint (no weights loaded)."""
    directory = _checkpoint_dir(path)
    try:
        data = json.loads((directory / CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{directory / CONFIG}: not valid JSON ({exc}); restore the "
                              "file from the original checkpoint") from exc
    return ModelInfo.from_json(data, directory)


def _load_tensors(path: Path, expected_sha: str | None) -> dict[str, torch.Tensor]:
    if expected_sha is not None:
        actual = sha256_file(path)
        if actual != expected_sha:
            raise CheckpointError(
                f"{path}: sha256 {actual[:12]}... does not match the recorded "
                f"{expected_sha[:12]}...; the file is corrupt or was changed, copy it again"
            )
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable safetensors file ({exc}); the file is "
                              "corrupt or truncated, copy it again") from exc


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> tuple[StreamableNetwork, ModelInfo]:
    """Load a checkpoint folder (or its ``config.json``) as ``(model in eval mode, info)``,
    the model's floating-point weights in ``dtype`` whatever dtype stores them."""
    directory = _checkpoint_dir(path)
    info = read_info(directory)
    weights = _load_tensors(directory / WEIGHTS, info.sha256)
    for name, sha in info.weight_shards.items():
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory}: {name} is missing; the checkpoint is incomplete, "
                                  "copy the whole folder again or re-save it")
        weights.update(_load_tensors(directory / name, sha))
    stored = dtype_name(weights)
    if stored != info.weights_dtype:
        raise CheckpointError(f"{directory}: {WEIGHTS} holds {stored} weights but {CONFIG} says "
                              f"{info.weights_dtype}; the two come from different saves, re-save "
                              "them together")
    model = build_network(info.kind, info.config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
                  if unexpected else f"{wrong[0]} has shape {found[wrong[0]]}, config implies "
                  f"{expected[wrong[0]]}")
        raise CheckpointError(f"{directory}: weights do not match the config ({detail}); "
                              f"{CONFIG} and {WEIGHTS} come from different models, re-save them together")
    model.load_state_dict(weights, strict=True)  # cast to the new model's dtype
    model.to(device=device, dtype=dtype).eval()
    return model, info


def load_optimizer_state(path: str | Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore ``optimizer`` from a checkpoint saved with ``optimizer=``."""
    directory = _checkpoint_dir(path)
    if not (directory / OPTIMIZER_META).is_file() or not (directory / OPTIMIZER_TENSORS).is_file():
        raise CheckpointError(f"{directory}: no optimizer state to resume from; start a fresh "
                              "run or resume from a training checkpoint")
    try:
        meta = json.loads((directory / OPTIMIZER_META).read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{directory / OPTIMIZER_META}: not valid JSON ({exc}); "
                              "restore it or start a fresh run") from exc
    files = meta.get("files") or {OPTIMIZER_TENSORS: meta.get("sha256")}  # one file before shards
    tensors = {}
    for name, sha in files.items():
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name}: missing; copy the whole checkpoint folder again")
        tensors.update(_load_tensors(directory / name, sha))
    try:
        optimizer.load_state_dict(_join_optimizer_state(tensors, meta))
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{directory}: optimizer state does not fit this model ({exc}); "
                              "resume with the same model config or start a fresh run") from exc


def load_extra(path: str | Path) -> dict[str, torch.Tensor]:
    """The extra tensors of a checkpoint (empty if none were saved)."""
    directory = _checkpoint_dir(path)
    file = directory / EXTRA_TENSORS
    return _load_tensors(file, None) if file.is_file() else {}

"""Polyphonic music (piano rolls): the data sets, the frame NLL and a training loop.

The four data sets of Boulanger-Lewandowski et al. (2012) as MATLAB files (``traindata``,
``validdata``, ``testdata``: cells of ``(time, 88)`` 0/1 piano rolls), read at run time from a
folder the user names (never copied into the repository). The metric of the literature: the
negative log-likelihood of the next frame under independent Bernoulli outputs per key,
summed over keys and averaged over all predicted frames of a split. As in the reference code
(Bai et al.'s TCN and the Seq-U-Net authors'), a piece of ``T`` frames gives ``T - 1``
predictions: frame ``t + 1`` from frames ``0..t``, zero frames before the start.

Training follows the reference: one piece per step in shuffled order, Adam, the learning
rate halved after an epoch whose validation NLL is above the highest of the previous ten
(from epoch 11 on), the weights of the best validation epoch kept. Added here: early
stopping after ``patience`` epochs without improvement and an optional time budget; each
epoch is logged and the best weights are saved at once, so an interrupted run still reports
what it reached.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.nn import functional as F

from streamgen.checkpoint import load_checkpoint, save_checkpoint
from streamgen.nn import StreamableNetwork, build_network

DATA_ENV = "STREAMGEN_POLY_MUSIC"
DATA_SUBDIR = Path("shared/data/poly_music")
TASK_FILES = {
    "jsb": "JSB_Chorales.mat",
    "nottingham": "Nottingham.mat",
    "muse": "MuseData.mat",
    "piano": "Piano_midi.mat",
}
SPLITS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
KEYS = 88
LOG_FILE = "log.jsonl"
RESULT_FILE = "result.json"
BEST_DIR = "best"


class PolyMusicError(ValueError):
    """Unusable data folder or file; the message is one line naming the fix."""


# -- data ------------------------------------------------------------------------------------
def default_data_dir() -> Path | None:
    """``$STREAMGEN_POLY_MUSIC``, else the first ``shared/data/poly_music`` above the repository."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    for parent in Path(__file__).resolve().parents:
        if (parent / DATA_SUBDIR).is_dir():
            return parent / DATA_SUBDIR
    return None


def load_poly_music(task: str, data_dir: str | Path | None = None) -> dict[str, list[torch.Tensor]]:
    """Pieces of ``task`` per split (``train``, ``valid``, ``test``), each a float ``(88, T)`` roll."""
    import scipy.io

    if task not in TASK_FILES:
        raise PolyMusicError(f"unknown task {task!r}; choose one of {sorted(TASK_FILES)}")
    folder = Path(data_dir) if data_dir is not None else default_data_dir()
    if folder is None or not folder.is_dir():
        raise PolyMusicError(f"poly-music data folder {folder or DATA_SUBDIR} not found; pass "
                             f"the folder holding {TASK_FILES[task]} or set {DATA_ENV}")
    path = folder / TASK_FILES[task]
    if not path.is_file():
        raise PolyMusicError(f"{path}: no such file; the data folder must hold "
                             f"{', '.join(TASK_FILES.values())} (pass another folder or set {DATA_ENV})")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several unrelated types for a bad file
        raise PolyMusicError(f"{path}: not a readable MATLAB file ({exc}); copy it again") from exc
    splits = {}
    for split, key in SPLITS.items():
        if key not in mat:
            raise PolyMusicError(f"{path}: no {key!r} array; expected the Boulanger-Lewandowski "
                                 f"format with {', '.join(SPLITS.values())}")
        pieces = []
        for i, roll in enumerate(np.asarray(mat[key]).ravel()):
            roll = np.asarray(roll)
            if roll.ndim != 2 or roll.shape[1] != KEYS or roll.shape[0] < 2:
                raise PolyMusicError(f"{path}: {key} piece {i} has shape {roll.shape}, expected "
                                     f"(time >= 2, {KEYS}); the file is not a piano-roll set")
            pieces.append(torch.from_numpy(roll.astype(np.float32).T.copy()))
        splits[split] = pieces
    return splits


# -- metric ----------------------------------------------------------------------------------
def piece_nll(model: StreamableNetwork, roll: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed NLL (nats) of frames ``1..T-1`` of one ``(88, T)`` roll, and their count."""
    logits = model.forward_from_start(roll[None, :, :-1])[0]
    target = roll[:, 1:]
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum"), target.shape[-1]


@torch.no_grad()
def evaluate(model: StreamableNetwork, pieces: Sequence[torch.Tensor], device: torch.device | str = "cpu") -> float:
    """Frame NLL of a split: summed over keys, averaged over all predicted frames."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for roll in pieces:
        nll, n = piece_nll(model, roll.to(device))
        total, count = total + float(nll), count + n
    model.train(was_training)
    return total / count


# -- training --------------------------------------------------------------------------------
@dataclass
class SymbolicTrainConfig:
    """One training run on one task; ``out_dir`` receives the log, the best weights and the result."""

    task: str
    kind: str
    model: dict[str, Any]
    out_dir: str
    data: str | None = None
    lr: float = 1e-3
    grad_clip: float | None = None
    epochs: int = 100
    patience: int = 20
    plateau: int = 10
    seed: int = 1111
    threads: int | None = None
    time_budget_s: float | None = None
    max_pieces: int | None = None  # first N pieces of every split (tests, quick checks)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Progress:
    lr: float
    best_val: float = math.inf
    best_epoch: int = 0
    val_history: list[float] = field(default_factory=list)
    train_seconds: float = 0.0

    def update_lr(self, val: float, plateau: int) -> bool:
        """The reference rule: halve when ``val`` is above the highest of the last ``plateau``."""
        halve = len(self.val_history) >= plateau and val > max(self.val_history[-plateau:])
        self.val_history.append(val)
        if halve:
            self.lr /= 2
        return halve


def train_symbolic(config: SymbolicTrainConfig) -> dict[str, Any]:
    """Train per ``config``, test the best epoch's weights; returns (and writes) the result."""
    if config.threads:
        torch.set_num_threads(config.threads)
    data = load_poly_music(config.task, config.data)
    if config.max_pieces:
        data = {k: v[: config.max_pieces] for k, v in data.items()}
    torch.manual_seed(config.seed)
    order_rng = np.random.default_rng(config.seed)
    model = build_network(config.kind, config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / LOG_FILE).write_text("")
    progress = _Progress(lr=config.lr)
    stopped = "epochs"
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for i in order_rng.permutation(len(data["train"])):
            optimizer.zero_grad(set_to_none=True)
            nll, n = piece_nll(model, data["train"][i])
            (nll / n).backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            total, count = total + nll.item(), count + n
        train_s = time.perf_counter() - start
        val = evaluate(model, data["valid"])
        epoch_s = time.perf_counter() - start
        progress.train_seconds += epoch_s
        improved = val < progress.best_val
        if improved:
            progress.best_val, progress.best_epoch = val, epoch
            save_checkpoint(out / BEST_DIR, model, sample_rate=0,
                            training={"epoch": epoch, "valid_nll": val, **config.to_dict()})
        halved = progress.update_lr(val, config.plateau)
        for group in optimizer.param_groups:
            group["lr"] = progress.lr
        record = {"epoch": epoch, "train_nll": total / count, "valid_nll": val, "lr": progress.lr,
                  "train_s": round(train_s, 2), "epoch_s": round(epoch_s, 2),
                  "elapsed_s": round(progress.train_seconds, 1), "best": improved, "lr_halved": halved}
        with open(out / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        if epoch - progress.best_epoch >= config.patience:
            stopped = "early_stop"
            break
        if config.time_budget_s and progress.train_seconds + epoch_s > config.time_budget_s:
            stopped = "time_budget"  # another epoch would overrun the budget
            break
    result = evaluate_best(out)
    result.update(stopped=stopped, train_seconds=round(progress.train_seconds, 1))
    (out / RESULT_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_best(out_dir: str | Path) -> dict[str, Any]:
    """Test NLL of the best weights in ``out_dir`` and what the log says of the run so far."""
    out = Path(out_dir)
    model, info = load_checkpoint(out / BEST_DIR)
    cfg = info.training
    data = load_poly_music(cfg["task"], cfg["data"])
    if cfg.get("max_pieces"):
        data = {k: v[: cfg["max_pieces"]] for k, v in data.items()}
    log = [json.loads(line) for line in (out / LOG_FILE).read_text().splitlines() if line]
    return {
        "task": cfg["task"], "kind": info.kind, "config": info.config.to_dict(), "params": info.params,
        "test_nll": evaluate(model, data["test"]), "valid_nll": cfg["valid_nll"],
        "best_epoch": cfg["epoch"], "epochs_run": len(log),
        "train_seconds": log[-1]["elapsed_s"] if log else 0.0,
        "epoch_seconds_mean": float(np.mean([r["epoch_s"] for r in log])) if log else 0.0,
        "lr": cfg["lr"], "seed": cfg["seed"], "threads": cfg["threads"],
    }

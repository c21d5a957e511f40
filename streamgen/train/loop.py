"""One training loop for all networks: next-sample cross-entropy on mu-law audio.

Adam, random windows whose output length suits the network (a multiple of the Seq-U-Net's
period), optional gradient clipping, autocast on CUDA, validation NLL in nats and bits per
sample, a tqdm bar, periodic checkpoints that resume exactly (weights, optimizer, step and
every RNG state, as safetensors + JSON), and data-parallel training under ``torchrun``
(gloo on CPU, nccl on CUDA).

Interrupts: while the loop runs, SIGINT (Ctrl-C) and SIGTERM only set a flag; the step under
way finishes, a checkpoint of the step reached is saved (a second signal cannot cut the save
short), and ``fit`` raises ``TrainingInterrupted``. Resuming (``resume=True``) continues the
stored run: every field but the step count and how this machine runs it (``RESUME_FREE``) must
equal the stored one (``ResumeConflict`` otherwise), and the data must be the same data (its
sha256, see ``streamgen.train.data``), wherever it lies now.

Under ``torchrun`` every rank draws the same global batch of window positions from a shared
generator and keeps rows ``rank::world``, so N processes with ``batch_size`` B train on the
same windows as one process with B, up to the order of floating-point sums.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from argparse import Namespace
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F
from tqdm.auto import tqdm

from streamgen.checkpoint import (
    CONFIG,
    EXTRA_TENSORS,
    CheckpointError,
    ModelInfo,
    load_checkpoint,
    load_extra,
    load_optimizer_state,
    read_info,
    recover_checkpoint,
    save_checkpoint,
)
from streamgen.devices import resolve_device
from streamgen.nn import StreamableNetwork, build_network
from streamgen.nn.layers import crop_front, one_hot_channels
from streamgen.signals import deferred_signals
from streamgen.train.data import EncodedAudio, open_training_data

LOG_FILE = "train_log.jsonl"
CLASSES = 256
# TrainConfig fields a resumed run may set anew: the total step count (to extend a run), where
# the data lies (its content is checked), and how this machine runs it.
RESUME_FREE = frozenset({"data", "out_dir", "steps", "resume", "device", "threads", "cache_dir", "progress",
                         "time_budget_s"})
# A run with a time budget takes BUDGET_PROBE_STEPS steps, the last BUDGET_PACE_STEPS of them
# timed, before it fits its step count; it aims at BUDGET_MARGIN of the budget.
BUDGET_PROBE_STEPS = 150
BUDGET_PACE_STEPS = 100
BUDGET_MARGIN = 0.97


class ResumeConflict(ValueError):
    """An option that differs from what the run being resumed stored."""

    def __init__(self, out_dir: str, name: str, given: Any, stored: Any) -> None:
        self.name, self.given, self.stored = name, given, stored
        super().__init__(f"{name}={given!r} conflicts with the run in {out_dir} ({name}={stored!r}); "
                         "leave it out to continue that run, or start a new one in another out_dir")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped by SIGINT/SIGTERM (``signum``) after saving a checkpoint of ``step`` in
    ``out_dir``."""

    def __init__(self, step: int, out_dir: Path, signum: int = signal.SIGINT) -> None:
        self.step, self.out_dir, self.signum = step, out_dir, signum
        super().__init__(f"interrupted at step {step}; checkpoint saved in {out_dir}")


@dataclass
class TrainConfig:
    """Everything a training run needs; ``out_dir`` becomes a loadable checkpoint folder."""

    data: str
    out_dir: str
    kind: str = "sequnet"
    model: dict[str, Any] = field(default_factory=dict)
    sample_rate: int = 16000
    output_length: int = 4096
    batch_size: int = 8
    steps: int = 10000
    lr: float = 5e-4
    lr_final: float | None = None  # cosine decay from ``lr`` at ``decay_from`` to this at ``steps``
    decay_from: int = 0
    grad_clip: float | None = None
    # share of training windows that start before a track, with silence-class history: the
    # start a stream gets from StreamingEngine(start="silence")
    start_windows: float = 0.0
    val_fraction: float = 0.1
    train_files: list[str] | None = None
    val_files: list[str] | None = None
    val_every: int = 1000
    val_windows: int = 32
    checkpoint_every: int = 1000
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    amp: bool = True
    device: str | None = None
    threads: int | None = None  # torch CPU threads; None keeps torch's default
    cache_dir: str | None = None
    progress: bool = True
    # seconds the whole run may take (validations and checkpoints included): after
    # BUDGET_PROBE_STEPS steps it measures its pace and fits ``steps``, scaling ``decay_from``
    # with it (so ``steps`` and ``decay_from`` give the schedule's shape); the fitted values
    # are what the checkpoint stores
    time_budget_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("output_length", "batch_size", "steps", "val_every", "val_windows",
                     "checkpoint_every", "log_every", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if self.decay_from < 0:
            raise ValueError(f"decay_from must be at least 0, got {self.decay_from}")
        for name, strict in (("lr", True), ("lr_final", False), ("grad_clip", True)):
            value = getattr(self, name)  # nan and inf fail too
            if value is not None and not (math.isfinite(value) and
                                          (value > 0 if strict else value >= 0)):
                raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} 0, "
                                 f"got {value}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be at least 0 and below 1, got "
                             f"{self.val_fraction}")
        if not 0.0 <= self.start_windows <= 1.0:
            raise ValueError(f"start_windows must be a share between 0 and 1, got {self.start_windows}")
        if self.time_budget_s is not None:
            if not (math.isfinite(self.time_budget_s) and self.time_budget_s > 0):
                raise ValueError(f"time_budget_s must be a finite number of seconds > 0, got "
                                 f"{self.time_budget_s}")
            if self.lr_final is not None and self.decay_from < BUDGET_PROBE_STEPS:
                raise ValueError(f"a time budget fits the step count after {BUDGET_PROBE_STEPS} steps at "
                                 f"the starting learning rate: set decay_from to at least {BUDGET_PROBE_STEPS}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def learning_rate(self, step: int) -> float:
        """Adam's learning rate for the step taken from ``step`` (0-based): constant, or a
        cosine from ``lr`` (until ``decay_from``) down to ``lr_final`` (at ``steps``)."""
        if self.lr_final is None or step < self.decay_from:
            return self.lr
        progress = min(1.0, (step - self.decay_from) / max(1, self.steps - self.decay_from))
        return self.lr_final + 0.5 * (self.lr - self.lr_final) * (1 + math.cos(math.pi * progress))

    @classmethod
    def from_options(cls, options: Namespace | Mapping[str, Any]) -> "TrainConfig":
        """Build from parsed CLI options: known fields that are not ``None``; others ignored.

        With ``resume`` and a run in ``out_dir``, the run's stored config is the base: options
        may only repeat it, except ``RESUME_FREE`` ones (``ResumeConflict`` otherwise).
        """
        values = vars(options) if isinstance(options, Namespace) else dict(options)
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k in names and v is not None}
        stored = stored_run(values["out_dir"]) if values.get("resume") and values.get("out_dir") else None
        if stored is not None:
            values = _repeat_of_a_fitted_run(stored.training, values)
            check_resume(values["out_dir"], stored, values)
            values = {**stored.training["train_config"], **values,
                      "model": stored.training["train_config"]["model"]}
        missing = [n for n in ("data", "out_dir") if values.get(n) is None]
        if missing:
            raise ValueError(f"training needs {' and '.join(missing)}")
        return cls(**{k: v for k, v in values.items() if k in names})


def fit_to_budget(config: TrainConfig, step: int, elapsed_s: float, seconds_per_step: float,
                  val_seconds: float) -> TrainConfig:
    """``config`` with ``steps`` (and ``decay_from`` at the same share) fitted so that a run
    that took ``step`` steps in ``elapsed_s`` ends within ``BUDGET_MARGIN`` of its time budget,
    at ``seconds_per_step`` plus ``val_seconds`` per validation (the last one included)."""
    assert config.time_budget_s is not None
    left = config.time_budget_s * BUDGET_MARGIN - elapsed_s - val_seconds
    per_step = seconds_per_step + val_seconds / config.val_every
    steps = step + max(0, int(left / per_step))
    decay_from = max(step, round(config.decay_from * steps / config.steps)) if config.decay_from else 0
    return dataclasses.replace(config, steps=steps, decay_from=decay_from, time_budget_s=None)


def _repeat_of_a_fitted_run(training: Mapping[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without the time budget, and without the step count asked for with it, when
    they repeat the command of a run (``training``: its stored record) that fitted its
    schedule to a budget already: that run goes on to its fitted step count (``steps`` of
    another value still extends it)."""
    fitted = training.get("time_budget")
    if fitted is None or values.get("time_budget_s") is None:
        return values
    values = {k: v for k, v in values.items() if k != "time_budget_s"}
    if values.get("steps") == fitted.get("steps_asked"):
        del values["steps"]
    return values


def stored_run(out_dir: str | Path) -> ModelInfo | None:
    """The checkpoint info of the run in ``out_dir``, or ``None`` when there is none yet."""
    recover_checkpoint(out_dir)
    return read_info(out_dir) if (Path(out_dir) / CONFIG).is_file() else None


def check_resume(out_dir: str | Path, info: ModelInfo, values: Mapping[str, Any]) -> None:
    """Raise ``ResumeConflict`` for the first of ``values`` (TrainConfig fields) that differs
    from the run stored in ``info``; network config fields are checked against the network's."""
    stored = info.training.get("train_config")
    network = info.config.to_dict()
    if stored is None:
        raise ValueError(f"{out_dir} holds a model but no training run to resume; start a new run "
                         "in another out_dir")
    for name, given in values.items():
        if name in RESUME_FREE:
            continue
        if name == "model":
            for key, value in given.items():
                if network.get(key) != value:
                    raise ResumeConflict(str(out_dir), f"model.{key}", value, network.get(key))
        elif stored.get(name) != given:
            raise ResumeConflict(str(out_dir), name, given, stored.get(name))


# -- distributed helpers ------------------------------------------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(device: str | None) -> tuple[Dist, torch.device, bool]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    info = Dist(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))
    dev = resolve_device(device, info.local_rank)  # cuda always with an index
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    started = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        started = True
    return info, dev, started


def _all_gather(tensor: torch.Tensor, d: Dist, device: torch.device) -> list[torch.Tensor]:
    if d.world == 1:
        return [tensor]
    t = tensor.to(device)
    out = [torch.empty_like(t) for _ in range(d.world)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def _rng_tensors(d: Dist, device: torch.device) -> dict[str, torch.Tensor]:
    """Every rank's torch RNG states (all ranks must call this)."""
    tensors = {f"torch_rng.{r}": s for r, s in enumerate(_all_gather(torch.get_rng_state(), d, device))}
    if device.type == "cuda":
        cuda_states = _all_gather(torch.cuda.get_rng_state(device), d, device)
        tensors.update({f"cuda_rng.{r}": s for r, s in enumerate(cuda_states)})
    return tensors


def _restore_rng(extra: Mapping[str, torch.Tensor], d: Dist, device: torch.device,
                 out: Path) -> None:
    """This rank's RNG states as the checkpoint saved them: what an exact resume needs (the
    dropout masks, the start-of-stream windows' draws)."""
    if f"torch_rng.{d.rank}" not in extra:
        raise CheckpointError(f"{out}: {EXTRA_TENSORS} (the random number generators' states an "
                              "exact resume needs) is missing or incomplete; bring it back from "
                              "a copy of the run, or start a fresh run")
    torch.set_rng_state(extra[f"torch_rng.{d.rank}"])
    if device.type == "cuda" and f"cuda_rng.{d.rank}" in extra:
        torch.cuda.set_rng_state(extra[f"cuda_rng.{d.rank}"], device)


# -- the loop -------------------------------------------------------------------------------
def nll_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy (nats) of next-sample predictions; ``inputs`` are class indices.

    A network may give more outputs than targets (``input_length`` is the fewest inputs for
    at least that many); outputs are right-aligned, so the newest ones are scored.
    """
    logits = crop_front(model(one_hot_channels(inputs, CLASSES)), targets.shape[-1])
    return F.cross_entropy(logits.float(), targets, reduction=reduction)


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``; to a GPU through pinned memory without waiting for it (the
    caching host allocator keeps the pinned block until the copy is done)."""
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(
    model: StreamableNetwork, data: EncodedAudio, positions: np.ndarray, input_length: int,
    output_length: int, batch_size: int, device: torch.device, d: Dist = Dist(),
) -> float:
    """Mean validation NLL in nats per sample over ``positions`` (sharded over ranks)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)
    mine = positions[d.rank :: d.world]
    for i in range(0, len(mine), batch_size):
        x, y = data.windows(mine[i : i + batch_size], input_length, output_length)
        loss = nll_loss(model, to_device(x, device), to_device(y, device), "sum")
        total += torch.stack([loss.double(), torch.tensor(float(y.size), dtype=torch.float64, device=device)])
    if d.world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return float(total[0] / total[1]) if total[1] > 0 else math.nan


def _prepare_model(config: TrainConfig, out: Path) -> tuple[StreamableNetwork, ModelInfo | None]:
    """The network to train: resumed from ``out`` or freshly built from ``config``."""
    recover_checkpoint(out)
    has_checkpoint = (out / CONFIG).is_file()
    if has_checkpoint and not config.resume:
        raise FileExistsError(f"{out} already holds a checkpoint; pass resume=True to continue "
                              "it or choose another out_dir")
    if has_checkpoint:
        model, info = load_checkpoint(out)
        check_resume(out, info, config.to_dict())  # the kind is one of the stored fields
        return model.train(), info
    return build_network(config.kind, config.model), None


def warn(message: str) -> None:
    """One warning line on stderr."""
    print(f"streamgen: warning: {message}", file=sys.stderr, flush=True)


def train(config: TrainConfig) -> Path:
    """Train per ``config``; returns ``out_dir``, a checkpoint folder ``load_checkpoint`` reads."""
    return fit(config)[1]


def fit(config: TrainConfig) -> tuple[StreamableNetwork, Path]:
    """Train per ``config``; returns this process's trained model and the checkpoint folder."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    d, device, started_group = _init_distributed(config.device)
    try:
        return _fit(config, d, device)
    finally:
        if started_group:
            dist.destroy_process_group()


def _fit(config: TrainConfig, d: Dist, device: torch.device) -> tuple[StreamableNetwork, Path]:
    if config.batch_size % d.world:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by {d.world} processes")
    out = Path(config.out_dir)
    torch.manual_seed(config.seed)  # identical initial weights on every rank
    model, resumed = _prepare_model(config, out)
    if d.rank:
        torch.manual_seed(config.seed + d.rank)  # distinct dropout masks per rank
    if model.num_classes != CLASSES:
        raise ValueError(f"mu-law audio has {CLASSES} classes, the model has {model.num_classes}")
    model.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes
    out_len = model.training_output_length(config.output_length)
    in_len = model.input_length(out_len)

    data = open_training_data(config.data, config.sample_rate, config.val_fraction, config.train_files,
                              config.val_files, config.cache_dir, warn=warn if d.main else lambda m: None)
    data_identity = data.identity()
    if resumed is not None:
        data.refuse_unless_trained_on(
            resumed.training, config.data, out, f"pass the run's data "
            f"({resumed.training['train_config']['data']}) or start a new run in another out_dir")
    if d.main and config.progress:
        print(data.summary(), file=sys.stderr, flush=True)
    train_data, val_data = data.train, data.validation
    val_positions = val_data.validation_positions(config.val_windows, in_len, out_len)

    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    use_amp = config.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    rng = np.random.default_rng(config.seed)
    step = 0
    if resumed is not None:
        load_optimizer_state(out, optimizer)
        state = resumed.training
        try:
            step = int(state["step"])
            if step < 0:
                raise ValueError(f"step {step}")
            rng.bit_generator.state = state["batch_rng"]
            if state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{out / CONFIG}: its training record is incomplete or was "
                                  f"edited ({type(exc).__name__}: {exc}); bring the file back "
                                  "from a copy of the run, or start a fresh run") from exc
        _restore_rng(load_extra(out), d, device, out)
        if step >= config.steps and d.main:
            warn(f"the run in {out} is at step {step} already (steps: {config.steps}); nothing "
                 "to do: give a larger step count (--steps) to go on")
        if d.main and (out / LOG_FILE).is_file():  # rows past the checkpoint are redone
            rows = (out / LOG_FILE).read_text().splitlines(keepends=True)
            (out / LOG_FILE).write_text("".join(r for r in rows if json.loads(r)["step"] <= step))
    elif d.main:  # a fresh run: a log left by one that stopped before its first checkpoint goes
        (out / LOG_FILE).unlink(missing_ok=True)

    net: torch.nn.Module = model
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    log_path = out / LOG_FILE

    def log(record: dict[str, Any]) -> None:
        if d.main:
            out.mkdir(parents=True, exist_ok=True)
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")

    def validate() -> dict[str, float]:
        nats = evaluate(model, val_data, val_positions, in_len, out_len, config.batch_size, device, d)
        return {"val_nll_nats": nats, "val_bits_per_sample": nats / math.log(2)}

    last: dict[str, Any] = {}

    def checkpoint() -> None:
        extra = _rng_tensors(d, device)
        if d.main:
            training = {
                "step": step, "batch_rng": rng.bit_generator.state,
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "world_size": d.world, "output_length": out_len, "input_length": in_len,
                "train_config": config.to_dict(), "data": data_identity, **last,
            }
            save_checkpoint(out, model, sample_rate=config.sample_rate, training=training,
                            optimizer=optimizer, extra=extra)
        if d.world > 1:
            dist.barrier()

    def stop_requested() -> int:
        """The number of a signal that came, on any rank (so that all stop at the same step);
        0 while none did."""
        if d.world == 1:
            return interrupted()
        flag = torch.tensor([float(interrupted())], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    saved = -1  # the step of the newest checkpoint
    started = time.perf_counter()
    # SIGINT and SIGTERM only set a flag: no step or checkpoint is cut short
    with deferred_signals(signal.SIGINT, signal.SIGTERM) as interrupted:
        val_seconds = 0.0
        if step == 0 and len(val_positions):
            last.update(validate())
            val_seconds = time.perf_counter() - started
            log({"step": 0, **last})
        bar = tqdm(total=config.steps, initial=step, disable=not (config.progress and d.main),
                   unit="step", dynamic_ncols=True)
        # Losses stay on the device until a log line needs them: no step waits for the GPU.
        window_losses: list[torch.Tensor] = []
        since = time.perf_counter()  # wall time of the steps since the last log line
        pace_from, pace_step = since, step
        signum = 0  # the signal that stops the run early, as every rank saw it
        try:
            while step < config.steps and not (signum := stop_requested()):
                positions = train_data.draw_positions(rng, config.batch_size, in_len + 1,
                                                      lead=in_len + 1 - out_len,
                                                      lead_fraction=config.start_windows)
                x, y = train_data.windows(positions[d.rank :: d.world], in_len, out_len)
                x, y = to_device(x, device), to_device(y, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = nll_loss(net, x, y)
                optimizer.zero_grad(set_to_none=True)
                for group in optimizer.param_groups:
                    group["lr"] = config.learning_rate(step)
                scaler.scale(loss).backward()
                if config.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                step += 1
                window_losses.append(loss.detach())
                bar.update(1)
                if config.time_budget_s is not None and step in (BUDGET_PROBE_STEPS - BUDGET_PACE_STEPS,
                                                                 BUDGET_PROBE_STEPS):
                    _synchronize(device)
                    now = time.perf_counter()
                    if step == BUDGET_PROBE_STEPS:
                        budget, asked = config.time_budget_s, config.steps
                        pace = (now - pace_from) / (step - pace_step)
                        config = fit_to_budget(config, step, now - started, pace, val_seconds)
                        if d.world > 1:  # every rank takes rank 0's schedule
                            fitted = torch.tensor([config.steps, config.decay_from], device=device)
                            dist.broadcast(fitted, 0)
                            config = dataclasses.replace(config, steps=int(fitted[0]), decay_from=int(fitted[1]))
                        last["time_budget"] = {"seconds": budget, "fitted_at_step": step,
                                               "seconds_per_step": pace, "steps_asked": asked}
                        bar.total = config.steps
                        if d.main:
                            bar.write(f"time budget {budget:g} s: {pace * 1e3:.1f} ms per step, "
                                      f"{config.steps} steps (decay from {config.decay_from})")
                        log({"step": step, "fitted_steps": config.steps, "decay_from": config.decay_from,
                             "seconds_per_step": pace})
                    pace_from, pace_step = now, step
                if step % config.log_every == 0 or step == config.steps:
                    mean = float(torch.stack(window_losses).float().mean())  # waits for the GPU
                    rate = len(window_losses) * config.batch_size * out_len / max(time.perf_counter() - since, 1e-9)
                    last.update(train_loss_nats=mean, samples_per_second=rate)
                    bar.set_postfix(loss=f"{mean:.3f}", sps=f"{rate:,.0f}")
                    log({"step": step, "train_loss_nats": mean, "samples_per_second": rate,
                         "lr": optimizer.param_groups[0]["lr"]})
                    window_losses.clear()
                    since = time.perf_counter()
                if len(val_positions) and (step % config.val_every == 0 or step == config.steps):
                    last.update(validate())
                    if d.main:
                        bar.write(f"step {step}: validation {last['val_nll_nats']:.4f} nats "
                                  f"({last['val_bits_per_sample']:.4f} bits) per sample")
                    log({"step": step, **{k: last[k] for k in ("val_nll_nats", "val_bits_per_sample")}})
                    since = time.perf_counter()
                if step % config.checkpoint_every == 0 or step == config.steps:
                    checkpoint()
                    saved = step
                    since = time.perf_counter()
            if step < config.steps:  # stopped by a signal
                if saved != step:
                    checkpoint()
                raise TrainingInterrupted(step, out, signum)
        finally:
            bar.close()
    return model, out


def train_from_options(options: Namespace | Mapping[str, Any]) -> Path:
    """Entry for a CLI: parsed options named like ``TrainConfig``'s fields -> ``train``."""
    return train(TrainConfig.from_options(options))

"""From a training run to a zoo entry: fair evaluation, an example clip, a model card.

    streamgen publish eval RUN --data DATA            # -> RUN/eval.json
    streamgen publish card RUN DEST --data DATA [--baseline NAME=OTHER_RUN ...]
    streamgen publish example DEST                    # the example again, after an engine change

``eval`` scores a checkpoint on validation targets that do not depend on its receptive field
(one block of 8192 samples in every ``every``, from sample 16384 of each held-out file), so two
networks are compared on exactly the same samples. ``card`` copies the weights (or stores them
in float16 or bfloat16: a zoo entry's ``model.safetensors`` takes at most ``ZOO_MAX_BYTES``)
and config, generates an example with its spectrogram and tonality figures, and writes
``README.md``; ``example`` generates a zoo entry's example again and replaces only that
section of its card.
"""

from __future__ import annotations

import json
import math
import platform
import re
import shlex
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from streamgen.audio.analysis import harmonicity
from streamgen.audio.io import write_audio
from streamgen.audio.plots import save_spectrogram
from streamgen.bench.timing import cpu_name
from streamgen.checkpoint import (CONFIG, WEIGHT_DTYPES, WEIGHTS, ModelInfo, load_checkpoint,
                                  write_weights)
from streamgen.engine import SamplingConfig
from streamgen.engine.cost import mean_macs
from streamgen.generation import AudioGenerator
from streamgen.nn import StreamableNetwork
from streamgen.train.data import TrainingData, open_training_data
from streamgen.train.loop import evaluate, warn

FIRST_TARGET = 16384
BLOCK = 8192
EVAL = "eval.json"
#: The largest ``model.safetensors`` a zoo entry ships (the repository keeps every version).
ZOO_MAX_BYTES = 16_000_000


def stored_bytes(model: StreamableNetwork, dtype: str) -> int:
    """The bytes of ``model``'s weights stored in ``dtype`` (a ``WEIGHT_DTYPES`` name; the
    file adds a small header)."""
    size = WEIGHT_DTYPES[dtype].itemsize
    return sum(t.numel() * (size if t.is_floating_point() else t.element_size())
               for t in model.state_dict().values())


def evaluate_run(run: Path, data: Path, every: int = 4, threads: int = 1, *,
                 first_target: int = FIRST_TARGET, block: int = BLOCK) -> dict[str, Any]:
    """Validation NLL of a checkpoint on the fixed, receptive-field-independent targets."""
    torch.set_num_threads(threads)
    model, info = load_checkpoint(run)
    val = run_data(run, info, data).validation
    in_len = model.input_length(block)
    positions = val.target_positions(first_target, in_len, block, every)
    if not len(positions):
        raise ValueError(f"no validation targets: the held-out files are shorter than {first_target + block} samples")
    start = time.time()
    nats = evaluate(model, val, positions, in_len, block, 4, torch.device("cpu"))
    return {"val_nats": nats, "val_bits_per_sample": nats * math.log2(math.e),
            "targets": int(len(positions) * block), "files": len(val.files),
            "first_target": first_target, "block": block, "every": every, "seconds": time.time() - start}


def run_data(run: Path, info: ModelInfo, data: Path) -> TrainingData:
    """``data`` split as the run in ``run`` split it (its stored share and file lists; the
    default split for a checkpoint without a training record); ``ValueError`` where it is not
    the data the run was trained on. Unreadable files are passed over with a warning, as in
    training."""
    trained = (info.training or {}).get("train_config")
    if trained is None:
        return open_training_data(data, info.sample_rate, warn=warn)
    opened = open_training_data(data, info.sample_rate, trained["val_fraction"],
                                trained.get("train_files"), trained.get("val_files"), warn=warn)
    opened.refuse_unless_trained_on(info.training, data, run,
                                    f"pass the run's data ({trained['data']})")
    return opened


def read_eval(run: Path) -> dict[str, Any]:
    """The scores ``evaluate_run`` stored in ``run/eval.json``."""
    path = run / EVAL
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; score the run first with "
                                f"`streamgen publish eval {run} --data DATA`")
    return json.loads(path.read_text())


def _training_summary(train: dict[str, Any], run: Path) -> dict[str, Any]:
    cfg = train.get("train_config", {})
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines() if line]
    rates = [r["samples_per_second"] for r in log if "samples_per_second" in r]
    keep = ("output_length", "batch_size", "lr", "lr_final", "decay_from", "grad_clip", "seed")
    return {"steps": train.get("step"), **{k: cfg.get(k) for k in keep},
            "target_samples_seen": (train.get("step") or 0) * cfg.get("batch_size", 0) * cfg.get("output_length", 0),
            "median_target_samples_per_s": sorted(rates)[len(rates) // 2] if rates else None,
            "threads": cfg.get("threads")}


# TrainConfig field -> `streamgen train` flag, for the command that repeats a run
TRAIN_FLAGS = (("kind", "--kind"), ("output_length", "--window"), ("batch_size", "--batch"), ("steps", "--steps"),
               ("lr", "--lr"), ("lr_final", "--lr-final"), ("decay_from", "--decay-from"),
               ("grad_clip", "--grad-clip"), ("start_windows", "--start-windows"),
               ("val_fraction", "--val-fraction"), ("seed", "--seed"), ("threads", "--threads"))


def train_command(train_config: dict[str, Any], data: str, out: str) -> str:
    """The ``streamgen train`` command line that repeats a run from its stored config (a
    time-budgeted run stores its fitted schedule, so the command needs no budget)."""
    parts = ["streamgen", "train", "--data", data, "--out", out]
    for field, flag in TRAIN_FLAGS:
        if train_config.get(field) is not None and not (field == "start_windows" and not train_config[field]):
            parts += [flag, str(train_config[field])]
    parts += ["--config", json.dumps(train_config["model"])]
    return shlex.join(parts)


def _comparison_row(label: str, model: StreamableNetwork, info: ModelInfo, bits: float) -> str:
    """One evaluated network as a row of the card's comparison table."""
    return (f"| {label} | {info.kind} {json.dumps(info.config.to_dict())} | {model.num_parameters():,} | "
            f"{model.receptive_field:,} | {mean_macs(model):,.0f} | {bits:.3f} |")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def _schedule(summary: dict[str, Any]) -> str:
    """The learning rate as the card states it: constant, or its cosine decay."""
    if summary.get("lr_final") is None:
        return f"learning rate {summary['lr']}"
    return (f"learning rate {summary['lr']}, decayed along a cosine to {summary['lr_final']} "
            f"from step {summary.get('decay_from') or 0} to the last")


def _data_seen(identity: dict[str, Any], train_files: int, rate: int, data_dir: str) -> tuple[str, str, str, float]:
    """For a run that saw a subset of the ``train_files``: the card's sentence on it, the command
    that packs it (else both empty); the folder the run's command trains on; the hours seen."""
    seen, hours = identity.get("train_files", train_files), identity.get("train_samples", 0) / rate / 3600
    if seen >= train_files:
        return "", "", data_dir, hours
    packed = f"{data_dir}-{seen}"
    return (f" This model saw the first {seen} training files ({hours:.2f} h), packed to fit one copy to "
            "the GPU machine.", f"streamgen train --pack-corpus {data_dir} {packed} --subset {seen}\n", packed, hours)


def write_card(run: Path, dest: Path, data: Path, baselines: dict[str, Path] | None = None, seconds: float = 8.0,
               seed: int = 0, sampling: SamplingConfig | None = None, hardware: str = "",
               start: str | None = None, weights_dtype: str | None = None,
               force: bool = False) -> Path:
    """Copy ``run`` into ``dest`` with an example clip, spectrogram and model card.

    ``baselines`` maps a display name to another evaluated run, compared in the card's table;
    ``sampling`` and ``start`` are what the card recommends (and the example uses);
    ``weights_dtype`` how ``dest`` stores the weights (a ``WEIGHT_DTYPES`` name; None: as the
    run does). Raises ``ValueError`` (one line, before writing anything) where they would take
    more than ``ZOO_MAX_BYTES``, where ``dest`` holds a model already (unless ``force``), or
    where the data or a baseline is not what it should be.
    """
    if (dest / CONFIG).is_file() and not force:
        raise ValueError(f"{dest} holds a model already; pass --force to replace it, or choose "
                         "another DEST")
    model, info = load_checkpoint(run)
    dtype = weights_dtype or info.weights_dtype
    if dtype not in WEIGHT_DTYPES:
        raise ValueError(f"unknown weights dtype {dtype!r}; choose one of {sorted(WEIGHT_DTYPES)}")
    size = stored_bytes(model, dtype)
    if size > ZOO_MAX_BYTES:
        fix = "publish a smaller model" if WEIGHT_DTYPES[dtype].itemsize <= 2 else \
            "store them in float16 (--weights-dtype float16) or publish a smaller model"
        raise ValueError(f"{run}: {model.num_parameters():,} weights take {size / 1e6:.1f} MB "
                         f"in {dtype}, over a zoo entry's {ZOO_MAX_BYTES / 1e6:g} MB; {fix}")
    rate = info.sample_rate
    ev = read_eval(run)
    sets = run_data(run, info, data)
    others = [(label, *load_checkpoint(other), read_eval(other)["val_bits_per_sample"])
              for label, other in (baselines or {}).items()]
    hours = [part.total_samples / rate / 3600 for part in (sets.train, sets.validation)]
    dest.mkdir(parents=True, exist_ok=True)
    if dtype == info.weights_dtype and not info.weight_shards:
        shutil.copy2(run / WEIGHTS, dest / WEIGHTS)
        sha = info.sha256
    else:  # converted, or a run's weights in several files joined into one
        sha = write_weights(model.state_dict(), dest / WEIGHTS, dtype)
    training = info.training
    summary = _training_summary(training, run)
    summary.update({"val_nats": ev["val_nats"], "val_bits_per_sample": ev["val_bits_per_sample"],
                    "val_targets": ev["targets"], "hardware": hardware or cpu_name(),
                    "data": training.get("data") or "Bach chorales (music21) rendered to piano, 16 kHz; see README"})
    sampling = sampling or SamplingConfig()  # what `streamgen generate` uses unless told otherwise
    shipped = replace(info, training=summary, sampling=sampling, folder=dest, start=start or info.start,
                      sha256=sha, weights_dtype=dtype, weight_shards={})
    (dest / CONFIG).write_text(json.dumps(shipped.to_json(), indent=2))

    model = load_checkpoint(dest)[0]  # as shipped: the example from the stored weights
    example = write_example(dest, model, shipped, seconds, seed)

    data_dir = f"data/{data.name}"
    seen_note, pack_line, train_data, seen_h = _data_seen(training.get("data", {}), len(sets.train.tracks), rate, data_dir)
    rows = [_comparison_row(f"{dest.name} (this model)", model, info, ev["val_bits_per_sample"])]
    rows += [_comparison_row(*other) for other in others]
    card = CARD.format(
        name=dest.name, kind=info.kind, config=json.dumps(info.config.to_dict()),
        params=model.num_parameters(), weights_mb=(dest / WEIGHTS).stat().st_size / 1e6,
        weights_dtype=dtype, scored="" if dtype == info.weights_dtype else
        f", scored with the run's {info.weights_dtype} weights before they were stored in {dtype}",
        rf=model.receptive_field, rf_s=model.receptive_field / rate,
        macs=mean_macs(model), bits=ev["val_bits_per_sample"], nats=ev["val_nats"], targets=ev["targets"],
        files=ev["files"], every=ev["every"], first=ev["first_target"], block=ev.get("block", BLOCK), rows="\n".join(rows),
        steps=summary["steps"], batch=summary["batch_size"], window=summary["output_length"],
        schedule=_schedule(summary), train_seed=summary["seed"], clip=summary["grad_clip"], seen=summary["target_samples_seen"],
        seen_h=summary["target_samples_seen"] / rate / 3600,
        epochs=summary["target_samples_seen"] / rate / 3600 / (seen_h or hours[0]), seen_note=seen_note,
        pack=pack_line, start=shipped.start,
        train_files=len(sets.train.tracks), train_h=hours[0], val_h=hours[1], rate_s=summary["median_target_samples_per_s"] or 0,
        wall=_duration(summary["target_samples_seen"] / (summary["median_target_samples_per_s"] or math.inf)),
        hardware=summary["hardware"], threads=f"{summary['threads']} thread(s), " if summary["threads"] else "",
        example=example, data_dir=data_dir,
        train=train_command(training.get("train_config", {}), train_data, f"runs/{dest.name}"),
    )
    (dest / "README.md").write_text(card)
    return dest


CARD = """# {name}

A `{kind}` model for 16 kHz mu-law piano audio, shipped with streamgen.

| | |
|---|---|
| architecture | `{kind}` {config} |
| parameters | {params:,} |
| weights | {weights_mb:.1f} MB of {weights_dtype} (`model.safetensors`; loaded as float32 unless asked otherwise) |
| receptive field | {rf:,} samples ({rf_s:.2f} s) |
| cost | {macs:,.0f} multiply-accumulates per generated sample (streaming engine) |
| validation NLL | **{bits:.3f} bits/sample** ({nats:.4f} nats) on {targets:,} held-out targets{scored} |

## Data

Bach chorales from music21's bundled corpus (unique BWV numbers), every part played by
General MIDI program 0 (Acoustic Grand Piano) with fluidsynth and the FluidR3 GM soundfont,
16 kHz mono, peak-normalised to -1 dBFS. Fixed split by chorale: sorted by BWV number, every
10th goes to validation ({train_files} train files, {train_h:.2f} h; {files} validation files,
{val_h:.2f} h).{seen_note} Rebuild it with `streamgen train --build-corpus data/bach16k` (no
internet needed).

## Training

Adam, {schedule}, gradient clipping {clip}, {steps} steps of {batch} windows of
{window} target samples ({seen:,} target samples: {seen_h:.2f} h of audio, {epochs:.2f} passes over the training
data), seed {train_seed}. Hardware: {hardware}; {threads}about {rate_s:,.0f}
target samples/s (about {wall} of training). To repeat it:

```bash
streamgen train --build-corpus {data_dir}
{pack}{train}
streamgen publish eval runs/{name} --data {data_dir}
```

## Evaluation

Validation NLL on the {files} held-out chorales, scored on the same target samples for every
model compared (one block of {block} samples in every {every}, from sample {first} of each file, so no
model is favoured by its receptive field):

| model | kind | parameters | receptive field | MACs/sample | val bits/sample |
|---|---|---:|---:|---:|---:|
{rows}

{example}"""

#: A card's example section: from its heading to the line naming Python and torch.
EXAMPLE = """## Example

`example.wav`: {seconds:g} s generated from scratch (start history: {start}) with seed {seed} and
`{sampling}` (the sampling and start `streamgen generate` uses for this model unless told otherwise), at {speed:.2f}x real time on this machine's CPU ({backend} backend, including start-up).
`example.png` is its spectrogram. Tonality check (`streamgen.audio.analysis.harmonicity`):
spectral flatness {flat:.4f} (white noise: 0.56), pitch salience {sal:.2f}, tonal: {tonal}.

Reproduce: `streamgen generate -o example.wav --model {name} --seconds {seconds:g} --seed {seed} --backend {backend}`
(a free-running stream on another backend may depart from it after a while, by float rounding).

Python {python}, torch {torch}.
"""
EXAMPLE_SECTION = re.compile(r"^## Example\n.*?^Python [^\n]*\n", re.DOTALL | re.MULTILINE)


def write_example(dest: Path, model: StreamableNetwork, info: ModelInfo, seconds: float,
                  seed: int) -> str:
    """Generate ``dest``'s example clip and spectrogram with the sampling and start ``info``
    recommends, on the CPU; returns the card's example section."""
    rate = info.sample_rate
    gen = AudioGenerator(model, sampling=info.sampling, seed=seed, device="cpu", start=info.start)
    start = time.perf_counter()
    audio = gen(int(seconds * rate))[0]
    speed = len(audio) / (time.perf_counter() - start) / rate
    write_audio(dest / "example.wav", audio, rate)
    save_spectrogram(audio, rate, dest / "example.png", title=f"{dest.name}: {seconds:g} s, seed {seed}")
    tone = harmonicity(audio, rate)
    return EXAMPLE.format(
        name=dest.name, seconds=seconds, seed=seed, start=info.start, sampling=info.sampling,
        speed=speed, backend=gen.engine.backend, flat=tone.flatness, sal=tone.salience,
        tonal="yes" if tone.is_tonal() else "no", python=platform.python_version(),
        torch=torch.__version__)


def refresh_example(dest: Path, seconds: float = 8.0, seed: int = 0) -> Path:
    """Generate a zoo entry's example again from its stored weights (after a change to the
    engine or sampler) and replace its card's example section, leaving the rest of the card
    as it is. Raises ``ValueError`` (one line, before writing anything) where the card has
    no example section."""
    card = dest / "README.md"
    text = card.read_text() if card.is_file() else ""
    if not EXAMPLE_SECTION.search(text):
        raise ValueError(f"{card}: no example section (from '## Example' to the 'Python ...' "
                         "line) to replace; write the card with `streamgen publish card`")
    model, info = load_checkpoint(dest)
    section = write_example(dest, model, info, seconds, seed)
    card.write_text(EXAMPLE_SECTION.sub(lambda _: section, text, count=1))
    return dest

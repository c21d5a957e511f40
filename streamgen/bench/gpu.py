"""The GPU benchmark: the issue's targets, torch, Triton and CUDA graphs side by side in one run.

Rows: batch 1 (latency: the default model with its recommended sampling, the paper-size
Seq-U-Net, the paper WaveNet) and large batches (aggregate throughput of the default, the
paper Seq-U-Net and the paper WaveNet: eager torch, the WaveNet also with
``capacity="period"`` rings, then the graphs executor, which ``auto`` picks there, in float32
and bfloat16). Every rate is a median over repeats after a warm-up call (which also compiles
the Triton kernel; the graphs rows first generate one graph period, recording every segment),
with the device synchronised around each timed call (``streamgen.bench.timing``).

``dry_run`` profiles run the same code on the CPU with tiny models, the Triton kernel going
through Triton's interpreter: a check that the benchmark runs, not a measurement.
"""

from __future__ import annotations

import gc
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from streamgen.bench.suite import PAPER_SEQUNET, PAPER_WAVENET, SAMPLE_RATE, generation_rate
from streamgen.bench.timing import machine_info
from streamgen.engine import SamplingConfig
from streamgen.engine.backends import KERNELS  # the latency regime's, timed side by side
from streamgen.engine.gpu.flat import MAX_BATCH
from streamgen.engine.gpu.graphs import SEGMENT
from streamgen.engine.program import graph_period
from streamgen.nn import build_network


#: The issue's targets on one H100, samples per second (aggregate for large batches).
TARGETS = {
    ("default", 1): 100_000,
    ("paper sequnet", 1): 48_000,
    ("paper sequnet", "large"): 10_000_000,
    ("default", "large"): 50_000_000,
}


@dataclass(frozen=True)
class GpuProfile:
    name: str
    steps_torch: int  # free-running steps per timed call, torch at batch 1 (at most)
    steps_triton: int  # ... a persistent kernel at batch 1
    steps_large: int  # ... any backend at the large batch
    large_batch: int
    repeats: int
    triton_batches: tuple[int, ...] = ()  # extra latency-regime batches of the default
    dry_run: bool = False
    #: Timed calls of about this long, the steps above being caps (None: always the caps): a
    #: slow row takes fewer steps, so the run's length stays bounded (``generation_rate``).
    seconds: float | None = None
    #: Larger batches of the Seq-U-Nets on graphs in bfloat16: at the large batch a step is a
    #: chain of small kernels, each too small to fill the GPU, so more streams per step add
    #: throughput. The paper WaveNet's rings (34 GiB in bfloat16 at 4,096 streams) do not fit
    #: beyond the large batch; the Seq-U-Nets' take 0.05 and 0.3 MB a stream, the noise 256 KB.
    scale_batches: tuple[int, ...] = ()


QUICK = GpuProfile("quick", steps_torch=128, steps_triton=2048, steps_large=32,
                   large_batch=4096, repeats=3, seconds=0.25)
FULL = GpuProfile("full", steps_torch=1024, steps_triton=16384, steps_large=256,
                  large_batch=4096, repeats=5, triton_batches=(8, 64), seconds=1.0,
                  scale_batches=(16384, 65536))
DRY_RUN = GpuProfile("dry-run", steps_torch=4, steps_triton=4, steps_large=3, large_batch=3,
                     repeats=1, triton_batches=(2,), dry_run=True, scale_batches=(5,))

#: Tiny stand-ins for the paper models in a dry run.
DRY_SEQUNET = ("sequnet", {"channels": 8, "levels": 3, "depth": 1, "kernel_size": 5})
DRY_WAVENET = ("wavenet", {"blocks": 1, "layers": 3, "residual_channels": 4,
                           "dilation_channels": 4, "skip_channels": 8})


def _rate(model: nn.Module, device: str, profile: GpuProfile, *, batch: int, backend: str,
          steps: int, sampling: SamplingConfig, capacity: str = "double",
          dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """One timed row; a backend that cannot run or memory that runs out is recorded, not
    raised. A graphs row times whole segments, every one recorded before timing."""
    row: dict[str, Any] = {"backend": backend, "batch": batch, "capacity": capacity,
                           "dtype": str(dtype).removeprefix("torch."),
                           "sampling": sampling.describe()}
    warmup = 0
    if backend == "graphs":
        steps = -(-steps // SEGMENT) * SEGMENT
        warmup = graph_period(model.period)
    try:
        row.update(generation_rate(model, batch=batch, device=device, backend=backend, n=steps,
                                   repeats=profile.repeats, sampling=sampling,
                                   capacity=capacity, dtype=dtype, warmup_steps=warmup,
                                   seconds=profile.seconds,
                                   multiple=SEGMENT if backend == "graphs" else 1))
    except torch.cuda.OutOfMemoryError:
        row["error"] = "out of memory"
    except ValueError as e:  # the backend cannot run this model here
        row["error"] = str(e)
    finally:
        # an engine's objects refer to each other: collect them now, so the next row does not
        # run beside this one's rings (the paper WaveNet's take 68-128 GiB at batch 4,096)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return row


def run_gpu_suite(profile: GpuProfile, *, device: str, default_model: tuple[str, nn.Module],
                  sampling: SamplingConfig,
                  log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every row of the GPU benchmark on ``device``; ``default_model`` is (name, network)."""
    name, default = default_model
    seq_kind, seq_cfg = DRY_SEQUNET if profile.dry_run else PAPER_SEQUNET
    wav_kind, wav_cfg = DRY_WAVENET if profile.dry_run else PAPER_WAVENET
    models = {"default": default.eval(), "paper sequnet": build_network(seq_kind, seq_cfg).eval(),
              "paper wavenet": build_network(wav_kind, wav_cfg).eval()}
    rows: list[dict[str, Any]] = []

    def add(model_name: str, regime: str, **kw: Any) -> None:
        model = models[model_name].to(device)
        row = {"model": model_name, "regime": regime,
               **_rate(model, device, profile, sampling=sampling, **kw)}
        rows.append(row)
        rate = f"{row['samples_per_s']:,.0f} samples/s" if "samples_per_s" in row else row["error"]
        log(f"  {model_name:14s} {row['backend']:10s} batch {row['batch']:5d} "
            f"{row['capacity']:7s} {row['dtype']:8s} {rate}")

    log("1. latency: batch 1 (and small batches for the persistent kernels)")
    for model_name in ("default", "paper sequnet"):
        add(model_name, "latency", batch=1, backend="torch", steps=profile.steps_torch)
        for kernel in KERNELS:
            add(model_name, "latency", batch=1, backend=kernel, steps=profile.steps_triton,
                capacity="period")
    for batch in profile.triton_batches:
        for kernel in KERNELS:
            add("default", "latency", batch=batch, backend=kernel,
                steps=max(1, profile.steps_triton // 4), capacity="period")
    add("paper wavenet", "latency", batch=1, backend="torch",
        steps=max(1, profile.steps_torch // 4))
    for kernel in ("numba-cuda", "numba-cuda-grid"):  # the kernels that run WaveNets too
        add("paper wavenet", "latency", batch=1, backend=kernel, steps=profile.steps_triton,
            capacity="period")
    # the paper's comparison at batch 1 on one executor for both: CUDA graphs of the steps
    for model_name in ("paper sequnet", "paper wavenet"):
        add(model_name, "latency", batch=1, backend="graphs", steps=profile.steps_torch,
            capacity="period")
    log(f"2. throughput: batch {profile.large_batch}")
    for model_name in ("default", "paper sequnet"):
        add(model_name, "throughput", batch=profile.large_batch, backend="torch",
            steps=profile.steps_large)
    for capacity in ("double", "period"):
        add("paper wavenet", "throughput", batch=profile.large_batch, backend="torch",
            steps=profile.steps_large, capacity=capacity)
    for dtype in (torch.float32, torch.bfloat16):
        for model_name in models:
            add(model_name, "throughput", batch=profile.large_batch, backend="graphs",
                steps=profile.steps_large, capacity="period", dtype=dtype)
    for batch in profile.scale_batches:
        for model_name in ("default", "paper sequnet"):
            add(model_name, "throughput", batch=batch, backend="graphs",
                steps=profile.steps_large, capacity="period", dtype=torch.bfloat16)
    return {"profile": profile.name, "machine": machine_info(device), "default_model": name,
            "triton_max_batch": MAX_BATCH, "rows": rows, "targets": _targets(rows)}


def _best(rows: list[dict[str, Any]], model: str, regime: str) -> dict[str, Any] | None:
    done = [r for r in rows if r["model"] == model and r["regime"] == regime
            and "samples_per_s" in r and (regime == "throughput" or r["batch"] == 1)]
    return max(done, key=lambda r: r["samples_per_s"], default=None)


def _same_executor_pairs(rows: list[dict[str, Any]], regime: str) -> list[tuple[float, str]]:
    """(paper Seq-U-Net / paper WaveNet samples per second, executor) for every backend, dtype
    and batch that ran both in ``regime`` (at batch 1 for latency)."""
    def rates(model: str) -> dict[str, float]:
        return {f"{r['backend']} ({r['dtype']}" + (f", batch {r['batch']:,})"
                                                    if regime == "throughput" else ")"):
                r["samples_per_s"] for r in rows
                if r["model"] == model and r["regime"] == regime and "samples_per_s" in r
                and (regime == "throughput" or r["batch"] == 1)}

    seq, wav = rates("paper sequnet"), rates("paper wavenet")
    return [(seq[k] / wav[k], k) for k in seq if k in wav]


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target beside the best measured rate, and the Seq-U-Net / WaveNet ratios."""
    out = []
    for (model, batch), target in TARGETS.items():
        regime = "latency" if batch == 1 else "throughput"
        best = _best(rows, model, regime)
        out.append({"what": f"{model}, batch {batch}", "target": target,
                    "measured": best and best["samples_per_s"],
                    "backend": best and f"{best['backend']} ({best['dtype']})",
                    "met": bool(best and best["samples_per_s"] >= target)})
    for regime in ("latency", "throughput"):  # equal optimisation: the same backend and dtype
        pairs = _same_executor_pairs(rows, regime)
        best = max(pairs, key=lambda p: p[0], default=None)
        out.append({"what": f"paper Seq-U-Net / WaveNet, {regime}", "target": 4.0,
                    "measured": best and best[0], "backend": best and best[1],
                    "met": bool(best and best[0] >= 4.0)})
    return out


def _num(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def gpu_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [f"# GPU benchmark ({results['profile']})", "",
             f"{m.get('gpu', m['device'])}, torch {m['torch']}; default model: "
             f"{results['default_model']}; medians after a warm-up call.", "",
             "| model | regime | backend | batch | rings | dtype | sampling | samples/s | per stream | x real time |",
             "|---|---|---|---:|---|---|---|---:|---:|---:|"]
    for r in results["rows"]:
        row = (f"| {r['model']} | {r['regime']} | {r['backend']} | {r['batch']} | "
               f"{r['capacity']} | {r['dtype']} | {r['sampling']} | ")
        if "error" in r:
            lines.append(f"{row}{r['error']} | | |")
            continue
        lines.append(f"{row}{_num(r['samples_per_s'])} | "
                     f"{_num(r['per_stream_samples_per_s'])} | "
                     f"{_num(r['per_stream_samples_per_s'] / SAMPLE_RATE, 2)} |")
    lines += ["", "| target | goal | measured | backend | met |", "|---|---:|---:|---|---|"]
    for t in results["targets"]:
        digits = 2 if t["target"] < 100 else 0
        lines.append(f"| {t['what']} | {_num(t['target'], digits)} | {_num(t['measured'], digits)} "
                     f"| {t['backend'] or ''} | {'yes' if t['met'] else 'no'} |")
    lines += ["", "The Seq-U-Net / WaveNet ratios pair rows of one backend, dtype and batch "
              "(numba-cuda, numba-cuda-grid, graphs, torch; Triton runs no WaveNet): a ratio "
              "across backends would compare unequal optimisation."]
    seconds = [r["seconds_median"] for r in results["rows"] if "seconds_median" in r]
    if seconds:
        lines += ["", f"Median timed call: {statistics.median(seconds):.3f} s."]
    if "wall_seconds" in results:
        lines.append(f"Whole run: {results['wall_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"


def run_gpu_benchmark(*, quick: bool, device: str, model: str, out: Path,
                      dry_run: bool = False, log: Callable[[str], None] = print) -> list[Path]:
    """The GPU benchmark end to end (``benchmarks/gpu.py``, ``benchmarks/run.py --device cuda``
    and ``streamgen bench --device cuda`` all run this): the default model's architecture and
    recommended sampling from zoo model ``model``, the paper-size models with random weights
    (speed does not depend on them); writes ``gpu-<device>-<profile>.{json,md}`` into ``out``.
    ``dry_run``: tiny models on the CPU (Triton through its interpreter), figures meaningless."""
    from streamgen.bench.report import write_json_md
    from streamgen.zoo import load_model

    network, info = load_model(model)
    profile = DRY_RUN if dry_run else QUICK if quick else FULL
    if dry_run:  # the default's shape, shrunk
        network = build_network(*DRY_SEQUNET)
        where = "cpu-interpreter"
    else:
        where = torch.cuda.get_device_name(torch.device(device))
    start = time.perf_counter()
    results = run_gpu_suite(profile, device=device, default_model=(model, network),
                            sampling=info.sampling, log=log)
    results["wall_seconds"] = time.perf_counter() - start
    stem = re.sub(r"[^A-Za-z0-9]+", "-", f"gpu-{where}-{profile.name}").strip("-").lower()
    report = gpu_markdown(results)
    log(report)
    return write_json_md(results, report, out, stem)

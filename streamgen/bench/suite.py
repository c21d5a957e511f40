"""The benchmark suite: every figure of ``streamgen bench`` / ``benchmarks/run.py``.

1. throughput of the default and the paper-size Seq-U-Net; 2. Seq-U-Net vs WaveNet of matched
receptive field (generation, training step, peak memory); 3. against recomputing the receptive
field every sample; 4. scaling with the receptive field; 5. batch sweep; 6. worst-case vs mean
step time. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from streamgen.bench.timing import machine_info, synchronize, time_call
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.cost import macs_per_step, mean_macs
from streamgen.engine.engine import available_backends
from streamgen.engine.recompute import RecomputeEngine
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig, build_network

SAMPLE_RATE = 16000
PAPER_SEQUNET = ("sequnet", {"channels": 180, "levels": 11, "depth": 2, "kernel_size": 5})
PAPER_WAVENET = ("wavenet", {"blocks": 4, "layers": 13})


@dataclass
class Profile:
    """How much to measure: ``quick`` takes about 25 s of one core once the kernels are compiled."""

    name: str
    gen_samples: int = 4096
    repeats: int = 5
    recompute_steps: int = 6
    sequnet_levels: tuple[int, ...] = (6, 7, 8, 9, 10, 11)
    wavenet_layers: tuple[int, ...] = (9, 10, 11, 12, 13, 14)
    tcn_levels: tuple[int, ...] = (8, 9, 10, 11, 12, 13)
    batches: tuple[int, ...] = (1, 4, 16, 64, 256)
    profile_steps: int = 2048
    paper: bool = True
    train_out: int = 1024  # outputs per training step (inputs: the receptive field more)
    train_repeats: int = 2
    extra: dict[str, Any] = field(default_factory=dict)


QUICK = Profile("quick", gen_samples=1024, repeats=3, recompute_steps=2,
                sequnet_levels=(6, 8, 10), wavenet_layers=(9, 11, 13), tcn_levels=(8, 10, 12),
                batches=(1, 16, 64), profile_steps=512, paper=False)
FULL = Profile("full")


def generation_rate(model: nn.Module, *, batch: int = 1, device: str = "cpu", backend: str = "auto",
                    n: int = 4096, repeats: int = 5, sampling: SamplingConfig | None = None,
                    capacity: str = "double", dtype: torch.dtype = torch.float32,
                    warmup_steps: int = 0, seconds: float | None = None,
                    multiple: int = 1) -> dict[str, Any]:
    """Free-running samples per second (all streams together) and real-time factor, over
    timed calls of ``n`` steps. ``warmup_steps`` are generated once before the warm-up call (a
    replaying executor records its segments then). ``seconds``: time calls of about that long
    instead, ``n`` then being the most steps a call takes; a first call of ``multiple`` steps
    (at least 64) measures the pace. Calls take multiples of ``multiple`` steps. The numba
    backend runs the streams on as many threads as torch has."""
    engine = StreamingEngine(model, batch, device=device, backend=backend, capacity=capacity,
                             dtype=dtype, threads=torch.get_num_threads())  # numba's as torch's
    sampler = engine.sampler(sampling, seed=0)
    if warmup_steps:
        engine.generate(warmup_steps, sampler)
    if seconds is not None:
        probe = min(n, -(-64 // multiple) * multiple)
        pace = time_call(lambda: engine.generate(probe, sampler), device=device,
                         repeats=1).median / probe
        n = min(n, max(probe, round(seconds / pace / multiple) * multiple))
    out = torch.empty(batch, n, dtype=torch.int64, device=engine.device)
    timing = time_call(lambda: engine.generate(n, sampler, out), device=device, repeats=repeats)
    per_stream = n / timing.median
    return {"backend": engine.backend, "batch": batch, "sampling": sampler.config.describe(),
            "samples_per_s": batch * per_stream, "steps": n,
            "per_stream_samples_per_s": per_stream, "realtime_factor": per_stream / SAMPLE_RATE,
            "seconds_median": timing.median, "seconds_runs": timing.runs}


def recompute_rate(model: nn.Module, *, device: str = "cpu", steps: int = 6,
                   repeats: int = 3) -> dict[str, Any]:
    """Samples per second when every step reruns the whole receptive field."""
    engine = RecomputeEngine(model.to(device))
    x = torch.randint(0, model.num_classes, (1, steps), device=device)
    timing = time_call(lambda: engine.feed(x), device=device, repeats=repeats)
    return {"samples_per_s": steps / timing.median, "window": engine.window}


def step_profile(model: nn.Module, *, device: str = "cpu", steps: int = 2048) -> dict[str, Any]:
    """Per-step wall time of the torch backend by clock phase, and the analytic MACs."""
    engine = StreamingEngine(model, 1, device=device, backend="torch")
    x = torch.randint(0, model.num_classes, (1, steps + 64), device=device)
    engine.feed(x[:, :64])
    times, wraps = [], []
    for i in range(64, steps + 64):
        wrap = (engine.t + 1) % engine.period == 0
        start = time.perf_counter()
        engine.feed(x[:, i : i + 1])
        synchronize(device)
        times.append(time.perf_counter() - start)
        if wrap:
            wraps.append(times[-1])
    per = macs_per_step(model)
    ordered = sorted(times)
    return {
        "mean_s": statistics.fmean(times), "median_s": statistics.median(times),
        "p99_s": ordered[int(0.99 * (len(ordered) - 1))], "max_s": ordered[-1],
        "wrap_step_mean_s": statistics.fmean(wraps) if wraps else None,
        "macs_mean": sum(per) / len(per), "macs_max": max(per),
    }


def training_step(kind: str, config: dict, out_len: int, *, device: str = "cpu",
                  repeats: int = 3) -> dict[str, Any]:
    """Forward + backward + Adam step on one window, in a fresh process (for peak memory)
    with this process's torch thread count."""
    spec = json.dumps({"kind": kind, "config": config, "out_len": out_len, "device": device,
                       "repeats": repeats, "threads": torch.get_num_threads()})
    done = subprocess.run([sys.executable, "-m", "streamgen.bench.train_step", spec],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


#: Config fields that set a network's widths (Seq-U-Net and TCN, WaveNet)
WIDTHS = ("channels", "residual_channels", "dilation_channels", "skip_channels")


def overhead_breakdown(model: nn.Module, *, device: str = "cpu", n: int = 2048,
                       repeats: int = 5) -> list[dict[str, Any]]:
    """Per-sample time split into fixed overhead and arithmetic, per backend.

    The same layer graph at width 1 (and 16 classes) does almost no arithmetic: its time per
    sample is the schedule's Python/dispatch (torch) or loop (numba) overhead; the rest of the
    full model's time is arithmetic, reported with the rate it achieves.
    """
    config = model.config
    full = type(model)(config).eval()
    narrow = {f.name: 1 for f in dataclasses.fields(config) if f.name in WIDTHS}
    skeleton = type(model)(dataclasses.replace(config, **narrow, classes=16)).eval()
    rows = []
    for backend in available_backends(full, device):
        t_full, t_skel = (1.0 / generation_rate(m, device=device, backend=backend, n=n,
                                                  repeats=repeats)["samples_per_s"] for m in (full, skeleton))
        arithmetic = max(t_full - t_skel, 0.0)
        rows.append({"backend": backend, "us_per_sample": t_full * 1e6, "overhead_us": t_skel * 1e6,
                     "arithmetic_us": arithmetic * 1e6, "overhead_share": t_skel / t_full,
                     "gmacs_per_s": mean_macs(full) / arithmetic / 1e9 if arithmetic else None})
    return rows


def _sequnet(levels: int, channels: int = 32) -> SeqUNet:
    return SeqUNet(SeqUNetConfig(channels, levels, 2, 5))


def _wavenet(layers: int) -> WaveNet:
    return WaveNet(WaveNetConfig(2, layers, 2, 32, 32, 128))


def _tcn(levels: int) -> TCN:
    return TCN(TCNConfig(channels=32, levels=levels, kernel_size=3, dropout=0.0))


def scaling(profile: Profile, device: str) -> list[dict[str, Any]]:
    """Per-sample cost as the receptive field doubles, for each family."""
    rows = []
    families: list[tuple[str, Callable[[int], nn.Module], tuple[int, ...]]] = [
        ("Seq-U-Net", _sequnet, profile.sequnet_levels),
        ("WaveNet", _wavenet, profile.wavenet_layers),
        ("TCN", _tcn, profile.tcn_levels),
    ]
    for family, make, sizes in families:
        for size in sizes:
            model = make(size).eval().to(device)
            row = {"family": family, "size": size, "receptive_field": model.receptive_field,
                   "params": model.num_parameters(), "macs_per_sample": mean_macs(model)}
            for backend in available_backends(model, device):
                rate = generation_rate(model, device=device, backend=backend,
                                       n=profile.gen_samples, repeats=profile.repeats)
                row[f"{backend}_samples_per_s"] = rate["samples_per_s"]
                row[f"{backend}_us_per_sample"] = 1e6 / rate["samples_per_s"]
            if family == "Seq-U-Net":
                rec = recompute_rate(model, device=device, steps=profile.recompute_steps,
                                     repeats=max(2, profile.repeats // 2))
                row["recompute_samples_per_s"] = rec["samples_per_s"]
                row["recompute_us_per_sample"] = 1e6 / rec["samples_per_s"]
            rows.append(row)
    return rows


def run_suite(profile: Profile, *, device: str = "cpu",
              default_model: tuple[str, nn.Module] | None = None, sampling: SamplingConfig | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every measurement of ``profile``; returns one JSON-able dict.

    ``default_model`` (name, model) is measured for throughput, batch sweep and step profile;
    its recommended ``sampling`` is timed beside plain sampling.
    """
    torch.manual_seed(0)
    results: dict[str, Any] = {"profile": profile.name, "machine": machine_info(device),
                               "sample_rate": SAMPLE_RATE, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    name, model = default_model or ("default-architecture", _sequnet(10))
    model = model.eval().to(device)
    backends = available_backends(model, device)

    log(f"1. throughput: {name}")
    samplings = [SamplingConfig()] + ([sampling] if sampling and sampling != SamplingConfig() else [])
    results["throughput"] = [
        {"model": name, "config": model.config.to_dict(), "params": model.num_parameters(),
         "receptive_field": model.receptive_field,
         **generation_rate(model, device=device, backend=b, n=profile.gen_samples, repeats=profile.repeats,
                           sampling=s)}
        for s in samplings for b in backends
    ]
    if profile.paper:
        log("1./2. paper-size Seq-U-Net vs WaveNet of matched receptive field")
        paper = []
        for kind, cfg in (PAPER_SEQUNET, PAPER_WAVENET):
            net = build_network(kind, cfg).eval().to(device)
            for b in available_backends(net, device):
                paper.append({"model": f"paper {kind}", "kind": kind, "config": cfg,
                              "params": net.num_parameters(), "receptive_field": net.receptive_field,
                              "macs_per_sample": mean_macs(net),
                              **generation_rate(net, device=device, backend=b, n=max(256, profile.gen_samples // 8),
                                                repeats=max(2, profile.repeats // 2))})
            paper[-1]["training"] = training_step(kind, cfg, profile.train_out, device=device,
                                                  repeats=profile.train_repeats)
        results["paper_comparison"] = paper

    log("3./4. scaling with the receptive field (with full recomputation)")
    results["scaling"] = scaling(profile, device)

    log("5. batch sweep")
    results["batch_sweep"] = [
        generation_rate(model, batch=b, device=device, backend=be,
                        n=max(64, profile.gen_samples // max(1, b // 4)), repeats=profile.repeats)
        for be in backends for b in profile.batches
    ]
    log("7. per-sample budget: overhead vs arithmetic")
    results["overhead"] = overhead_breakdown(model, device=device, n=profile.gen_samples,
                                             repeats=profile.repeats)
    log("6. worst-case vs mean step")
    results["step_profile"] = step_profile(model, device=device, steps=profile.profile_steps)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    return results

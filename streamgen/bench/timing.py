"""Timing done right: warm-up, device synchronisation, medians of several repetitions."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    median: float
    minimum: float
    runs: list[float]


def time_call(fn: Callable[[], object], *, device: torch.device | str = "cpu", warmup: int = 1,
              repeats: int = 5) -> Timing:
    """Seconds per call of ``fn``: ``warmup`` untimed calls, then the median of ``repeats``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        runs.append(time.perf_counter() - start)
    return Timing(statistics.median(runs), min(runs), runs)


def machine_info(device: torch.device | str) -> dict[str, object]:
    """What the figures were measured on."""
    device = torch.device(device)
    info: dict[str, object] = {
        "machine": platform.node(),
        "platform": platform.platform(),
        "processor": cpu_name(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": device.type,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    return info


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

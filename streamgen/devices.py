"""Torch device names as users type them (``auto``, ``cpu``, ``cuda``, ``cuda:1``) -> ``torch.device``.

One rule for generation, playback, benchmarks and training: a CUDA device always comes back
with an index (``cuda`` means this process's GPU: ``cuda:<local_rank>``), because several
torch calls (``torch.cuda.set_device``, RNG states, DDP ``device_ids``) need one; anything
that cannot run raises :class:`DeviceError` with a one-line message naming the fix.
"""

from __future__ import annotations

import torch

SUPPORTED = ("auto", "cpu", "cuda", "cuda:N")


class DeviceError(ValueError):
    """A device that is unknown or not usable here; the message is one line with the fix."""


def resolve_device(name: str | torch.device | None = "auto", local_rank: int = 0) -> torch.device:
    """``auto``/None: ``cuda:<local_rank>`` when a GPU is visible, else the CPU; ``cuda``:
    ``cuda:<local_rank>``; ``cuda:N`` and ``cpu`` as given. Raises DeviceError."""
    if name is None or str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise DeviceError(f"unknown device {str(name)!r}; use --device with one of {', '.join(SUPPORTED)}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise DeviceError(f"device {str(name)!r} is not supported; use --device with one of {', '.join(SUPPORTED)}")
    if not torch.cuda.is_available():
        raise DeviceError(_no_cuda(str(name)))
    index = local_rank if device.index is None else device.index
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"device cuda:{index} does not exist: {count} CUDA GPU(s) visible "
                          f"(cuda:0 to cuda:{count - 1}); choose one of those or use --device cpu")
    return torch.device("cuda", index)


def _no_cuda(name: str) -> str:
    if torch.version.cuda is None:
        return (f"device {name!r} asked for, but this torch ({torch.__version__}) is a CPU-only "
                "build; install a CUDA build of torch (https://pytorch.org) or use --device cpu")
    return (f"device {name!r} asked for, but no CUDA GPU is usable (torch {torch.__version__} "
            f"built for CUDA {torch.version.cuda}: no GPU, a driver older than that, or "
            "CUDA_VISIBLE_DEVICES hides them); fix the driver or use --device cpu")

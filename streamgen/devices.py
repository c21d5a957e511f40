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
    capability, arches = torch.cuda.get_device_capability(index), torch.cuda.get_arch_list()
    if arches and not runs_on(capability, arches):
        major, minor = capability
        raise DeviceError(
            f"device cuda:{index} ({torch.cuda.get_device_name(index)}, compute capability "
            f"{major}.{minor}) is not supported by this torch ({torch.__version__}, kernels for "
            f"{' '.join(arches)}); install a torch build for this GPU (https://pytorch.org) or "
            "use --device cpu")
    return torch.device("cuda", index)


def runs_on(capability: tuple[int, int], arches: list[str]) -> bool:
    """Whether a torch built for ``arches`` (``torch.cuda.get_arch_list()``: ``sm_XY`` cubins,
    ``compute_XY`` PTX) has kernels for a GPU of ``capability``: a cubin of the same major
    version and no newer minor one (``sm_90a``'s only on 9.0 itself), or PTX of no newer
    version, which the driver compiles."""
    for arch in arches:
        kind, _, number = arch.partition("_")
        specific = number.endswith("a")
        number = number.rstrip("af")
        if not number.isdigit() or len(number) < 2:
            continue
        built = int(number[:-1]), int(number[-1])
        if kind == "sm" and (built == capability or (not specific and built[0] == capability[0]
                                                     and built[1] <= capability[1])):
            return True
        if kind == "compute" and built <= capability:
            return True
    return False


def _no_cuda(name: str) -> str:
    if torch.version.cuda is None:
        return (f"device {name!r} asked for, but this torch ({torch.__version__}) is a CPU-only "
                "build; install a CUDA build of torch (https://pytorch.org) or use --device cpu")
    return (f"device {name!r} asked for, but no CUDA GPU is usable (torch {torch.__version__} "
            f"built for CUDA {torch.version.cuda}: no GPU, a driver older than that, or "
            "CUDA_VISIBLE_DEVICES hides them); fix the driver or use --device cpu")

"""GPU executors of step plans: a persistent Triton kernel for the latency regime
(``triton_executor``). Nothing here imports triton until an executor is built, so the rest of
the engine works without it."""

from __future__ import annotations

import importlib.util
import os


def triton_available() -> bool:
    """Whether triton can be imported (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton kernels run on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``
    set before triton is imported): how the kernels are tested without a GPU."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

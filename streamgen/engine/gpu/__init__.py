"""GPU executors of step plans: a persistent Triton kernel for the latency regime
(``triton_executor``). Nothing here imports triton until an executor is built, so the rest of
the engine works without it."""

from __future__ import annotations

import importlib.util
import os
import sys


def triton_available() -> bool:
    """Whether triton can be imported (it ships with CUDA builds of torch)."""
    return importlib.util.find_spec("triton") is not None


def interpreting() -> bool:
    """Whether Triton runs kernels on the CPU through its interpreter in this process: how
    the kernels are tested without a GPU. Triton fixes the mode for the whole process when it
    is first imported (``TRITON_INTERPRET=1`` set then), its own library included."""
    if "triton.language" in sys.modules:
        from triton.language import standard
        from triton.runtime.interpreter import InterpretedFunction

        return isinstance(standard.sigmoid, InterpretedFunction)
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")

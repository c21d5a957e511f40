"""GPU executors of step plans: persistent kernels for the latency regime (numba-cuda with one
thread block per stream, ``cuda_executor``, or many, ``grid_executor``; Triton,
``triton_executor``) and CUDA graphs of the torch steps for large batches (``graphs``).
Nothing here imports triton or numba.cuda until an executor is built, so the rest of the
engine works without them."""

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


def triton_runs(device_type: str) -> bool:
    """Whether Triton kernels run on a device of ``device_type`` in this process: a CUDA
    device where triton is installed, or the CPU through its interpreter."""
    return triton_available() and (device_type == "cuda" or interpreting())


def numba_cuda_available() -> bool:
    """Whether ``numba.cuda`` can be imported (numba-cuda, or numba's own older copy)."""
    try:
        return importlib.util.find_spec("numba.cuda") is not None
    except ImportError:  # numba itself missing
        return False


def simulating() -> bool:
    """Whether numba runs CUDA kernels on the CPU through its simulator in this process
    (``NUMBA_ENABLE_CUDASIM=1`` when numba was first imported): how the numba-cuda kernel is
    tested without a GPU."""
    if "numba" in sys.modules:
        from numba.core import config

        return bool(config.ENABLE_CUDASIM)
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")

"""The incremental inference engine: ring buffers, multi-rate schedule, streaming state, sampling.

Its names load on first use (PEP 562), so a torch-free part such as ``backends`` imports
without torch.
"""

from importlib import import_module
from typing import TYPE_CHECKING

#: Each public name -> the module it comes from.
_HOMES = {"StreamingEngine": "streamgen.engine.engine", "Sampler": "streamgen.engine.sampling",
          "SamplingConfig": "streamgen.sampling", "silence_class": "streamgen.engine.clock"}
__all__ = list(_HOMES)

if TYPE_CHECKING:
    from streamgen.engine.clock import silence_class
    from streamgen.engine.engine import StreamingEngine
    from streamgen.engine.sampling import Sampler
    from streamgen.sampling import SamplingConfig


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_HOMES[name]), name)
    globals()[name] = value
    return value

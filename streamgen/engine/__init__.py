"""The incremental inference engine: ring buffers, multi-rate schedule, streaming state, sampling."""

from streamgen.engine.clock import silence_class
from streamgen.engine.engine import StreamingEngine
from streamgen.engine.sampling import Sampler, SamplingConfig

__all__ = ["StreamingEngine", "Sampler", "SamplingConfig", "silence_class"]

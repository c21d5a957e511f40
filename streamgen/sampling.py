"""How to choose the next sample: the sampling settings a model recommends and a user
overrides (the ``Sampler`` that applies them is ``streamgen.engine.sampling``). Kept free of
engine imports, so checkpoints and training can read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: What a stream has received before its first sample: all-zero input vectors (the offline
#: pass's own padding; the first sample is then the silence class), or the silence class
#: itself, the history of the start windows a model may be trained with
#: (``TrainConfig.start_windows``; the first sample is then drawn from the model).
STARTS = ("zeros", "silence")


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 1.0
    top_k: int = 0  # 0: off
    top_p: float = 1.0  # 1.0: off
    greedy: bool = False

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def changes(self) -> dict[str, Any]:
        """The fields that differ from plain sampling (what a ``config.json`` records)."""
        plain = SamplingConfig()
        return {k: v for k, v in asdict(self).items() if v != getattr(plain, k)}

    def describe(self) -> str:
        """``"plain"`` or the changed fields, e.g. ``"top_p=0.9"``."""
        return ", ".join(f"{k}={v}" for k, v in self.changes().items()) or "plain"

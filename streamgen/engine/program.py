"""The step program of a network: its rings, their rates, and one step of computation.

A program is built from a trained network's own modules and weights. It names every ring,
the level its frames live at (frames at times ``t`` with ``(t + 1) % 2**level == 0``), and the
module whose forward input those frames are, so the engine can fill the rings from an offline
forward pass (see ``streamgen.engine.capture``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from streamgen.engine.ring import FrameRing

if TYPE_CHECKING:
    from streamgen.engine.sampling import Sampler

INPUT_RING = "input"


@dataclass(frozen=True)
class RingInfo:
    level: int
    source: nn.Module | None  # None for the ring of input class indices
    cond: bool = False  # frames are [x; cond] of a conditioned GatedResidual


class StepProgram:
    """Base of the per-network programs. Subclasses fill ``rings``/``info`` and define ``step``."""

    def __init__(self, model: nn.Module, batch: int, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.batch, self.device, self.dtype = batch, device, dtype
        self.classes: int = model.num_classes
        self.period: int = model.period
        self.rings: dict[str, FrameRing] = {}
        self.info: dict[str, RingInfo] = {}

    def ring(
        self, name: str, level: int, window: int, channels: int, source: nn.Module | None,
        cond: bool = False,
    ) -> FrameRing:
        dtype = torch.int64 if source is None else self.dtype
        ring = FrameRing(self.batch, window, channels, dtype=dtype, device=self.device)
        self.rings[name] = ring
        self.info[name] = RingInfo(level, source, cond)
        return ring

    def input_ring(self, window: int) -> FrameRing:
        return self.ring(INPUT_RING, 0, window, 1, None)

    def step(self, x: torch.Tensor, logits: torch.Tensor, phase: int) -> None:
        """Consume input classes ``x`` (B,) at clock ``phase`` (= t mod period); write ``logits``."""
        raise NotImplementedError

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        """Teacher-forced steps ``t0, t0+1, ...`` over ``xs`` (B, N); each step's logits into
        ``out`` (B, N, classes) if given. Compiled programs override the whole block."""
        for i in range(xs.shape[1]):
            self.step(xs[:, i], logits, (t0 + i) % self.period)
            if out is not None:
                out[:, i].copy_(logits)

    def generate_block(self, n: int, sampler: "Sampler", out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        """Free-running steps from ``t0``: sample ``x`` from ``logits``, record it, feed it."""
        for i in range(n):
            sampler.sample(logits, x)
            out[:, i].copy_(x)
            self.step(x, logits, (t0 + i) % self.period)

"""Choosing the next sample from logits: temperature, top-k, nucleus (top-p), greedy.

Sampling is the Gumbel-max trick over noise that is a pure function of (seed, step, stream,
class) (``streamgen.engine.noise``), so a run is reproducible from its seed whatever the
caller's chunk sizes, batch and backend; the sampler keeps a block of it on the engine's
device, and executors that draw their own streams' noise (the numba executor's threads)
claim steps from it instead.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from streamgen.engine import noise as gumbel
from streamgen.engine.gpu import triton_available
from streamgen.sampling import SamplingConfig

NOISE_BLOCK = 256  # steps of noise drawn at once
#: The compiled samplers' nucleus bound: classes below ``NUCLEUS_BOUND * (1 - top_p) / classes``
#: of the mass hold less than ``1 - top_p`` together, so they lie outside the nucleus (a hair
#: below 1, so rounding can only widen the candidates).
NUCLEUS_BOUND = 0.999


class Sampler:
    """Draws one class per stream from ``(B, classes)`` logits into a caller's buffer. Its
    state is its seed and ``step``, the next step's noise counter."""

    def __init__(
        self,
        config: SamplingConfig,
        batch: int,
        classes: int,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        if config.top_k > classes:
            raise ValueError(f"top_k {config.top_k} exceeds the {classes} classes")
        self.config, self.seed, self.step = config, seed, 0
        f32 = dict(dtype=torch.float32, device=device)
        self.noise = torch.empty(NOISE_BLOCK, batch, classes, **f32)
        #: The step of ``noise``'s first row (None: nothing drawn yet).
        self._noise_at: int | None = None
        self.scores = torch.empty(batch, classes, **f32)
        self.mask = torch.empty(batch, classes, dtype=torch.bool, device=device)

    def draw(self, step: int, out: torch.Tensor | np.ndarray, stream: int = 0) -> None:
        """The noise of steps ``step...`` and streams ``stream...`` into ``out`` (steps,
        streams, classes), a C-contiguous float32 tensor or array: on the CPU, or on a GPU by
        Triton's kernel (where Triton is missing, drawn on the CPU and copied)."""
        if isinstance(out, np.ndarray) or out.device.type == "cpu":
            gumbel.gumbel_into(self.seed, step, stream, np.asarray(out))
        elif triton_available():
            from streamgen.engine.gpu import noise_kernel

            noise_kernel.gumbel_into(self.seed, step, stream, out)
        else:
            drawn = np.empty(tuple(out.shape), np.float32)
            out.copy_(torch.from_numpy(gumbel.gumbel_into(self.seed, step, stream, drawn)))

    def claim(self, n: int) -> int:
        """Take the next ``n`` steps of noise for a caller that draws them itself: their first
        step."""
        step = self.step
        self.step += n if self.uses_noise else 0
        return step

    def take(self, n: int) -> tuple[torch.Tensor, int, int]:
        """Reserve up to ``n`` steps of Gumbel noise: (noise block, first row, row count)."""
        at = self._noise_at
        if at is None or not at <= self.step < at + NOISE_BLOCK:
            self._noise_at = None  # interrupted: holds no block whole
            self.draw(self.step, self.noise)
            self._noise_at = at = self.step
        start = self.step - at
        count = min(n, NOISE_BLOCK - start)
        self.step += count
        return self.noise, start, count

    @property
    def uses_noise(self) -> bool:
        """Whether ``sample`` draws noise (greedy picks the argmax and draws none)."""
        return not self.config.greedy

    def runs(self, n: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        """``n`` free-running steps as runs that each read one noise block: (noise block,
        first row, steps), taking the noise as ``sample`` would. Greedy sampling reads none:
        one run, nothing drawn (the block's contents are then meaningless)."""
        if not self.uses_noise:
            if n:
                yield self.noise, 0, n
            return
        done = 0
        while done < n:
            noise, start, count = self.take(n - done)
            yield noise, start, count
            done += count

    def _next_noise(self) -> torch.Tensor:
        noise, start, _ = self.take(1)
        return noise[start]

    def sample(self, logits: torch.Tensor, out: torch.Tensor,
               noise: torch.Tensor | None = None) -> torch.Tensor:
        """The next class of each stream into ``out`` (B,); ``noise`` (B, classes): this step's
        Gumbel noise, by default the next row of the sampler's own stream."""
        cfg = self.config
        if cfg.greedy:
            return torch.argmax(logits, dim=-1, out=out)
        s = torch.div(logits, cfg.temperature, out=self.scores)
        if cfg.top_k:
            kth = torch.topk(s, cfg.top_k, dim=-1).values[:, -1:]
            s.masked_fill_(torch.lt(s, kth, out=self.mask), float("-inf"))
        if cfg.top_p < 1.0:
            sorted_s, order = torch.sort(s, dim=-1, descending=True)
            probs = torch.softmax(sorted_s, dim=-1)
            # drop a class when the classes ranked above it already hold top_p of the mass
            drop = (probs.cumsum(-1) - probs) >= cfg.top_p
            s.masked_fill_(self.mask.scatter_(-1, order, drop), float("-inf"))
        s.add_(self._next_noise() if noise is None else noise)
        return torch.argmax(s, dim=-1, out=out)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.step, self._noise_at = int(state["seed"]), int(state["step"]), None

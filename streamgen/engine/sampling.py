"""Choosing the next sample from logits: temperature, top-k, nucleus (top-p), greedy.

Sampling is the Gumbel-max trick over preallocated uniform noise drawn from a seeded
generator on the engine's device in fixed blocks, so a run is reproducible from its seed
whatever the caller's chunk sizes.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from streamgen.sampling import SamplingConfig

NOISE_BLOCK = 256  # steps of noise drawn at once
#: The compiled samplers' nucleus bound: classes below ``NUCLEUS_BOUND * (1 - top_p) / classes``
#: of the mass hold less than ``1 - top_p`` together, so they lie outside the nucleus (a hair
#: below 1, so rounding can only widen the candidates).
NUCLEUS_BOUND = 0.999


class Sampler:
    """Draws one class per stream from ``(B, classes)`` logits into a caller's buffer."""

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
        self.config, self.seed = config, seed
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        f32 = dict(dtype=torch.float32, device=device)
        self.noise = torch.empty(NOISE_BLOCK, batch, classes, **f32)
        self.used = NOISE_BLOCK
        #: The next block, when ``prefetch`` drew it ahead (None: not drawn), and the
        #: generator's state before it (what ``state_dict`` saves meanwhile).
        self._ahead: torch.Tensor | None = None
        self._state_before_ahead: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None
        self.scores = torch.empty(batch, classes, **f32)
        self.mask = torch.empty(batch, classes, dtype=torch.bool, device=device)

    def _draw(self, block: torch.Tensor) -> None:
        """The next block of noise from the generator: Gumbel(0, 1) = -log(-log(U)). On the CPU
        numpy takes the logs, on the calling thread (torch's logs run on its intra-op threads,
        which then spin, taking the cores the numba executor's streams run on)."""
        block.uniform_(1e-20, 1.0, generator=self.generator)
        if block.device.type != "cpu":
            block.log_().neg_().log_().neg_()
            return
        a = block.numpy()
        np.log(a, out=a)
        np.log(np.negative(a, out=a), out=a)
        np.negative(a, out=a)

    def prefetch(self) -> None:
        """Draw the next noise block now, into a second buffer, while others read the current
        one (the numba executor draws it while its threads run a block): samples and
        ``state_dict`` stay what they would have been."""
        if self._ahead is not None or not self.uses_noise:
            return
        spare = torch.empty_like(self.noise) if self._spare is None else self._spare
        state = self.generator.get_state()
        try:
            self._draw(spare)
        except BaseException:  # interrupted: as if never drawn
            self.generator.set_state(state)
            raise
        self._state_before_ahead, self._ahead, self._spare = state, spare, None

    def take(self, n: int) -> tuple[torch.Tensor, int, int]:
        """Reserve up to ``n`` steps of Gumbel noise: (noise block, first row, row count)."""
        if self.used == NOISE_BLOCK:
            if self._ahead is None:
                self._draw(self.noise)
            else:  # the prefetched block becomes the current one, the old one the spare
                self.noise, self._spare, self._ahead = self._ahead, self.noise, None
            self.used = 0
        start = self.used
        count = min(n, NOISE_BLOCK - start)
        self.used += count
        return self.noise, start, count

    @property
    def uses_noise(self) -> bool:
        """Whether ``sample`` draws noise (greedy picks the argmax and draws none)."""
        return not self.config.greedy

    def _draws(self, n: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        """``take`` until ``n`` steps of noise are reserved, one noise block at a time."""
        done = 0
        while done < n:
            noise, start, count = self.take(n - done)
            yield noise, start, count
            done += count

    def runs(self, n: int) -> Iterator[tuple[torch.Tensor, int, int]]:
        """``n`` free-running steps as runs that each read one noise block: (noise block,
        first row, steps), taking the noise as ``sample`` would. Greedy sampling reads none:
        one run, nothing drawn (the block's contents are then meaningless)."""
        if self.uses_noise:
            yield from self._draws(n)
        elif n:
            yield self.noise, 0, n

    def take_into(self, dst: torch.Tensor) -> None:
        """Copy the next ``len(dst)`` steps of noise into ``dst`` (its rows may straddle two
        noise blocks): what ``len(dst)`` calls of ``sample`` without ``noise`` would use."""
        done = 0
        for noise, start, count in self._draws(len(dst)):
            dst[done : done + count].copy_(noise[start : start + count])
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

    def state_dict(self) -> dict[str, torch.Tensor | int]:
        generator = (self.generator.get_state() if self._ahead is None
                     else self._state_before_ahead)  # as if the next block were not drawn yet
        return {"generator": generator, "noise": self.noise.clone(), "used": self.used}

    def load_state_dict(self, state: dict) -> None:
        if self._ahead is not None:  # drawn from the state left behind
            self._spare, self._ahead = self._ahead, None
        self.generator.set_state(state["generator"])
        self.noise.copy_(state["noise"])
        self.used = int(state["used"])

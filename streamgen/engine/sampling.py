"""Choosing the next sample from logits: temperature, top-k, nucleus (top-p), greedy.

Sampling is the Gumbel-max trick over noise that is a pure function of (seed, step, stream,
class) (``streamgen.engine.noise``), so a run is reproducible from its seed whatever the
caller's chunk sizes, batch and backend. The sampler keeps a block of it on the engine's
device for torch's ops and the persistent kernels; executors that draw their own streams'
noise (the numba executor's threads) claim steps from it instead, and on a GPU one fused
Triton kernel samples each step with the noise drawn in place (``gpu.sample_kernel``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterator

import numpy as np
import torch

from streamgen.engine import noise as gumbel
from streamgen.engine.gpu import triton_available, triton_runs
from streamgen.engine.tables import BackendError
from streamgen.sampling import SamplingConfig

NOISE_BLOCK = 256  # steps of noise drawn at once
#: The compiled samplers' nucleus bound: classes below ``NUCLEUS_BOUND * (1 - top_p) / classes``
#: of the mass hold less than ``1 - top_p`` together, so they lie outside the nucleus (a hair
#: below 1, so rounding can only widen the candidates).
NUCLEUS_BOUND = 0.999


def fused_runs_on(device: torch.device) -> bool:
    """Whether samplers on ``device`` take the fused kernel by default: on a CUDA device
    where Triton is installed."""
    return device.type == "cuda" and triton_available()


class Sampler:
    """Draws one class per stream from ``(B, classes)`` logits into a caller's buffer. Its
    state is its seed and ``step``, the next step's noise counter.

    ``fused``: sample with one Triton kernel that draws its noise in place
    (``gpu.sample_kernel``) instead of torch's ops over a noise block; by default on a CUDA
    device where Triton is installed (on the CPU it needs Triton's interpreter: the tests')."""

    #: Whether samplers take the fused kernel where it runs by default (a probe's A/B knob).
    fuse: bool = True

    def __init__(
        self,
        config: SamplingConfig,
        batch: int,
        classes: int,
        *,
        seed: int = 0,
        device: torch.device | str = "cpu",
        fused: bool | None = None,
    ) -> None:
        if config.top_k > classes:
            raise ValueError(f"top_k {config.top_k} exceeds the {classes} classes")
        self.config, self.seed, self.step = config, seed, 0
        self.device, self.shape = torch.device(device), (batch, classes)
        self.fused = self.fuse and fused_runs_on(self.device) if fused is None else fused
        if self.fused and not triton_runs(self.device.type):
            raise BackendError("a fused sampler runs a Triton kernel: on a CUDA device with "
                               "triton installed (or on the CPU with TRITON_INTERPRET=1)")
        #: The step of ``noise``'s first row (None: nothing drawn yet).
        self._noise_at: int | None = None
        # the fused kernel's step base when called eagerly (the step itself is an argument)
        self._step_zero = (torch.zeros(1, dtype=torch.int64, device=device) if self.fused
                           else None)

    @cached_property
    def scores(self) -> torch.Tensor:
        """torch's rule's scores (B, classes), allocated at first use like ``mask`` and
        ``noise``: a fused sampler holds none of them."""
        return torch.empty(self.shape, dtype=torch.float32, device=self.device)

    @cached_property
    def mask(self) -> torch.Tensor:
        return torch.empty(self.shape, dtype=torch.bool, device=self.device)

    @cached_property
    def noise(self) -> torch.Tensor:
        """The noise block (``NOISE_BLOCK``, B, classes), allocated at its first use: a fused
        sampler never holds one."""
        return torch.empty(NOISE_BLOCK, *self.shape, dtype=torch.float32, device=self.device)

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
        Gumbel noise, by default the next row of the sampler's own stream (a fused sampler
        draws it in its kernel)."""
        cfg = self.config
        if cfg.greedy:
            return torch.argmax(logits, dim=-1, out=out)
        if self.fused and noise is None:
            return self.sample_at(logits, out, self._step_zero, self.claim(1))
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

    def sample_at(self, logits: torch.Tensor, out: torch.Tensor, step: torch.Tensor,
                  offset: int = 0) -> torch.Tensor:
        """``sample`` by the fused kernel with the noise of step ``step[0] + offset`` (a
        one-element int64 tensor on the device, which a recorded CUDA graph reads at each
        replay); the sampler's own step is the caller's to claim."""
        from streamgen.engine.gpu.sample_kernel import sample_into

        return sample_into(self.config, self.seed, logits, out, step, offset)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "step": self.step}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.step, self._noise_at = int(state["seed"]), int(state["step"]), None

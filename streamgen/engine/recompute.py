"""Baseline: recompute the whole receptive field for every new sample (no caching).

What a naive user does, kept exact: each step runs the offline forward over the newest
window, padded on the right so that the decimation grid stays fixed in absolute time, so its
outputs equal the streaming engine's. Work per sample grows with the receptive field.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from streamgen.engine.clock import one_hot, zero_index


class RecomputeEngine:
    """Teacher-forced logits by one offline forward pass per step."""

    def __init__(self, model: nn.Module, batch_size: int = 1) -> None:
        self.model = model.eval()
        self.classes, self.period = model.num_classes, model.period
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        # longest window any phase needs: outputs up to a period ahead of the newest sample
        self.window = model.input_length(self.period)
        self.history = torch.full((batch_size, self.window), zero_index(self.classes), dtype=torch.int64,
                                  device=self.device)
        self.t = 0

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        """Consume classes ``x`` (B,); return logits (B, classes) predicting the next sample."""
        self.history = torch.cat([self.history[:, 1:], x.view(-1, 1).to(self.device)], dim=1)
        pad = (-(self.t + 1)) % self.period  # zero vectors after t: the grid end is aligned
        n_in = self.model.input_length(pad + 1)
        idx = F.pad(self.history[:, self.history.shape[1] - (n_in - pad) :], (0, pad),
                    value=zero_index(self.classes))
        onehot = one_hot(idx, self.classes).transpose(1, 2)
        y = self.model(onehot.to(self.dtype))
        self.t += 1
        return y[..., y.shape[-1] - 1 - pad]

    def feed(self, samples: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
        for i in range(samples.shape[1]):
            logits = self.step(samples[:, i])
            if out is not None:
                out[:, i].copy_(logits)
        return out

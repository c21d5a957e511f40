"""Independent reference for streaming tests: one offline float64 forward pass per stream
over the whole sequence, on the grid fixed in absolute time, with the start history (zero
vectors, or the one-hot silence class) before each start."""

from __future__ import annotations

import copy

import torch
from torch.nn import functional as F


def reference_logits(
    model: torch.nn.Module, x: torch.Tensor, starts: list[int] | None = None,
    before: str = "zeros",
) -> torch.Tensor:
    """``x`` (B, N) classes -> (B, N, classes) logits. Stream ``b``'s inputs before
    ``starts[b]`` (a reset at that time), and everything before time 0, are replaced by zero
    vectors (``before="zeros"``) or by the silence class ``classes // 2``."""
    model = copy.deepcopy(model).double().eval()
    classes, period = model.num_classes, model.period
    b, n = x.shape
    n_aligned = -(-n // period) * period  # last sample on every level's grid
    pad = model.input_length(n_aligned) - n_aligned
    onehot = torch.zeros(b, classes, pad + n_aligned, dtype=torch.float64)
    onehot[:, :, pad : pad + n] = F.one_hot(x, classes).transpose(1, 2).double()
    for i, s in enumerate(starts or [0] * b):
        onehot[i, :, : pad + s] = 0.0
        if before == "silence":
            onehot[i, classes // 2, : pad + s] = 1.0
    with torch.no_grad():
        y = model(onehot)
    return y[..., y.shape[-1] - n_aligned :][..., :n].transpose(1, 2)


def reference_frame_logits(model: torch.nn.Module, frames: torch.Tensor,
                           starts: list[int] | None = None) -> torch.Tensor:
    """``frames`` (B, N, F) -> (B, N, F) logits of one offline float64 pass with zero frames
    before the start (and before ``starts[b]`` for stream ``b``)."""
    model = copy.deepcopy(model).double().eval()
    period = model.period
    b, n, f = frames.shape
    n_aligned = -(-n // period) * period
    pad = model.input_length(n_aligned) - n_aligned
    x = torch.zeros(b, f, pad + n_aligned, dtype=torch.float64)
    x[:, :, pad : pad + n] = frames.transpose(1, 2).double()
    for i, s in enumerate(starts or [0] * b):
        x[i, :, : pad + s] = 0.0
    with torch.no_grad():
        y = model(x)
    return y[..., y.shape[-1] - n_aligned :][..., :n].transpose(1, 2)

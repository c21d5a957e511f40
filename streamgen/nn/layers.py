"""Layers shared by the networks: right-aligned cropping and the gated residual layer.

All sequences are right-aligned: the last element of every tensor is the newest time step,
and lengths shrink at the front only. Every layer exposes its length arithmetic
(``output_length`` / ``input_length``) so that networks compute receptive fields and window
sizes from their layer definitions instead of hand-coded numbers.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

ConvKind = Literal["plain", "down", "up"]


def one_hot_channels(index: torch.Tensor, classes: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices ``(B, T)`` -> the networks' input ``(B, classes, T)``, written once (no
    int64 one-hot and transposed copy on the way)."""
    out = torch.zeros(index.shape[0], classes, index.shape[-1], dtype=dtype, device=index.device)
    return out.scatter_(1, index.unsqueeze(1), 1)


def crop_front(x: torch.Tensor, length: int) -> torch.Tensor:
    """Keep the last ``length`` time steps of ``x`` (..., T)."""
    if x.shape[-1] < length:
        raise ValueError(f"cannot crop length {x.shape[-1]} to {length}: sequence too short")
    return x[..., x.shape[-1] - length :]


def check_odd_kernel(kernel_size: int) -> None:
    """The U-Nets' rule: an odd kernel of at least 3 (stride-2 layers keep the newest frame)."""
    if kernel_size % 2 != 1 or kernel_size < 3:
        raise ValueError(f"kernel_size must be odd and >= 3, got {kernel_size}")


def conv_window(conv: nn.Module) -> int:
    """Inputs one output of a (dilated) convolution reads: ``(k - 1) * dilation + 1``."""
    return (conv.kernel_size[0] - 1) * conv.dilation[0] + 1


def sample_and_hold(x: torch.Tensor) -> torch.Tensor:
    """x0, x0, x1, x1, ..., x_{n-1}: every value repeated, the last one once (length 2n-1)."""
    return x.repeat_interleave(2, dim=-1)[..., :-1]


def decimate_keep_last(x: torch.Tensor) -> torch.Tensor:
    """Every second time step, phased so that the very last one is kept."""
    return x[..., (x.shape[-1] - 1) % 2 :: 2]


def conv_output_length(kind: ConvKind, kernel_size: int, n: int) -> int:
    """Outputs of a valid convolution of ``kind`` from ``n`` inputs (at the input's rate).

    ``plain``: stride 1; ``down``: stride 2, phased to keep the last input; ``up``: stride-2
    transposed convolution cropped by :func:`crop_transposed`.
    """
    k = kernel_size
    if kind == "plain":
        return n - k + 1
    if kind == "down":
        return (n - k) // 2 + 1 if n >= k else 0
    # up: every transposed-conv output whose taps all exist, including the first odd one
    return max(2 * n - k + 1, 0)


def conv_input_length(kind: ConvKind, kernel_size: int, m: int) -> int:
    """Fewest inputs that give a convolution of ``kind`` at least ``m`` outputs."""
    k = kernel_size
    if kind == "plain":
        return m + k - 1
    if kind == "down":
        return 2 * (m - 1) + k
    return math.ceil((m + k - 1) / 2)


def crop_transposed(y: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Keep outputs ``m = k-2 .. 2n-2`` of a stride-2 transposed convolution of ``n`` inputs.

    Those are the outputs whose taps all exist, the last one aligned with the last input
    (zero lag).
    """
    k = kernel_size
    return y[..., k - 2 : y.shape[-1] - (k - 1)]


class GatedResidual(nn.Module):
    """``out = identity(x) + tanh(filter(z)) * sigmoid(gate(z))`` with valid convolutions.

    ``kind`` is ``plain`` (stride 1), ``down`` (stride-2 conv, identity = decimation keeping
    the last sample) or ``up`` (stride-2 transposed conv, identity = sample-and-hold).
    ``z`` is ``x`` or ``[x; cond]`` on channels when ``cond_channels > 0``; the identity path
    carries ``x`` alone.
    """

    def __init__(
        self, channels: int, kernel_size: int, kind: ConvKind = "plain", cond_channels: int = 0
    ) -> None:
        super().__init__()
        check_odd_kernel(kernel_size)
        if kind != "plain" and cond_channels:
            raise ValueError("only plain layers take a conditioning input")
        self.kind: ConvKind = kind
        self.kernel_size = kernel_size
        self.channels = channels
        self.cond_channels = cond_channels
        in_ch = channels + cond_channels
        if kind == "up":
            self.filter = nn.ConvTranspose1d(in_ch, channels, kernel_size, stride=2)
            self.gate = nn.ConvTranspose1d(in_ch, channels, kernel_size, stride=2)
        else:
            stride = 2 if kind == "down" else 1
            self.filter = nn.Conv1d(in_ch, channels, kernel_size, stride=stride)
            self.gate = nn.Conv1d(in_ch, channels, kernel_size, stride=stride)

    # -- length arithmetic -------------------------------------------------------------
    def output_length(self, n: int) -> int:
        """Outputs produced from ``n`` inputs (at the input's rate)."""
        return conv_output_length(self.kind, self.kernel_size, n)

    def input_length(self, m: int) -> int:
        """Fewest inputs that give at least ``m`` outputs."""
        return conv_input_length(self.kind, self.kernel_size, m)

    @property
    def window(self) -> int:
        """Input frames one output frame reads (``k``; ``(k+1)/2`` coarse frames for up)."""
        return self.input_length(1)

    # -- offline forward ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        z = x if cond is None else torch.cat([x, crop_front(cond, x.shape[-1])], dim=1)
        residual = torch.tanh(self.filter(z)) * torch.sigmoid(self.gate(z))
        if self.kind == "up":
            residual = crop_transposed(residual, self.kernel_size)
            identity = sample_and_hold(x)
        elif self.kind == "down":
            identity = decimate_keep_last(x)
        else:
            identity = x
        return crop_front(identity, residual.shape[-1]) + residual

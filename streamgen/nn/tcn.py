"""Temporal convolutional network (Bai, Kolter, Koltun 2018) over one-hot mu-law audio.

Residual blocks of two dilated causal convolutions with weight normalisation, ReLU and
dropout; a 1x1 convolution on the residual path where the width changes; a 1x1 head.
Convolutions are valid (the causal padding of the original is the caller's left context).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from streamgen.nn.base import NetworkConfig, SingleRateNetwork
from streamgen.nn.layers import conv_window, crop_front


@dataclass(frozen=True)
class TCNConfig(NetworkConfig):
    channels: int = 64
    levels: int = 8
    kernel_size: int = 3
    dropout: float = 0.1
    classes: int = 256

    def __post_init__(self) -> None:
        if self.levels < 1 or self.kernel_size < 2 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need levels >= 1, kernel_size >= 2, 0 <= dropout < 1: {self}")


class TemporalBlock(nn.Module):
    """``relu(conv2(conv1(x)) + downsample(x))`` with dilation ``dilation`` in both convs."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        self.dilation = dilation
        self.conv1 = weight_norm(nn.Conv1d(n_in, n_out, kernel_size, dilation=dilation))
        self.conv2 = weight_norm(nn.Conv1d(n_out, n_out, kernel_size, dilation=dilation))
        self.dropout = nn.Dropout(dropout)
        self.downsample = nn.Conv1d(n_in, n_out, 1) if n_in != n_out else None

    @property
    def window(self) -> int:
        """Inputs one output of either convolution reads."""
        return conv_window(self.conv2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dropout(torch.relu(self.conv1(x)))
        h = self.dropout(torch.relu(self.conv2(h)))
        res = x if self.downsample is None else self.downsample(x)
        return torch.relu(h + crop_front(res, h.shape[-1]))


class TCN(SingleRateNetwork):
    config_class = TCNConfig
    kind = "tcn"

    def __init__(self, config: TCNConfig) -> None:
        super().__init__()
        self.config = config
        widths = [config.classes] + [config.channels] * config.levels
        self.blocks = nn.ModuleList(
            TemporalBlock(widths[i], widths[i + 1], config.kernel_size, 2**i, config.dropout)
            for i in range(config.levels)
        )
        self.head = nn.Conv1d(config.channels, config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    @property
    def receptive_field(self) -> int:
        return sum(2 * (block.window - 1) for block in self.blocks) + 1


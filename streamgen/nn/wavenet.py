"""WaveNet baseline: dilated gated layers with residual and skip 1x1 convolutions.

As in the Seq-U-Net paper's audio comparison: ``blocks`` blocks of ``layers`` layers with
dilations 1, 2, ..., 2**(layers-1), kernel 2, a 1x1 start convolution over the one-hot input,
and skip sum -> ReLU -> 1x1 -> ReLU -> 1x1. All convolutions carry a bias.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamgen.nn.base import NetworkConfig, SingleRateNetwork
from streamgen.nn.layers import conv_window, crop_front


@dataclass(frozen=True)
class WaveNetConfig(NetworkConfig):
    blocks: int = 4
    layers: int = 13
    kernel_size: int = 2
    residual_channels: int = 128
    dilation_channels: int = 128
    skip_channels: int = 512
    classes: int = 256

    def __post_init__(self) -> None:
        if self.blocks < 1 or self.layers < 1 or self.kernel_size < 2:
            raise ValueError(f"need blocks, layers >= 1 and kernel_size >= 2: {self}")


class WaveNetLayer(nn.Module):
    """Dilated gated convolution with residual and skip 1x1 outputs."""

    def __init__(self, cfg: WaveNetConfig, dilation: int) -> None:
        super().__init__()
        self.dilation = dilation
        r, d, s = cfg.residual_channels, cfg.dilation_channels, cfg.skip_channels
        self.filter = nn.Conv1d(r, d, cfg.kernel_size, dilation=dilation)
        self.gate = nn.Conv1d(r, d, cfg.kernel_size, dilation=dilation)
        self.residual = nn.Conv1d(d, r, 1)
        self.skip = nn.Conv1d(d, s, 1)

    @property
    def window(self) -> int:
        """Inputs one output of this layer reads: (kernel_size - 1) * dilation + 1."""
        return conv_window(self.filter)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x))
        return crop_front(x, h.shape[-1]) + self.residual(h), self.skip(h)


class WaveNet(SingleRateNetwork):
    config_class = WaveNetConfig
    kind = "wavenet"

    def __init__(self, config: WaveNetConfig) -> None:
        super().__init__()
        self.config = config
        self.start = nn.Conv1d(config.classes, config.residual_channels, 1)
        self.layers = nn.ModuleList(
            WaveNetLayer(config, 2**i) for _ in range(config.blocks) for i in range(config.layers)
        )
        self.end1 = nn.Conv1d(config.skip_channels, config.skip_channels, 1)
        self.end2 = nn.Conv1d(config.skip_channels, config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.start(x)
        skip: torch.Tensor | None = None
        for layer in self.layers:
            h, s = layer(h)
            skip = s if skip is None else crop_front(skip, s.shape[-1]) + s
        assert skip is not None
        return self.end2(F.relu(self.end1(F.relu(skip))))

    @property
    def receptive_field(self) -> int:
        return sum(layer.window - 1 for layer in self.layers) + 1


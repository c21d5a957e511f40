"""Seq-U-Net: the residual, gated, one-dimensional causal U-Net for raw audio.

The computation of Stoller et al. (IJCAI 2020) as streamgen defines it: valid convolutions, right
alignment, decimation that keeps the last sample, sample-and-hold upsampling identity, the
decoder stream restarting from the skip, ``[stream; upsampled]`` into the decoder's gated
convolutions, ReLU + 1x1 head. Level ``l`` runs at 1/2**l of the sample rate; on a grid fixed
in absolute time its frames sit at the times ``t`` with ``(t + 1) % 2**l == 0`` when the
sequence length is a multiple of ``period``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamgen.nn.base import MultiRateNetwork, NetworkConfig
from streamgen.nn.layers import GatedResidual, check_odd_kernel, crop_front


@dataclass(frozen=True)
class SeqUNetConfig(NetworkConfig):
    """Width ``channels`` everywhere, ``levels`` levels, ``depth`` plain layers per block."""

    channels: int = 64
    levels: int = 6
    depth: int = 2
    kernel_size: int = 5
    classes: int = 256

    def __post_init__(self) -> None:
        if self.levels < 1 or self.depth < 1 or self.channels < 1:
            raise ValueError(f"levels, depth and channels must be >= 1: {self}")
        check_odd_kernel(self.kernel_size)


class EncoderLevel(nn.Module):
    """``depth`` plain layers (their output is the level's skip), then one down layer."""

    def __init__(self, cfg: SeqUNetConfig) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            GatedResidual(cfg.channels, cfg.kernel_size) for _ in range(cfg.depth)
        )
        self.down = GatedResidual(cfg.channels, cfg.kernel_size, kind="down")


class DecoderLevel(nn.Module):
    """One up layer, then ``depth`` plain layers over ``[stream; upsampled]``."""

    def __init__(self, cfg: SeqUNetConfig) -> None:
        super().__init__()
        self.up = GatedResidual(cfg.channels, cfg.kernel_size, kind="up")
        self.convs = nn.ModuleList(
            GatedResidual(cfg.channels, cfg.kernel_size, cond_channels=cfg.channels)
            for _ in range(cfg.depth)
        )


class SeqUNet(MultiRateNetwork):
    """Causal U-Net over one-hot mu-law audio ``(B, classes, T)`` -> logits ``(B, classes, T')``.

    ``encoder[l]`` and ``decoder[L-2-l]`` work at level ``l``; ``decoder`` runs coarse to fine.
    """

    config_class = SeqUNetConfig
    kind = "sequnet"

    def __init__(self, config: SeqUNetConfig) -> None:
        super().__init__()
        self.config = config
        c, k = config.channels, config.kernel_size
        # Registered in data-flow order: input conv, encoder, bottleneck, decoder, head.
        self.input_conv = nn.Conv1d(config.classes, c, k)
        self.encoder = nn.ModuleList(EncoderLevel(config) for _ in range(config.levels - 1))
        self.bottleneck = nn.ModuleList(GatedResidual(c, k) for _ in range(config.depth))
        self.decoder = nn.ModuleList(DecoderLevel(config) for _ in range(config.levels - 1))
        self.head = nn.Conv1d(c, config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the last ``output_length(T)`` times of ``x`` (B, classes, T), any ``T``
        (see ``drop_unread_history``)."""
        h = self.input_conv(self.drop_unread_history(x))
        skips = []
        for enc in self.encoder:
            for layer in enc.convs:
                h = layer(h)
            skips.append(h)
            h = enc.down(h)
        for layer in self.bottleneck:
            h = layer(h)
        for dec, skip in zip(self.decoder, reversed(skips)):
            upsampled = dec.up(h)
            h = crop_front(skip, upsampled.shape[-1])
            for layer in dec.convs:
                h = layer(h, upsampled)
        return self.head(F.relu(h))

    # -- length arithmetic, walked through the layer definitions -------------------------
    def output_length(self, input_length: int) -> int:
        n = input_length - self.config.kernel_size + 1
        skip_lengths = []
        for enc in self.encoder:
            for layer in enc.convs:
                n = layer.output_length(n)
            skip_lengths.append(n)
            n = enc.down.output_length(n)
        for layer in self.bottleneck:
            n = layer.output_length(n)
        for dec, skip_n in zip(self.decoder, reversed(skip_lengths)):
            n = min(dec.up.output_length(n), skip_n)
            for layer in dec.convs:
                n = layer.output_length(n)
        return max(n, 0)

    def input_length(self, output_length: int) -> int:
        n = output_length
        for dec in reversed(self.decoder):
            for layer in reversed(dec.convs):
                n = layer.input_length(n)
            n = dec.up.input_length(n)
        for layer in reversed(self.bottleneck):
            n = layer.input_length(n)
        for enc in reversed(self.encoder):
            n = enc.down.input_length(n)
            for layer in reversed(enc.convs):
                n = layer.input_length(n)
        return n + self.config.kernel_size - 1

"""The plain Seq-U-Net of the paper's symbolic tasks, over piano-roll frames.

Stoller et al. (IJCAI 2020) compare this non-residual variant with a TCN on polyphonic
music: every unit is a convolution, LeakyReLU(0.01) and dropout. At each upper level the
encoder runs a stride-1 convolution (its output is the level's skip) and a stride-2
convolution; the bottleneck is one convolution; each decoder level upsamples with a
stride-2 transposed convolution, concatenates ``[upsampled; skip]`` and convolves back to the
width; a 1x1 convolution gives one logit per key (independent Bernoulli outputs).

Convolutions are valid and right-aligned like the audio networks' (decimation keeps the last
step, the transposed convolution is cropped to zero lag); ``forward_from_start`` gives one
output per input step with zero frames before the first. The reference instead zero-pads
every convolution and aligns the level clock with the end of each piece; both are causal, and
they differ only in the first receptive field of a piece. The convention here is the audio
networks' and the streaming engine's. The TCN of the same comparison is
:class:`streamgen.nn.TCN` with ``classes=88``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from streamgen.nn.base import MultiRateNetwork, NetworkConfig
from streamgen.nn.layers import (
    ConvKind,
    check_odd_kernel,
    conv_input_length,
    conv_output_length,
    crop_front,
    crop_transposed,
)

KEYS = 88


@dataclass(frozen=True)
class PlainSeqUNetConfig(NetworkConfig):
    """Width ``channels`` everywhere, ``levels`` levels, odd ``kernel_size``; ``classes`` keys in and out."""

    channels: int = 150
    levels: int = 4
    kernel_size: int = 5
    dropout: float = 0.2
    classes: int = KEYS

    def __post_init__(self) -> None:
        if self.levels < 1 or self.channels < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"need levels >= 1, channels >= 1, 0 <= dropout < 1: {self}")
        check_odd_kernel(self.kernel_size)


class ConvUnit(nn.Module):
    """``dropout(leaky_relu(conv(x)))`` with a valid convolution of ``kind`` (plain, down or up)."""

    def __init__(self, n_in: int, n_out: int, kernel_size: int, kind: ConvKind, dropout: float) -> None:
        super().__init__()
        self.kind: ConvKind = kind
        self.kernel_size = kernel_size
        conv = nn.ConvTranspose1d if kind == "up" else nn.Conv1d
        self.conv = conv(n_in, n_out, kernel_size, stride=1 if kind == "plain" else 2)
        self.dropout = nn.Dropout(dropout)

    def output_length(self, n: int) -> int:
        return conv_output_length(self.kind, self.kernel_size, n)

    def input_length(self, m: int) -> int:
        return conv_input_length(self.kind, self.kernel_size, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.kind == "up":
            y = crop_transposed(y, self.kernel_size)
        return self.dropout(F.leaky_relu(y, 0.01))


class PlainEncoderLevel(nn.Module):
    """``conv`` (stride 1, its output is the skip), then ``down`` (stride 2)."""

    def __init__(self, n_in: int, cfg: PlainSeqUNetConfig) -> None:
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.conv = ConvUnit(n_in, c, k, "plain", cfg.dropout)
        self.down = ConvUnit(c, c, k, "down", cfg.dropout)


class PlainDecoderLevel(nn.Module):
    """``up`` (transposed, stride 2), then ``conv`` over ``[upsampled; skip]``."""

    def __init__(self, cfg: PlainSeqUNetConfig) -> None:
        super().__init__()
        c, k = cfg.channels, cfg.kernel_size
        self.up = ConvUnit(c, c, k, "up", cfg.dropout)
        self.conv = ConvUnit(2 * c, c, k, "plain", cfg.dropout)


class PlainSeqUNet(MultiRateNetwork):
    """Causal plain U-Net over frames ``(B, classes, T)`` -> logits ``(B, classes, T')``.

    ``encoder[l]`` and ``decoder[L-2-l]`` work at level ``l``; ``decoder`` runs coarse to fine.
    Parameters match the reference (``Sequnet`` of the authors' code) one for one.
    """

    config_class = PlainSeqUNetConfig
    kind = "plain_sequnet"

    def __init__(self, config: PlainSeqUNetConfig) -> None:
        super().__init__()
        self.config = config
        c, k = config.channels, config.kernel_size
        widths = [config.classes] + [c] * (config.levels - 1)
        self.encoder = nn.ModuleList(PlainEncoderLevel(w, config) for w in widths[:-1])
        self.bottleneck = ConvUnit(widths[-1], c, k, "plain", config.dropout)
        self.decoder = nn.ModuleList(PlainDecoderLevel(config) for _ in range(config.levels - 1))
        self.head = nn.Conv1d(c, config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the last ``output_length(T)`` steps of ``x`` (B, classes, T), any ``T``
        (see ``drop_unread_history``)."""
        x = self.drop_unread_history(x)
        skips = []
        for enc in self.encoder:
            x = enc.conv(x)
            skips.append(x)
            x = enc.down(x)
        x = self.bottleneck(x)
        for dec, skip in zip(self.decoder, reversed(skips)):
            upsampled = dec.up(x)
            x = dec.conv(torch.cat([upsampled, crop_front(skip, upsampled.shape[-1])], dim=1))
        return self.head(x)

    # -- length arithmetic, walked through the layer definitions -------------------------
    def output_length(self, input_length: int) -> int:
        n = input_length
        skip_lengths = []
        for enc in self.encoder:
            n = enc.conv.output_length(n)
            skip_lengths.append(n)
            n = enc.down.output_length(n)
        n = self.bottleneck.output_length(n)
        for dec, skip_n in zip(self.decoder, reversed(skip_lengths)):
            n = dec.conv.output_length(min(dec.up.output_length(n), skip_n))
        return max(n, 0)

    def input_length(self, output_length: int) -> int:
        n = output_length
        for dec in reversed(self.decoder):
            n = dec.up.input_length(dec.conv.input_length(n))
        n = self.bottleneck.input_length(n)
        for enc in reversed(self.encoder):
            n = enc.conv.input_length(enc.down.input_length(n))
        return n

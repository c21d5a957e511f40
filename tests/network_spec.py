"""The four networks written out from their definitions (``shared/design/seq-unet.md``, the
WaveNet and TCN papers) in absolute time: an independent float64 reference for the offline
forward pass.

A signal is a dict ``{time: vector}``. Level ``l`` of a U-Net holds frames at the times ``t``
with ``(t + 1) % 2**l == 0`` (the grid of a sequence whose length is a multiple of the
period). A convolution reads its ``k`` taps ``step`` apart, the last at its own time, and is
defined where every tap is: nothing here crops, pads, or uses the library's length arithmetic
or layer classes; the modules are read only for their weights.
"""

from __future__ import annotations

import numpy as np
import torch

Signal = dict[int, np.ndarray]


def weights(conv: torch.nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, bias)`` in float64; a weight-normalised weight is ``g * v / |v|`` per output
    channel, computed here from ``g`` and ``v``."""
    if hasattr(conv, "parametrizations"):
        norm = conv.parametrizations.weight
        g, v = (p.detach().double().numpy() for p in (norm.original0, norm.original1))
        w = g * v / np.sqrt((v**2).sum(axis=(1, 2), keepdims=True))
    else:
        w = conv.weight.detach().double().numpy()
    return w, conv.bias.detach().double().numpy()


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def leaky_relu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, 0.01 * x)


def relu(x: Signal) -> Signal:
    return {t: np.maximum(v, 0) for t, v in x.items()}


def conv(module: torch.nn.Module, x: Signal, times: list[int], step: int) -> Signal:
    """``y(t) = b + sum_j W[:, :, j] x(t - (k - 1 - j) * step)`` (a Conv1d's weight)."""
    w, b = weights(module)
    k = w.shape[-1]
    out = {}
    for t in times:
        taps = [(j, t - (k - 1 - j) * step) for j in range(k)]
        if all(s in x for _, s in taps):
            out[t] = b + sum(w[:, :, j] @ x[s] for j, s in taps)
    return out


def up_conv(module: torch.nn.Module, coarse: Signal, times: list[int], step: int) -> Signal:
    """A stride-2 transposed convolution from frames ``2 * step`` apart to frames ``step``
    apart, zero lag: output ``m`` sums tap ``j`` of input ``i`` where ``2i + j = m``, and the
    output on an input's own time is ``m = 2i``. So a fine time that is also a coarse one
    reads the even taps back from itself, a fine time between two coarse ones the odd taps
    back from the coarse frame before it. (A ConvTranspose1d's weight is ``(in, out, k)``.)"""
    w, b = weights(module)
    k = w.shape[-1]
    out = {}
    for t in times:
        last, first_tap = (t, 0) if (t + 1) % (2 * step) == 0 else (t - step, 1)
        taps = [(j, last - (j // 2) * 2 * step) for j in range(first_tap, k, 2)]
        if all(s in coarse for _, s in taps):
            out[t] = b + sum(w[:, :, j].T @ coarse[s] for j, s in taps)
    return out


def hold(coarse: Signal, times: list[int], step: int) -> Signal:
    """Sample and hold: each fine time takes the newest coarse frame at or before it."""
    return {t: coarse[s] for t in times
            if (s := t if (t + 1) % (2 * step) == 0 else t - step) in coarse}


def join(a: Signal, b: Signal) -> Signal:
    """``[a; b]`` on channels where both exist."""
    return {t: np.concatenate([a[t], b[t]]) for t in a if t in b}


def gated(layer: torch.nn.Module, x: Signal, times: list[int], step: int, kind: str = "plain",
          cond: Signal | None = None) -> Signal:
    """``identity(x) + tanh(f(z)) * sigmoid(g(z))``, ``z = x`` or ``[x; cond]``; identity is
    ``x`` (plain, down: the frame at the output's own time) or sample and hold (up)."""
    z = x if cond is None else join(x, cond)
    if kind == "up":
        f, g, identity = (up_conv(layer.filter, z, times, step), up_conv(layer.gate, z, times, step),
                          hold(x, times, step))
    else:
        f, g, identity = conv(layer.filter, z, times, step), conv(layer.gate, z, times, step), x
    return {t: identity[t] + np.tanh(f[t]) * sigmoid(g[t]) for t in f if t in identity}


def pointwise(module: torch.nn.Module, x: Signal) -> Signal:
    return conv(module, x, list(x), 1)


def grid(level: int, length: int) -> list[int]:
    return [t for t in range(length) if (t + 1) % 2**level == 0]


def sequnet(model: torch.nn.Module, x: Signal, length: int) -> Signal:
    """seq-unet.md's network: input conv; per upper level D plain layers (the skip) and a down
    layer; D bottleneck layers; per level coarse to fine an up layer, the stream restarting
    from the skip, D plain layers over ``[stream; upsampled]``; ReLU and a 1x1 head."""
    h = conv(model.input_conv, x, grid(0, length), 1)
    skips = []
    for level, enc in enumerate(model.encoder):
        for layer in enc.convs:
            h = gated(layer, h, grid(level, length), 2**level)
        skips.append(h)
        h = gated(enc.down, h, grid(level + 1, length), 2**level, "down")
    coarsest = len(model.encoder)
    for layer in model.bottleneck:
        h = gated(layer, h, grid(coarsest, length), 2**coarsest)
    for level, dec, skip in zip(reversed(range(coarsest)), model.decoder, reversed(skips)):
        upsampled = gated(dec.up, h, grid(level, length), 2**level, "up")
        assert set(upsampled) <= set(skip)
        h = {t: skip[t] for t in upsampled}
        for layer in dec.convs:
            h = gated(layer, h, grid(level, length), 2**level, cond=upsampled)
    return pointwise(model.head, relu(h))


def plain_sequnet(model: torch.nn.Module, x: Signal, length: int) -> Signal:
    """The symbolic tasks' plain U-Net: every unit ``leaky_relu(conv)`` (dropout off); per upper
    level a stride-1 unit (the skip) and a stride-2 unit; one bottleneck unit; per level an up
    unit and a unit over ``[upsampled; skip]``; a 1x1 head."""
    def unit(module: torch.nn.Module, x: Signal, level: int, step: int, up: bool = False) -> Signal:
        y = (up_conv if up else conv)(module.conv, x, grid(level, length), step)
        return {t: leaky_relu(v) for t, v in y.items()}

    skips = []
    for level, enc in enumerate(model.encoder):
        x = unit(enc.conv, x, level, 2**level)
        skips.append(x)
        x = unit(enc.down, x, level + 1, 2**level)
    coarsest = len(model.encoder)
    x = unit(model.bottleneck, x, coarsest, 2**coarsest)
    for level, dec, skip in zip(reversed(range(coarsest)), model.decoder, reversed(skips)):
        x = unit(dec.conv, join(unit(dec.up, x, level, 2**level, up=True), skip), level, 2**level)
    return pointwise(model.head, x)


def wavenet(model: torch.nn.Module, x: Signal, length: int) -> Signal:
    """1x1 start; per layer (dilations 1, 2, 4, ... per block) ``z = tanh(f) * sigmoid(g)``,
    the stream ``+ 1x1(z)``, the skip ``1x1(z)`` summed over layers; ReLU, 1x1, ReLU, 1x1."""
    h = pointwise(model.start, x)
    skip: Signal | None = None
    for i, layer in enumerate(model.layers):
        dilation = 2 ** (i % model.config.layers)
        f, g = (conv(c, h, list(h), dilation) for c in (layer.filter, layer.gate))
        z = {t: np.tanh(f[t]) * sigmoid(g[t]) for t in f}
        residual, s = pointwise(layer.residual, z), pointwise(layer.skip, z)
        h = {t: h[t] + residual[t] for t in z}
        skip = s if skip is None else {t: skip[t] + s[t] for t in s}
    assert skip is not None
    return pointwise(model.end2, relu(pointwise(model.end1, relu(skip))))


def tcn(model: torch.nn.Module, x: Signal, length: int) -> Signal:
    """Per block ``i`` (dilation ``2**i``): ``relu(relu(conv2(relu(conv1(x)))) + res(x))``,
    ``res`` a 1x1 convolution where the width changes (dropout off); a 1x1 head."""
    for i, block in enumerate(model.blocks):
        h = relu(conv(block.conv2, relu(conv(block.conv1, x, list(x), 2**i)), list(x), 2**i))
        widens = i == 0 and model.config.classes != model.config.channels
        res = pointwise(block.downsample, x) if widens else x
        x = relu({t: v + res[t] for t, v in h.items()})
    return pointwise(model.head, x)


SPECS = {"sequnet": sequnet, "plain_sequnet": plain_sequnet, "wavenet": wavenet, "tcn": tcn}


def spec_outputs(model: torch.nn.Module, x: torch.Tensor) -> tuple[np.ndarray, list[int]]:
    """``x`` (classes, T), ``T`` a multiple of the period -> the spec's outputs ``(classes, n)``
    at every time they are defined, and those times."""
    length = x.shape[-1]
    frames = {t: x[:, t].double().numpy() for t in range(length)}
    out = SPECS[model.kind](model, frames, length)
    times = sorted(out)
    return np.stack([out[t] for t in times], axis=1), times

"""Step-mode kernels: one output frame from a ring window, written into a caller's buffer.

Each kernel copies the trained layer's weights once, at construction, into the layout its
matrix products want, and preallocates its scratch; ``compute`` then works with ``out=``
operations only, so the per-sample loop allocates no tensor storage.
"""

from __future__ import annotations

import torch
from torch import nn

from streamgen.engine.ring import FrameRing


def _conv_weight(conv: nn.Module) -> torch.Tensor:
    """The effective weight of a (possibly weight-normalised) convolution, detached."""
    return conv.weight.detach()


class TapConv:
    """``bias + sum_q W[:, :, q] @ x[t - (k-1-q) * dilation]`` over a ring at its own rate.

    Dilation 1 reads the whole window as one flat slice (one matrix product); larger
    dilations multiply each tap separately.
    """

    def __init__(
        self, weight: torch.Tensor, bias: torch.Tensor | None, ring: FrameRing, dilation: int = 1
    ) -> None:
        out_ch, in_ch, k = weight.shape
        if ring.window_size != (k - 1) * dilation + 1 or ring.channels != in_ch:
            raise ValueError("ring does not match the convolution's span")
        dtype, device = ring.data.dtype, ring.data.device
        self.ring, self.k, self.dilation = ring, k, dilation
        w = weight.to(device=device, dtype=dtype)
        if dilation == 1:
            # (k * in, out): rows ordered tap-major to match the flattened window
            self.flat = w.permute(2, 1, 0).reshape(k * in_ch, out_ch).contiguous()
        else:
            self.taps = [w[:, :, q].t().contiguous() for q in range(k)]
        b = torch.zeros(out_ch) if bias is None else bias.detach()
        self.bias = b.to(device=device, dtype=dtype).expand(ring.data.shape[0], out_ch)

    def compute(self, out: torch.Tensor) -> torch.Tensor:
        if self.dilation == 1:
            return torch.addmm(self.bias, self.ring.flat_window(), self.flat, out=out)
        ring, d, k = self.ring, self.dilation, self.k
        torch.addmm(self.bias, ring.frame((k - 1) * d), self.taps[0], out=out)
        for q in range(1, k):
            out.addmm_(ring.frame((k - 1 - q) * d), self.taps[q])
        return out


def _stack_filter_gate(filter_w: torch.Tensor, gate_w: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cat([filter_w.detach(), gate_w.detach()], dim=dim)


def _gate(pre: torch.Tensor, channels: int, identity: torch.Tensor, out: torch.Tensor) -> None:
    """``out = identity + tanh(pre[:, :C]) * sigmoid(pre[:, C:])``, in place over ``pre``."""
    f, g = pre[:, :channels], pre[:, channels:]
    f.tanh_()
    g.sigmoid_()
    torch.addcmul(identity, f, g, out=out)


class GatedStep:
    """``identity + tanh(filter) * sigmoid(gate)`` for a plain or down ``GatedResidual``.

    The identity is the newest input frame (its first ``channels`` channels): front cropping
    for plain layers, decimation keeping the last sample for down layers.
    """

    def __init__(self, layer: nn.Module, ring: FrameRing) -> None:
        c = layer.channels
        weight = _stack_filter_gate(layer.filter.weight, layer.gate.weight, 0)
        bias = _stack_filter_gate(layer.filter.bias, layer.gate.bias, 0)
        self.conv = TapConv(weight, bias, ring)
        self.ring, self.channels = ring, c
        self.scratch = torch.empty(ring.data.shape[0], 2 * c, dtype=ring.data.dtype,
                                   device=ring.data.device)

    def compute(self, out: torch.Tensor) -> None:
        c = self.channels
        _gate(self.conv.compute(self.scratch), c, self.ring.newest()[:, :c], out)


class UpStep:
    """A transposed-conv ``GatedResidual`` (stride 2) evaluated one fine frame at a time.

    The ring holds the coarse input. On a coarse tick the fine output uses the even taps
    ``w[k-1], w[k-3], ..., w[0]`` over the newest ``(k+1)/2`` coarse frames; on the step in
    between it uses the odd taps over the newest ``(k-1)/2``. The identity is sample-and-hold:
    the newest coarse frame.
    """

    def __init__(self, layer: nn.Module, ring: FrameRing) -> None:
        k, c = layer.kernel_size, layer.channels
        if ring.window_size != (k + 1) // 2:
            raise ValueError("up ring must hold (k+1)/2 coarse frames")
        w = _stack_filter_gate(layer.filter.weight, layer.gate.weight, 1)  # (in, 2c, k)
        dtype, device = ring.data.dtype, ring.data.device
        w = w.to(device=device, dtype=dtype)
        # window position q (0 = oldest) pairs with tap k-1-2q (even) / k-2q (odd, q >= 1)
        self.even = torch.cat([w[:, :, k - 1 - 2 * q] for q in range((k + 1) // 2)], 0).contiguous()
        self.odd = torch.cat([w[:, :, k - 2 * q] for q in range(1, (k + 1) // 2)], 0).contiguous()
        bias = _stack_filter_gate(layer.filter.bias, layer.gate.bias, 0).to(device=device, dtype=dtype)
        self.bias = bias.expand(ring.data.shape[0], 2 * c)
        self.ring, self.channels = ring, c
        self.scratch = torch.empty(ring.data.shape[0], 2 * c, dtype=dtype, device=device)

    def compute(self, on_tick: bool, out: torch.Tensor) -> None:
        ring = self.ring
        if on_tick:
            torch.addmm(self.bias, ring.flat_window(), self.even, out=self.scratch)
        else:
            torch.addmm(self.bias, ring.flat_window(ring.window_size - 1), self.odd, out=self.scratch)
        _gate(self.scratch, self.channels, ring.newest(), out)


class OneHotConv:
    """A convolution over one-hot classes as a table lookup over a ring of class indices.

    Index ``classes`` stands for the all-zero input vector (history before a stream starts).
    """

    def __init__(
        self, conv: nn.Module, ring: FrameRing, classes: int, dtype: torch.dtype, dilation: int = 1
    ) -> None:
        w = _conv_weight(conv)  # (out, classes, k)
        out_ch, _, k = w.shape
        if ring.window_size != (k - 1) * dilation + 1 or ring.channels != 1:
            raise ValueError("index ring must span the convolution's taps")
        self.dilation = dilation
        device, batch = ring.data.device, ring.data.shape[0]
        table = torch.zeros(k, classes + 1, out_ch, dtype=w.dtype)
        table[:, :classes] = w.permute(2, 1, 0)
        self.table = table.reshape(k * (classes + 1), out_ch).to(device=device, dtype=dtype)
        self.offsets = (torch.arange(k, device=device) * (classes + 1)).expand(batch, k)
        self.bias = conv.bias.detach().to(device=device, dtype=dtype)
        self.ring, self.k = ring, k
        self.index = torch.empty(batch, k, dtype=torch.int64, device=device)
        self.rows = torch.empty(batch * k, out_ch, dtype=dtype, device=device)

    def compute(self, out: torch.Tensor) -> torch.Tensor:
        torch.add(self.ring.flat_window()[:, :: self.dilation], self.offsets, out=self.index)
        torch.index_select(self.table, 0, self.index.view(-1), out=self.rows)
        torch.sum(self.rows.view(-1, self.k, self.rows.shape[1]), dim=1, out=out)
        return out.add_(self.bias)


class Dense:
    """``out = W x + b`` for a 1x1 convolution, weights transposed once."""

    def __init__(self, conv: nn.Module, like: torch.Tensor) -> None:
        w = _conv_weight(conv)[:, :, 0]
        self.weight = w.t().contiguous().to(device=like.device, dtype=like.dtype)
        self.bias = conv.bias.detach().to(device=like.device, dtype=like.dtype)

    def compute(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.expand(x.shape[0], -1), x, self.weight, out=out)


class OneHotDense:
    """A 1x1 convolution over one-hot classes: a row lookup by the newest index."""

    def __init__(self, conv: nn.Module, ring: FrameRing, classes: int, dtype: torch.dtype) -> None:
        w = _conv_weight(conv)[:, :, 0]  # (out, classes)
        device = ring.data.device
        table = torch.zeros(classes + 1, w.shape[0], dtype=w.dtype)
        table[:classes] = w.t()
        self.table = table.to(device=device, dtype=dtype)
        self.bias = conv.bias.detach().to(device=device, dtype=dtype)
        self.ring = ring

    def compute(self, out: torch.Tensor) -> torch.Tensor:
        torch.index_select(self.table, 0, self.ring.newest().view(-1), out=out)
        return out.add_(self.bias)

"""Step kernels: one output frame of one layer from its ring, written into a caller's buffer.

Each kernel copies the trained layer's weights once, at construction, into the layout its
matrix products want, and preallocates its scratch; ``compute`` then works with ``out=``
operations only, so the per-sample loop allocates no tensor storage. ``macs`` counts the
multiply-accumulates of one call (a one-hot lookup counts one per output value).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from streamgen.engine.clock import zero_index
from streamgen.engine.plan import Taps
from streamgen.engine.ring import FrameRing
from streamgen.nn.layers import conv_window


def _weight(conv: nn.Module) -> torch.Tensor:
    """The effective weight of a (possibly weight-normalised) convolution, detached."""
    return conv.weight.detach()


def _bias(conv: nn.Module, like: torch.Tensor) -> torch.Tensor:
    return conv.bias.detach().to(device=like.device, dtype=like.dtype)


def _scratch(ring: FrameRing, width: int) -> torch.Tensor:
    return torch.empty(ring.data.shape[0], width, dtype=ring.data.dtype, device=ring.data.device)


def _only_all_taps(taps: Taps) -> None:
    if taps != Taps.ALL:
        raise ValueError("only a stride-2 up layer has even and odd taps")


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
        self.in_ch, self.out_ch = in_ch, out_ch
        w = weight.to(device=device, dtype=dtype)
        if dilation == 1:
            # (k * in, out): rows ordered tap-major to match the flattened window
            self.flat = w.permute(2, 1, 0).reshape(k * in_ch, out_ch).contiguous()
        else:
            self.taps = [w[:, :, q].t().contiguous() for q in range(k)]
        b = torch.zeros(out_ch) if bias is None else bias.detach()
        self.bias = b.to(device=device, dtype=dtype).expand(ring.data.shape[0], out_ch)

    def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> torch.Tensor:
        if self.dilation == 1:
            return torch.addmm(self.bias, self.ring.flat_window(), self.flat, out=out)
        ring, d, k = self.ring, self.dilation, self.k
        torch.addmm(self.bias, ring.frame((k - 1) * d), self.taps[0], out=out)
        for q in range(1, k):
            out.addmm_(ring.frame((k - 1 - q) * d), self.taps[q])
        return out

    def macs(self, taps: Taps = Taps.ALL) -> int:
        _only_all_taps(taps)
        return self.k * self.in_ch * self.out_ch


def _stack_filter_gate(filter_w: torch.Tensor, gate_w: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.cat([filter_w.detach(), gate_w.detach()], dim=dim)


def _gate(pre: torch.Tensor, channels: int, identity: torch.Tensor, out: torch.Tensor) -> None:
    """``out = identity + tanh(pre[:, :C]) * sigmoid(pre[:, C:])``, in place over ``pre``."""
    f, g = pre[:, :channels], pre[:, channels:]
    f.tanh_()
    g.sigmoid_()
    torch.addcmul(identity, f, g, out=out)


#: A kernel computing ``out = identity + tanh(x @ w[:, :C] + b[:C]) * sigmoid(x @ w[:, C:] +
#: b[C:])`` in one launch, called as ``fuse(x, w, b, identity, out)``
#: (``streamgen.engine.gpu.fused_gate.fused_gated``).
FusedGate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                     torch.Tensor]


class GatedStep:
    """``identity + tanh(filter) * sigmoid(gate)`` for a plain or down ``GatedResidual``.

    The identity is the newest input frame (its first ``channels`` channels): front cropping
    for plain layers, decimation keeping the last sample for down layers. ``fuse``: a kernel
    doing the product and the gating in one launch instead of four (None: torch's).
    """

    fuse: FusedGate | None = None

    def __init__(self, layer: nn.Module, ring: FrameRing) -> None:
        c = layer.channels
        weight = _stack_filter_gate(layer.filter.weight, layer.gate.weight, 0)
        bias = _stack_filter_gate(layer.filter.bias, layer.gate.bias, 0)
        self.conv = TapConv(weight, bias, ring)
        self.ring, self.channels = ring, c
        self.scratch = _scratch(ring, 2 * c)

    def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> None:
        c = self.channels
        if self.fuse is not None:
            self.fuse(self.ring.flat_window(), self.conv.flat, self.conv.bias[0],
                      self.ring.newest()[:, :c], out)
            return
        _gate(self.conv.compute(self.scratch), c, self.ring.newest()[:, :c], out)

    def macs(self, taps: Taps = Taps.ALL) -> int:
        _only_all_taps(taps)
        return self.conv.macs()


def transposed_taps(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stride-2 transposed convolution's weight ``(in, out, k)`` as two matrices over the
    flattened window of its newest coarse frames: even taps ``w[k-1], w[k-3], ..., w[0]``
    over ``(k+1)/2`` frames (the fine output on a coarse tick), odd taps ``w[k-2], ..., w[1]``
    over ``(k-1)/2`` frames (the output in between). Window position ``q`` (0 = oldest) pairs
    with tap ``k-1-2q`` (even) and ``k-2q`` (odd, ``q >= 1``)."""
    k = w.shape[2]
    even = torch.cat([w[:, :, k - 1 - 2 * q] for q in range((k + 1) // 2)], 0).contiguous()
    odd = torch.cat([w[:, :, k - 2 * q] for q in range(1, (k + 1) // 2)], 0).contiguous()
    return even, odd


def _tap_operands(ring: FrameRing, even: torch.Tensor, odd: torch.Tensor,
                  taps: Taps) -> tuple[torch.Tensor, torch.Tensor]:
    """(flattened window, matrix) of a stride-2 transposed convolution's even or odd taps."""
    if taps == Taps.EVEN:
        return ring.flat_window(), even
    if taps == Taps.ODD:
        return ring.flat_window(ring.window_size - 1), odd
    raise ValueError("an up layer runs its even or its odd taps")


def _transposed(ring: FrameRing, even: torch.Tensor, odd: torch.Tensor, bias: torch.Tensor,
                taps: Taps, out: torch.Tensor) -> torch.Tensor:
    """``bias + taps @ window`` of a stride-2 transposed convolution for one fine frame."""
    window, weight = _tap_operands(ring, even, odd, taps)
    return torch.addmm(bias, window, weight, out=out)


class UpStep:
    """A transposed-conv ``GatedResidual`` (stride 2) evaluated one fine frame at a time.

    The ring holds the coarse input; the gate's pre-activations come from the even or odd
    taps (``transposed_taps``). The identity is sample-and-hold: the newest coarse frame.
    ``fuse`` as ``GatedStep``'s.
    """

    fuse: FusedGate | None = None

    def __init__(self, layer: nn.Module, ring: FrameRing) -> None:
        c = layer.channels
        if ring.window_size != layer.window:
            raise ValueError("up ring must hold (k+1)/2 coarse frames")
        w = _stack_filter_gate(layer.filter.weight, layer.gate.weight, 1)  # (in, 2c, k)
        dtype, device = ring.data.dtype, ring.data.device
        self.even, self.odd = transposed_taps(w.to(device=device, dtype=dtype))
        bias = _stack_filter_gate(layer.filter.bias, layer.gate.bias, 0).to(device=device, dtype=dtype)
        self.bias = bias.expand(ring.data.shape[0], 2 * c)
        self.ring, self.channels = ring, c
        self.scratch = _scratch(ring, 2 * c)

    def compute(self, out: torch.Tensor, taps: Taps) -> None:
        if self.fuse is not None:
            window, weight = _tap_operands(self.ring, self.even, self.odd, taps)
            self.fuse(window, weight, self.bias[0], self.ring.newest(), out)
            return
        _transposed(self.ring, self.even, self.odd, self.bias, taps, self.scratch)
        _gate(self.scratch, self.channels, self.ring.newest(), out)

    def macs(self, taps: Taps) -> int:
        weight = self.even if taps == Taps.EVEN else self.odd
        return weight.shape[0] * weight.shape[1]


class TransposedStep:
    """A plain stride-2 transposed convolution, one fine frame at a time (even or odd taps)."""

    def __init__(self, conv: nn.Module, ring: FrameRing) -> None:
        dtype, device = ring.data.dtype, ring.data.device
        self.even, self.odd = transposed_taps(_weight(conv).to(device=device, dtype=dtype))
        self.bias = _bias(conv, ring.data).expand(ring.data.shape[0], -1)
        self.ring = ring

    def compute(self, out: torch.Tensor, taps: Taps) -> None:
        _transposed(self.ring, self.even, self.odd, self.bias, taps, out)

    def macs(self, taps: Taps) -> int:
        weight = self.even if taps == Taps.EVEN else self.odd
        return weight.shape[0] * weight.shape[1]


class OneHotConv:
    """A convolution over one-hot classes as a table lookup over a ring of class indices.

    Index ``zero_index(classes)`` stands for the all-zero input vector (history before a
    stream starts): its table rows are zero.
    """

    def __init__(self, conv: nn.Module, ring: FrameRing, classes: int, dtype: torch.dtype) -> None:
        w = _weight(conv)  # (out, classes, k)
        out_ch, _, k = w.shape
        if ring.window_size != conv_window(conv) or ring.channels != 1:
            raise ValueError("index ring must span the convolution's taps")
        self.dilation = conv.dilation[0]
        device, batch = ring.data.device, ring.data.shape[0]
        rows = zero_index(classes) + 1
        table = torch.zeros(k, rows, out_ch, dtype=w.dtype)
        table[:, :classes] = w.permute(2, 1, 0)
        self.table = table.reshape(k * rows, out_ch).to(device=device, dtype=dtype)
        self.offsets = (torch.arange(k, device=device) * rows).expand(batch, k)
        self.bias = conv.bias.detach().to(device=device, dtype=dtype)
        self.ring, self.k, self.out_ch = ring, k, out_ch
        self.index = torch.empty(batch, k, dtype=torch.int64, device=device)
        self.rows = torch.empty(batch * k, out_ch, dtype=dtype, device=device)

    def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> torch.Tensor:
        torch.add(self.ring.flat_window()[:, :: self.dilation], self.offsets, out=self.index)
        torch.index_select(self.table, 0, self.index.view(-1), out=self.rows)
        torch.sum(self.rows.view(-1, self.k, self.rows.shape[1]), dim=1, out=out)
        return out.add_(self.bias)

    def macs(self, taps: Taps = Taps.ALL) -> int:
        _only_all_taps(taps)
        return self.k * self.out_ch


class Dense:
    """``out = W x + b`` for a 1x1 convolution, weights transposed once."""

    def __init__(self, conv: nn.Module, like: torch.Tensor) -> None:
        w = _weight(conv)[:, :, 0]
        self.weight = w.t().contiguous().to(device=like.device, dtype=like.dtype)
        self.bias = _bias(conv, like)

    def compute(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return torch.addmm(self.bias.expand(x.shape[0], -1), x, self.weight, out=out)

    def macs(self) -> int:
        return self.weight.numel()


class OneHotDense:
    """A 1x1 convolution over one-hot classes: a row lookup by the newest index.

    ``conv=None`` is the identity (the one-hot vector itself, zero for ``zero_index``).
    """

    def __init__(self, conv: nn.Module | None, ring: FrameRing, classes: int, dtype: torch.dtype) -> None:
        device = ring.data.device
        w = torch.eye(classes) if conv is None else _weight(conv)[:, :, 0]  # (out, classes)
        table = torch.zeros(zero_index(classes) + 1, w.shape[0], dtype=w.dtype)
        table[:classes] = w.t()
        self.table = table.to(device=device, dtype=dtype)
        bias = torch.zeros(w.shape[0]) if conv is None else conv.bias.detach()
        self.bias = bias.to(device=device, dtype=dtype)
        self.ring = ring

    def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> torch.Tensor:
        torch.index_select(self.table, 0, self.ring.newest().view(-1), out=out)
        return out.add_(self.bias)

    def macs(self, taps: Taps = Taps.ALL) -> int:
        _only_all_taps(taps)
        return self.table.shape[1]


class ReluDense:
    """A head of ReLU then a 1x1 convolution (relu applied in place on the input buffer)."""

    def __init__(self, conv: nn.Module, like: torch.Tensor) -> None:
        self.dense = Dense(conv, like)

    def compute(self, x: torch.Tensor, out: torch.Tensor) -> None:
        self.dense.compute(x.relu_(), out)

    def macs(self) -> int:
        return self.dense.macs()


class Rectified:
    """Another kernel's output through a (leaky) ReLU, in place: ``slope`` 0 is the ReLU."""

    def __init__(self, kernel, slope: float = 0.0) -> None:
        self.kernel, self.slope = kernel, slope

    def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> None:
        self.kernel.compute(out, taps)
        if self.slope:
            torch.nn.functional.leaky_relu_(out, self.slope)
        else:
            out.relu_()

    def macs(self, taps: Taps = Taps.ALL) -> int:
        return self.kernel.macs(taps)

"""WaveNet step program (fast-WaveNet caching): one ring per layer of its last
``(k-1) * dilation + 1`` inputs; every layer runs every step."""

from __future__ import annotations

import torch

from streamgen.engine.plan import HEAD, Advance, Head, Input, Layer, Plan, PlanBuilder
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.ring import FrameRing
from streamgen.engine.steps import Dense, OneHotDense, TapConv
from streamgen.nn.layers import conv_window
from streamgen.nn.wavenet import WaveNet, WaveNetLayer


class WaveNetStep:
    """One WaveNet layer: ``h = tanh(filter) * sigmoid(gate)`` over the ring's dilated taps,
    the residual ``newest + W_r h`` into ``out``, and ``W_s h`` added to the skip sum (which
    the first layer starts from every layer's skip bias). The last layer has no residual
    output: it writes the finished skip sum into ``out`` (the head's input) instead."""

    def __init__(self, layer: WaveNetLayer, ring: FrameRing, skip: torch.Tensor,
                 skip_bias: torch.Tensor | None, last: bool) -> None:
        weight = torch.cat([layer.filter.weight, layer.gate.weight], 0).detach()
        bias = torch.cat([layer.filter.bias, layer.gate.bias], 0).detach()
        self.conv = TapConv(weight, bias, ring, layer.dilation)
        self.ring, self.skip, self.skip_bias, self.last = ring, skip, skip_bias, last
        self.residual, self.skip_out = Dense(layer.residual, ring.data), Dense(layer.skip, ring.data)
        self.d = layer.filter.out_channels
        self.gates = torch.empty(ring.data.shape[0], 2 * self.d, dtype=ring.data.dtype,
                                 device=ring.data.device)

    def compute(self, out: torch.Tensor, taps=None) -> None:
        d = self.d
        a = self.conv.compute(self.gates)
        h = a[:, :d].tanh_().mul_(a[:, d:].sigmoid_())
        start = self.skip_bias if self.skip_bias is not None else self.skip
        if self.last:
            torch.addmm(start, h, self.skip_out.weight, out=out)
            return
        torch.addmm(start, h, self.skip_out.weight, out=self.skip)
        torch.addmm(self.ring.newest(), h, self.residual.weight, out=out)
        out.add_(self.residual.bias)

    def macs(self, taps=None) -> int:
        return self.conv.macs() + self.skip_out.macs() + (0 if self.last else self.residual.macs())


class WaveNetHead:
    """skip -> ReLU -> 1x1 -> ReLU -> 1x1."""

    def __init__(self, model: WaveNet, skip: torch.Tensor) -> None:
        self.end1, self.end2 = Dense(model.end1, skip), Dense(model.end2, skip)
        self.hidden = torch.empty_like(skip)

    def compute(self, skip: torch.Tensor, logits: torch.Tensor) -> None:
        self.end1.compute(skip.relu_(), self.hidden).relu_()
        self.end2.compute(self.hidden, logits)

    def macs(self) -> int:
        return self.end1.macs() + self.end2.macs()


class WaveNetProgram(StepProgram):
    kind = WaveNet.kind

    def build(self) -> None:
        model, dtype = self.model, self.dtype
        cfg = model.config
        r = cfg.residual_channels
        inp = self.ring(None, 0, conv_window(model.start), 1)
        self.kernels[inp] = OneHotDense(model.start, self.rings[inp], cfg.classes, dtype)
        self.head_in = self.scratch(cfg.skip_channels)  # the finished skip sum
        skip = self.scratch(cfg.skip_channels)  # the running skip sum
        skip_bias = sum(layer.skip.bias.detach() for layer in model.layers).to(self.device, dtype)
        skip_bias = skip_bias.expand(self.batch, -1)
        rings = []
        last = len(model.layers) - 1
        for i, layer in enumerate(model.layers):
            name = self.ring(layer, 0, layer.window, r)
            self.kernels[name] = WaveNetStep(layer, self.rings[name], skip,
                                             skip_bias if i == 0 else None, last=i == last)
            rings.append(name)
        self.head = WaveNetHead(model, self.head_in)
        b = PlanBuilder()
        b.add(Input(), Layer(INPUT_RING, rings[0], 0, r))
        b.chain(rings[:-1], rings[-1], r)
        b.add(Advance(rings[-1]), Layer(rings[-1], HEAD, 0, cfg.skip_channels))
        b.add(Head())
        self.plan: list[Plan] = [b.build()]

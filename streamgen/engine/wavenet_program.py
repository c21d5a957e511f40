"""WaveNet step program (fast-WaveNet caching): one ring per layer of its last
``(k-1) * dilation + 1`` inputs; every layer runs every step."""

from __future__ import annotations

import torch

from streamgen.engine.program import StepProgram
from streamgen.engine.steps import Dense, OneHotDense, TapConv
from streamgen.nn.wavenet import WaveNet


class WaveNetProgram(StepProgram):
    def __init__(self, model: WaveNet, batch: int, device: torch.device, dtype: torch.dtype):
        super().__init__(model, batch, device, dtype)
        cfg = model.config
        r, d = cfg.residual_channels, cfg.dilation_channels
        self.dilation_channels = d
        self.start = OneHotDense(model.start, self.input_ring(1), cfg.classes, dtype)

        def buffer(width: int) -> torch.Tensor:
            return torch.empty(batch, width, dtype=dtype, device=device)

        self.layers = []
        for i, layer in enumerate(model.layers):
            ring = self.ring(f"layers.{i}", 0, layer.span, r, layer)
            weight = torch.cat([layer.filter.weight, layer.gate.weight], 0).detach()
            bias = torch.cat([layer.filter.bias, layer.gate.bias], 0).detach()
            conv = TapConv(weight, bias, ring, layer.dilation)
            self.layers.append((ring, conv, Dense(layer.residual, ring.data), Dense(layer.skip, ring.data)))
        self.gates = buffer(2 * d)
        self.skip = buffer(cfg.skip_channels)
        self.skip_bias = sum(layer.skip.bias.detach() for layer in model.layers).to(device, dtype)
        self.end1 = Dense(model.end1, self.skip)
        self.end2 = Dense(model.end2, self.skip)
        self.hidden = buffer(cfg.skip_channels)

    def step(self, x: torch.Tensor, logits: torch.Tensor, phase: int) -> None:
        d = self.dilation_channels
        self.start.ring.slot().copy_(x.view(-1, 1))
        self.start.ring.advance()
        self.start.compute(self.layers[0][0].slot())
        self.skip.copy_(self.skip_bias.expand_as(self.skip))
        for i, (ring, conv, residual, skip) in enumerate(self.layers):
            ring.advance()
            a = conv.compute(self.gates)
            h = a[:, :d].tanh_().mul_(a[:, d:].sigmoid_())
            self.skip.addmm_(h, skip.weight)
            if i + 1 < len(self.layers):
                dest = self.layers[i + 1][0].slot()
                torch.addmm(ring.newest(), h, residual.weight, out=dest)
                dest.add_(residual.bias)
        self.skip.relu_()
        self.end1.compute(self.skip, self.hidden).relu_()
        self.end2.compute(self.hidden, logits)

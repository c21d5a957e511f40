"""Seq-U-Net step program: level ``l`` runs once every ``2**l`` samples.

At step ``t`` the levels ``0..top`` run, where ``top`` is the number of trailing one bits of
``t`` (capped at ``levels - 1``): the encoder upwards, the bottleneck when ``top`` is the
coarsest level, then the decoder coarse to fine. Every layer writes its output straight into
the ring slot of the layer that reads it.
"""

from __future__ import annotations

import torch

from streamgen.engine.program import StepProgram
from streamgen.engine.steps import Dense, GatedStep, OneHotConv, UpStep
from streamgen.nn.sequnet import SeqUNet


def trailing_ones(n: int) -> int:
    count = 0
    while n & 1:
        n >>= 1
        count += 1
    return count


class SeqUNetProgram(StepProgram):
    def __init__(self, model: SeqUNet, batch: int, device: torch.device, dtype: torch.dtype):
        super().__init__(model, batch, device, dtype)
        cfg = model.config
        c, k, levels = cfg.channels, cfg.kernel_size, cfg.levels
        self.channels, self.levels = c, levels
        self.input = OneHotConv(model.input_conv, self.input_ring(k), cfg.classes, dtype)

        def gated(name: str, layer, level: int, cond: bool = False) -> GatedStep:
            width = 2 * c if cond else c
            return GatedStep(layer, self.ring(name, level, k, width, layer, cond))

        self.encoder = [
            (
                [gated(f"encoder.{l}.convs.{j}", layer, l) for j, layer in enumerate(enc.convs)],
                gated(f"encoder.{l}.down", enc.down, l),
            )
            for l, enc in enumerate(model.encoder)
        ]
        self.bottleneck = [
            gated(f"bottleneck.{j}", layer, levels - 1) for j, layer in enumerate(model.bottleneck)
        ]
        # decoder indexed by the (fine) level it works at
        self.decoder: list[tuple[UpStep, list[GatedStep]]] = [None] * (levels - 1)  # type: ignore
        for i, dec in enumerate(model.decoder):
            l = levels - 2 - i
            up_ring = self.ring(f"decoder.{i}.up", l + 1, (k + 1) // 2, c, dec.up)
            convs = [
                gated(f"decoder.{i}.convs.{j}", layer, l, cond=True)
                for j, layer in enumerate(dec.convs)
            ]
            self.decoder[l] = (UpStep(dec.up, up_ring), convs)
        self.head_in = torch.empty(batch, c, dtype=dtype, device=device)
        self.head = Dense(model.head, self.head_in)
        self.tops = [min(trailing_ones(t), levels - 1) for t in range(self.period)]

    def _entry(self, level: int) -> GatedStep:
        """The first layer of ``level``'s upward path."""
        return self.encoder[level][0][0] if level < self.levels - 1 else self.bottleneck[0]

    @staticmethod
    def _chain(steps: list[GatedStep], dest: torch.Tensor, width: int | None = None) -> None:
        """Run ``steps`` in order, each into the next one's slot (its first ``width`` channels)."""
        for i, s in enumerate(steps):
            s.ring.advance()
            if i + 1 < len(steps):
                nxt = steps[i + 1].ring.slot()
                s.compute(nxt if width is None else nxt[:, :width])
            else:
                s.compute(dest)

    def step(self, x: torch.Tensor, logits: torch.Tensor, phase: int) -> None:
        top, c, last = self.tops[phase], self.channels, self.levels - 1
        self.input.ring.slot().copy_(x.view(-1, 1))
        self.input.ring.advance()
        self.input.compute(self._entry(0).ring.slot())
        for l in range(min(top, last - 1) + 1):
            convs, down = self.encoder[l]
            skip = down.ring.slot()
            self._chain(convs, skip)
            self.decoder[l][1][0].ring.slot()[:, :c].copy_(skip)
            down.ring.advance()
            if l + 1 <= top:
                down.compute(self._entry(l + 1).ring.slot())
        if top == last:
            dest = self.decoder[last - 1][0].ring.slot() if last > 0 else self.head_in
            self._chain(self.bottleneck, dest)
        for l in range(min(top, last - 1), -1, -1):
            up, convs = self.decoder[l]
            on_tick = l + 1 <= top
            if on_tick:
                up.ring.advance()
            upsampled = convs[0].ring.slot()[:, c:]
            up.compute(on_tick, upsampled)
            for conv in convs[1:]:
                conv.ring.slot()[:, c:].copy_(upsampled)
            dest = self.decoder[l - 1][0].ring.slot() if l > 0 else self.head_in
            self._chain(convs, dest, width=c)
        self.head_in.relu_()
        self.head.compute(self.head_in, logits)

"""Seq-U-Net step program: level ``l`` runs once every ``2**l`` samples.

At a step whose top level is ``top`` (``streamgen.engine.clock.top_level``) the levels
``0..top`` run: the encoder upwards, the bottleneck when ``top`` is the coarsest level, then
the decoder coarse to fine. Every layer writes its output straight into the ring slot of the
layer that reads it; the decoder's up layer runs its even taps on a coarse tick and its odd
taps in between.
"""

from __future__ import annotations

from streamgen.engine.clock import top_level
from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Plan, PlanBuilder, Taps
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.steps import GatedStep, OneHotConv, ReluDense, UpStep
from streamgen.nn.layers import conv_window
from streamgen.nn.sequnet import SeqUNet


class SeqUNetProgram(StepProgram):
    kind = SeqUNet.kind

    def build(self) -> None:
        model = self.model
        cfg = model.config
        self.channels, self.levels = cfg.channels, cfg.levels
        inp = self.ring(None, 0, conv_window(model.input_conv), 1)
        self.kernels[inp] = OneHotConv(model.input_conv, self.rings[inp], cfg.classes, self.dtype)

        def gated(layer, level: int) -> str:
            cond = layer.cond_channels > 0
            name = self.ring(layer, level, layer.window, layer.channels + layer.cond_channels, cond)
            step = UpStep if layer.kind == "up" else GatedStep
            self.kernels[name] = step(layer, self.rings[name])
            return name

        # rings in data-flow order, indexed by the level they work at
        self.encoder = [([gated(layer, l) for layer in enc.convs], gated(enc.down, l))
                        for l, enc in enumerate(model.encoder)]
        self.bottleneck = [gated(layer, cfg.levels - 1) for layer in model.bottleneck]
        decoder = [(gated(dec.up, cfg.levels - 1 - i), [gated(layer, cfg.levels - 2 - i)
                                                         for layer in dec.convs])
                   for i, dec in enumerate(model.decoder)]
        self.decoder = decoder[::-1]
        self.head_in = self.scratch(cfg.channels)
        self.head = ReluDense(model.head, self.head_in)
        self.plan = [self._plan(top_level(t, cfg.levels)) for t in range(self.period)]

    def _entry(self, level: int) -> str:
        """The first ring of ``level``'s upward path."""
        return self.encoder[level][0][0] if level < self.levels - 1 else self.bottleneck[0]

    def _plan(self, top: int) -> Plan:
        c, last = self.channels, self.levels - 1
        b = PlanBuilder()
        b.add(Input(), Layer(INPUT_RING, self._entry(0), 0, c))
        for l in range(min(top, last - 1) + 1):
            convs, down = self.encoder[l]
            b.chain(convs, down, c)
            b.add(Advance(down), Copy(down, self.decoder[l][1][0], 0, 0, c))  # the skip
            if l + 1 <= top:
                b.add(Layer(down, self._entry(l + 1), 0, c))
        if top == last:
            b.chain(self.bottleneck, self.decoder[last - 1][0] if last > 0 else HEAD, c)
        for l in range(min(top, last - 1), -1, -1):
            up, convs = self.decoder[l]
            on_tick = l + 1 <= top
            if on_tick:
                b.add(Advance(up))
            b.add(Layer(up, convs[0], c, c, Taps.EVEN if on_tick else Taps.ODD))
            b.chain(convs, self.decoder[l - 1][0] if l > 0 else HEAD, c, carry=c)
        b.add(Head())
        return b.build()

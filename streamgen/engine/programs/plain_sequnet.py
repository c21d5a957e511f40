"""Plain Seq-U-Net step program (the paper's symbolic-music variant), fed piano-roll frames.

The Seq-U-Net's multi-rate schedule (level ``l`` runs once every ``2**l`` steps, see
``streamgen.engine.programs.sequnet``) over convolution + LeakyReLU units: the encoder's
stride-1 unit writes the level's skip, which goes both up the stride-2 unit and into columns
``C:2C`` of the decoder unit's ring; the up unit's even or odd taps fill columns ``0:C``.
"""

from __future__ import annotations

from streamgen.engine.clock import top_level
from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Plan, PlanBuilder, Taps
from streamgen.engine.program import StepProgram
from streamgen.engine.steps import Dense, Rectified, TapConv, TransposedStep
from streamgen.nn.symbolic import ConvUnit, PlainSeqUNet

LEAKY_SLOPE = 0.01


class PlainSeqUNetProgram(StepProgram):
    kind = PlainSeqUNet.kind
    INPUTS = ("frames",)

    def build(self) -> None:
        model = self.model
        cfg = model.config
        self.channels, self.levels = cfg.channels, cfg.levels

        def unit(layer: ConvUnit, level: int) -> str:
            conv = layer.conv
            name = self.ring(layer, level, layer.input_length(1), conv.in_channels)
            ring = self.rings[name]
            step = TransposedStep(conv, ring) if layer.kind == "up" else \
                TapConv(conv.weight.detach(), conv.bias, ring)
            self.kernels[name] = Rectified(step, LEAKY_SLOPE)
            return name

        # rings in data-flow order (the first one is fed the frames), indexed by level
        self.encoder = [(unit(enc.conv, l), unit(enc.down, l)) for l, enc in enumerate(model.encoder)]
        self.bottleneck = unit(model.bottleneck, cfg.levels - 1)
        decoder = [(unit(dec.up, cfg.levels - 1 - i), unit(dec.conv, cfg.levels - 2 - i))
                   for i, dec in enumerate(model.decoder)]
        self.decoder = decoder[::-1]
        self.head_in = self.scratch(cfg.channels)
        self.head = Dense(model.head, self.head_in)
        self.plan = [self._plan(top_level(t, cfg.levels)) for t in range(self.period)]

    def _entry(self, level: int) -> str:
        return self.encoder[level][0] if level < self.levels - 1 else self.bottleneck

    def _plan(self, top: int) -> Plan:
        c, last = self.channels, self.levels - 1
        b = PlanBuilder()
        b.add(Input())  # writes and advances the first ring
        for l in range(min(top, last - 1) + 1):
            conv, down = self.encoder[l]
            if l:
                b.add(Advance(conv))
            b.add(Layer(conv, down, 0, c), Advance(down),
                  Copy(down, self.decoder[l][1], 0, c, c))  # the skip
            if l + 1 <= top:
                b.add(Layer(down, self._entry(l + 1), 0, c))
        if top == last:
            if last:
                b.add(Advance(self.bottleneck))
            b.add(Layer(self.bottleneck, self.decoder[last - 1][0] if last else HEAD, 0, c))
        for l in range(min(top, last - 1), -1, -1):
            up, conv = self.decoder[l]
            on_tick = l + 1 <= top
            if on_tick:
                b.add(Advance(up))
            b.add(Layer(up, conv, 0, c, Taps.EVEN if on_tick else Taps.ODD))
            b.add(Advance(conv), Layer(conv, self.decoder[l - 1][0] if l else HEAD, 0, c))
        b.add(Head())
        return b.build()

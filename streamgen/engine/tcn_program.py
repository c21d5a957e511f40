"""TCN step program: two rings per residual block (the block input and the first conv's
output), each of ``(k-1) * dilation + 1`` frames; every block runs every step."""

from __future__ import annotations

import torch

from streamgen.engine.program import StepProgram
from streamgen.engine.steps import Dense, OneHotConv, OneHotDense, TapConv
from streamgen.nn.tcn import TCN


class TCNProgram(StepProgram):
    def __init__(self, model: TCN, batch: int, device: torch.device, dtype: torch.dtype):
        super().__init__(model, batch, device, dtype)
        cfg = model.config
        c = cfg.channels
        self.blocks = []
        for i, block in enumerate(model.blocks):
            if i == 0:  # over one-hot classes: table lookups on the index ring
                in_ring = self.input_ring(block.span)
                conv1 = OneHotConv(block.conv1, in_ring, cfg.classes, dtype, block.dilation)
                lookup = OneHotDense(block.downsample, in_ring, cfg.classes, dtype) if block.downsample else None
                down = lookup.compute if lookup else None
            else:
                in_ring = self.ring(f"blocks.{i}.conv1", 0, block.span, c, block.conv1)
                conv1 = TapConv(block.conv1.weight.detach(), block.conv1.bias, in_ring, block.dilation)
                assert block.downsample is None  # all blocks after the first keep the width
                down = None
            mid_ring = self.ring(f"blocks.{i}.conv2", 0, block.span, c, block.conv2)
            conv2 = TapConv(block.conv2.weight.detach(), block.conv2.bias, mid_ring, block.dilation)
            # down: None, or writes the projected block input (newest frame) into its argument
            self.blocks.append((in_ring, conv1, mid_ring, conv2, down))
        self.hidden = torch.empty(batch, c, dtype=dtype, device=device)
        self.residual = torch.empty(batch, c, dtype=dtype, device=device)
        self.head = Dense(model.head, self.hidden)

    def step(self, x: torch.Tensor, logits: torch.Tensor, phase: int) -> None:
        first = self.blocks[0][0]
        first.slot().copy_(x.view(-1, 1))
        for i, (in_ring, conv1, mid_ring, conv2, down) in enumerate(self.blocks):
            in_ring.advance()
            conv1.compute(mid_ring.slot()).relu_()
            mid_ring.advance()
            out = self.blocks[i + 1][0].slot() if i + 1 < len(self.blocks) else self.hidden
            h = conv2.compute(self.residual if down is not None else out).relu_()
            if down is None:
                out.add_(in_ring.newest()).relu_()
            else:  # the residual path's 1x1 projection of the block input
                down(out)
                out.add_(h).relu_()
        self.head.compute(self.hidden, logits)

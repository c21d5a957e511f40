"""TCN step program: two rings per residual block (the block input and the first conv's
output), each of ``(k-1) * dilation + 1`` frames; every block runs every step."""

from __future__ import annotations

import torch

from streamgen.engine.plan import HEAD, Head, Input, Layer, Plan, PlanBuilder
from streamgen.engine.program import StepProgram
from streamgen.engine.ring import FrameRing
from streamgen.engine.steps import Dense, OneHotConv, OneHotDense, Rectified, TapConv
from streamgen.nn.tcn import TCN


class BlockOutput:
    """``relu(relu(conv2) + residual)``. The residual is the newest frame of the block input
    ``source``: as it is (``project`` None), through its 1x1 projection (``Dense``), or, on a
    first block over class indices, looked up by its newest index (``OneHotDense``)."""

    def __init__(self, conv2: TapConv, source: FrameRing,
                 project: Dense | OneHotDense | None) -> None:
        self.conv2, self.source, self.project = conv2, source, project
        bias = conv2.bias
        self.scratch = torch.empty(bias.shape, dtype=bias.dtype, device=bias.device)

    def residual(self, out: torch.Tensor) -> None:
        if self.project is None:
            out.copy_(self.source.newest())
        elif isinstance(self.project, OneHotDense):
            self.project.compute(out)
        else:
            self.project.compute(self.source.newest(), out)

    def compute(self, out: torch.Tensor, taps=None) -> None:
        h = self.conv2.compute(self.scratch).relu_()
        self.residual(out)
        out.add_(h).relu_()

    def macs(self, taps=None) -> int:
        if self.project is None:
            return self.conv2.macs()
        return self.conv2.macs() + self.project.macs()


class TCNProgram(StepProgram):
    kind = TCN.kind
    INPUTS = ("classes", "frames")

    def build(self) -> None:
        model, dtype = self.model, self.dtype
        cfg = model.config
        c = cfg.channels
        block_inputs, mids = [], []
        for i, block in enumerate(model.blocks):
            if i == 0 and self.inputs == "classes":  # table lookups on the ring of class indices
                in_name = self.ring(None, 0, block.window, 1)
                in_ring = self.rings[in_name]
                conv1 = OneHotConv(block.conv1, in_ring, cfg.classes, dtype)
                project = OneHotDense(block.downsample, in_ring, cfg.classes, dtype)
            else:
                width = block.conv1.in_channels
                in_name = self.ring(block.conv1, 0, block.window, width)
                in_ring = self.rings[in_name]
                conv1 = TapConv(block.conv1.weight.detach(), block.conv1.bias, in_ring, block.dilation)
                project = None if block.downsample is None else Dense(block.downsample, in_ring.data)
            mid = self.ring(block.conv2, 0, block.window, c)
            conv2 = TapConv(block.conv2.weight.detach(), block.conv2.bias, self.rings[mid], block.dilation)
            self.kernels[in_name] = Rectified(conv1)
            self.kernels[mid] = BlockOutput(conv2, in_ring, project)
            block_inputs.append(in_name)
            mids.append(mid)
        self.head_in = self.scratch(c)
        self.head = Dense(model.head, self.head_in)
        b = PlanBuilder()
        b.add(Input())
        for i, (in_name, mid) in enumerate(zip(block_inputs, mids)):
            if i:
                b.chain([in_name], mid, c)
            else:  # the input op already advanced the first ring
                b.add(Layer(in_name, mid, 0, c))
            b.chain([mid], block_inputs[i + 1] if i + 1 < len(block_inputs) else HEAD, c)
        b.add(Head())
        self.plan: list[Plan] = [b.build()]

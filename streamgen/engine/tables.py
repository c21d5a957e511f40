"""A program's plans and weights as integer tables and per-ring arrays: what the numba kernel
executes on the CPU, and the weights the Triton kernel reads (it runs the same plans placed
on fixed addresses, ``streamgen.engine.gpu.placed``).

Both run the same subset of programs: plans whose layers are gated residual layers (plain,
down or stride-2 up) over float rings, with a one-hot input convolution of dilation 1 and a
ReLU + 1x1 head, i.e. the Seq-U-Net's. Each op of each plan becomes one row
``(opcode, a, b, c, d, e)``:

==========  ====================  ====================  ========  ========  =====
opcode      a                     b                     c         d         e
==========  ====================  ====================  ========  ========  =====
INPUT       .                     .                     .         .         .
ADVANCE     ring                  .                     .         .         .
EMBED       input ring            dst ring (-1: head)   dst col   taps      width
GATED       ring                  dst ring (-1: head)   dst col   taps      width
COPY        src ring              dst ring (-1: head)   src col   dst col   width
HEAD        .                     .                     .         .         .
==========  ====================  ====================  ========  ========  =====

Rings are numbered in the program's creation order (the order of its shared positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Op, Taps
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.steps import GatedStep, OneHotConv, ReluDense, UpStep

OP_INPUT, OP_ADVANCE, OP_EMBED, OP_GATED, OP_COPY, OP_HEAD = 0, 1, 2, 3, 4, 5
TAPS_ALL, TAPS_EVEN, TAPS_ODD = 0, 1, 2
_TAPS = {Taps.ALL: TAPS_ALL, Taps.EVEN: TAPS_EVEN, Taps.ODD: TAPS_ODD}


def unsupported_layers(program: StepProgram) -> str | None:
    """Why ``program`` is not a plan of gated layers the interpreters run (None if it is)."""
    if program.inputs != "classes":
        return "plans fed class inputs, not frames"
    for name, kernel in program.kernels.items():
        fits = isinstance(kernel, OneHotConv) and kernel.dilation == 1 if name == INPUT_RING \
            else isinstance(kernel, (GatedStep, UpStep))
        if not fits:
            return (f"plans of gated layers (Seq-U-Nets), not a {program.kind} "
                    f"({type(kernel).__name__} at ring {name!r})")
    if not isinstance(program.head, ReluDense):
        return f"plans of gated layers with a ReLU + 1x1 head, not the {program.kind} head"
    return None


def refuse_unless_runnable(reason: str | None) -> None:
    """The one-line error of an executor asked to run a program it cannot (``reason``)."""
    if reason:
        raise ValueError(f"{reason}; use backend='torch'")


@dataclass
class GatedWeights:
    """One ring's layer as ``(2C, frames * in)`` matrices over its flattened window: ``full``
    (all taps, or an up layer's even taps over the whole window) and ``odd`` (an up layer's
    odd taps over the newest ``window - 1`` frames; None otherwise), with the bias (2C,)."""

    full: torch.Tensor
    odd: torch.Tensor | None
    bias: torch.Tensor


@dataclass
class PlanTables:
    """The integer tables of a program's plans and the weights its ops read (detached
    tensors on the program's device)."""

    ops: np.ndarray  # (ops, 6) int64 rows, all phases concatenated
    starts: np.ndarray  # (period + 1,) int64: phase p's rows are starts[p]:starts[p+1]
    windows: np.ndarray  # (rings,) int64 window lengths
    index_ring: int  # number of the ring of class indices
    layers: list[GatedWeights | None]  # per ring (None: the index ring)
    embed_table: torch.Tensor  # (k * (classes + 1), out): the input convolution's rows
    embed_bias: torch.Tensor
    head_weight: torch.Tensor  # (classes, C)
    head_bias: torch.Tensor
    width: int  # the widest gated layer's 2C


def _row(op: Op, index: dict[str, int]) -> tuple[int, ...]:
    def ring(name: str) -> int:
        return -1 if name == HEAD else index[name]

    if isinstance(op, Input):
        return (OP_INPUT, 0, 0, 0, 0, 0)
    if isinstance(op, Advance):
        return (OP_ADVANCE, index[op.ring], 0, 0, 0, 0)
    if isinstance(op, Layer):
        code = OP_EMBED if op.ring == INPUT_RING else OP_GATED
        return (code, index[op.ring], ring(op.dst), op.col, _TAPS[op.taps], op.width)
    if isinstance(op, Copy):
        return (OP_COPY, index[op.src], ring(op.dst), op.src_col, op.dst_col, op.width)
    if isinstance(op, Head):
        return (OP_HEAD, 0, 0, 0, 0, 0)
    raise TypeError(f"unknown op {op!r}")


def _layer(kernel: object) -> GatedWeights | None:
    if isinstance(kernel, UpStep):  # (rows in, 2C) -> (2C, rows)
        return GatedWeights(kernel.even.t(), kernel.odd.t(), kernel.bias[0])
    if isinstance(kernel, GatedStep):
        return GatedWeights(kernel.conv.flat.t(), None, kernel.conv.bias[0])
    return None


def plan_tables(program: StepProgram) -> PlanTables:
    """The tables of ``program`` (which must pass ``unsupported_layers``)."""
    reason = unsupported_layers(program)
    if reason:
        raise ValueError(f"the compiled backends run {reason}")
    names = list(program.rings)
    index = {n: i for i, n in enumerate(names)}
    rows = [_row(op, index) for plan in program.plan for op in plan]
    embed: OneHotConv = program.kernels[INPUT_RING]
    head: ReluDense = program.head
    return PlanTables(
        ops=np.array(rows, dtype=np.int64).reshape(-1, 6),
        starts=np.cumsum([0] + [len(plan) for plan in program.plan]).astype(np.int64),
        windows=np.array([r.window_size for r in program.rings.values()], dtype=np.int64),
        index_ring=index[INPUT_RING],
        layers=[_layer(program.kernels[n]) for n in names],
        embed_table=embed.table, embed_bias=embed.bias,
        head_weight=head.dense.weight.t(), head_bias=head.dense.bias,
        width=max(2 * k.channels for k in program.kernels.values() if hasattr(k, "channels")),
    )

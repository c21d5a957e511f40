"""A program's plans and weights as integer tables and per-ring arrays: what the numba kernel
executes on the CPU, and the weights the Triton kernel reads (it runs the same plans placed
on fixed addresses, ``streamgen.engine.gpu.placed``).

All run plans whose layers are gated residual layers (plain, down or stride-2 up) over float
rings, with a one-hot input convolution of dilation 1 and a ReLU + 1x1 head, i.e. the
Seq-U-Net's; the numba kernels also run a WaveNet's layers and head (as the numba-cuda ones
do) and a TCN's (``unsupported_layers`` says which an executor runs). Each op of each plan
becomes one row ``(opcode, a, b, c, d, e)`` (GATED: the ring's layer, whatever its kind):

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
from streamgen.engine.steps import (Dense, GatedStep, OneHotConv, OneHotDense, Rectified,
                                    ReluDense, TapConv, UpStep)

OP_INPUT, OP_ADVANCE, OP_EMBED, OP_GATED, OP_COPY, OP_HEAD = 0, 1, 2, 3, 4, 5
TAPS_ALL, TAPS_EVEN, TAPS_ODD = 0, 1, 2
_TAPS = {Taps.ALL: TAPS_ALL, Taps.EVEN: TAPS_EVEN, Taps.ODD: TAPS_ODD}


def _fits(name: str, kernel: object, wavenet: bool, tcn: bool) -> bool:
    """Whether ring ``name``'s kernel is a layer the interpreter asking runs."""
    from streamgen.engine.programs.tcn import BlockOutput
    from streamgen.engine.programs.wavenet import WaveNetStep

    if tcn and isinstance(kernel, Rectified) and kernel.slope == 0:  # a TCN block's first conv
        kernel, layers = kernel.kernel, (TapConv,)
    else:
        layers = ((GatedStep, UpStep) + ((WaveNetStep,) if wavenet else ())
                  + ((BlockOutput,) if tcn else ()))
    if name == INPUT_RING:
        inputs = (OneHotConv, OneHotDense) if wavenet else (OneHotConv,)
        return isinstance(kernel, inputs) and getattr(kernel, "dilation", 1) == 1
    return isinstance(kernel, layers)


def unsupported_layers(program: StepProgram, wavenet: bool = False,
                       tcn: bool = False) -> str | None:
    """Why ``program`` is not a plan of layers the interpreters run (None if it is): gated
    residual layers (Seq-U-Nets), and where the interpreter asking runs them WaveNet layers
    and head (``wavenet``) or TCN blocks and head (``tcn``)."""
    from streamgen.engine.programs.wavenet import WaveNetHead

    if program.inputs != "classes":
        return "plans fed class inputs, not frames"
    kinds = ", ".join(["Seq-U-Nets"] + (["WaveNets"] if wavenet else []) + (["TCNs"] if tcn else []))
    what = f"plans of {'the layers' if tcn else 'gated layers'} ({kinds})"
    for name, kernel in program.kernels.items():
        if not _fits(name, kernel, wavenet, tcn):
            return f"{what}, not a {program.kind} ({type(kernel).__name__} at ring {name!r})"
    heads = (ReluDense,) + ((WaveNetHead,) if wavenet else ()) + ((Dense,) if tcn else ())
    if not isinstance(program.head, heads):
        return f"{what} with their heads, not the {program.kind} head"
    return None


class BackendError(ValueError):
    """A backend asked for that cannot run here (a one-line error naming the fix)."""


def refuse_unless_runnable(reason: str | None) -> None:
    """The one-line error of an executor asked to run a program it cannot (``reason``)."""
    if reason:
        raise BackendError(f"{reason}; use the torch backend (backend='torch', --backend torch)")


@dataclass
class GatedWeights:
    """One ring's layer as ``(2C, frames * in)`` matrices over its flattened window: ``full``
    (all taps, or an up layer's even taps over the whole window) and ``odd`` (an up layer's
    odd taps over the newest ``window - 1`` frames; None otherwise), with the bias (2C,)."""

    full: torch.Tensor
    odd: torch.Tensor | None
    bias: torch.Tensor


@dataclass
class WaveNetWeights:
    """One WaveNet layer: the gated convolution as a ``(2D, taps * R)`` matrix (column
    ``q * R + i``: tap ``q``, oldest first, input channel ``i``) with its bias (2D,), the
    residual ``(D, R)`` and skip ``(D, S)`` 1x1 weights as ``(in, out)``, the residual bias
    (R,), and the summed skip biases (S,) on the first layer (None on the others), which
    start the skip sum. The last layer writes the finished skip sum instead of a residual."""

    conv: torch.Tensor
    conv_bias: torch.Tensor
    residual: torch.Tensor
    residual_bias: torch.Tensor
    skip: torch.Tensor
    skip_bias: torch.Tensor | None
    taps: int
    dilation: int
    last: bool


@dataclass
class TCNWeights:
    """One TCN convolution through a ReLU: a ``(out, taps * in)`` matrix over its dilated taps
    (columns as ``WaveNetWeights.conv``'s) and its bias (out,). A block's second convolution
    (``source`` not None) then adds the residual and applies the ReLU again: the newest frame
    of ring ``source``, the block input (every block of a TCN over classes but the first has
    as many input as output channels), or, where ``source`` is the index ring, ``project``'s
    row of the newest class index ((classes + 1, out): the first block's 1x1 over one-hot
    classes, or the one-hot vector itself) plus ``project_bias``."""

    conv: torch.Tensor
    conv_bias: torch.Tensor
    taps: int
    dilation: int
    source: str | None = None
    project: torch.Tensor | None = None
    project_bias: torch.Tensor | None = None


@dataclass
class PlanTables:
    """The integer tables of a program's plans and the weights its ops read (detached
    tensors on the program's device)."""

    ops: np.ndarray  # (ops, 6) int64 rows, all phases concatenated
    starts: np.ndarray  # (period + 1,) int64: phase p's rows are starts[p]:starts[p+1]
    windows: np.ndarray  # (rings,) int64 window lengths
    index_ring: int  # number of the ring of class indices
    layers: list[GatedWeights | WaveNetWeights | TCNWeights | None]  # per ring (None: the index ring)
    embed_table: torch.Tensor  # (k * (classes + 1), out): the input convolution's rows
    embed_bias: torch.Tensor
    embed_relu: bool  # the input convolution goes through a ReLU (a TCN's)
    head_weight: torch.Tensor  # (classes, C)
    head_bias: torch.Tensor
    width: int  # the most outputs of a layer's convolution (a gated layer's 2C)
    hidden_weight: torch.Tensor | None = None  # (H, C): a WaveNet head's first 1x1
    hidden_bias: torch.Tensor | None = None


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


def _tap_matrix(conv: TapConv) -> torch.Tensor:
    """A convolution's taps as one ``(out, taps * in)`` matrix: column ``q * in + i`` is tap
    ``q`` (oldest first), input channel ``i``."""
    taps = conv.taps if conv.dilation > 1 else list(conv.flat.split(conv.in_ch))
    return torch.cat(taps, 0).t()


def _wavenet_layer(step) -> WaveNetWeights:
    conv = step.conv
    return WaveNetWeights(
        conv=_tap_matrix(conv), conv_bias=conv.bias[0],
        residual=step.residual.weight, residual_bias=step.residual.bias,
        skip=step.skip_out.weight, skip_bias=None if step.skip_bias is None else step.skip_bias[0],
        taps=conv.k, dilation=conv.dilation, last=step.last)


def _tcn_layer(kernel, ring_names: dict[int, str]) -> TCNWeights:
    from streamgen.engine.programs.tcn import BlockOutput

    if not isinstance(kernel, BlockOutput):  # a block's first convolution (Rectified)
        conv = kernel.kernel
        return TCNWeights(_tap_matrix(conv), conv.bias[0], conv.k, conv.dilation)
    conv, project = kernel.conv2, kernel.project
    weights = TCNWeights(_tap_matrix(conv), conv.bias[0], conv.k, conv.dilation,
                         source=ring_names[id(kernel.source)])
    if isinstance(project, OneHotDense):
        weights.project, weights.project_bias = project.table, project.bias
    elif project is not None:  # a 1x1 over frames: only a TCN fed frames has one
        raise ValueError("the compiled backends run TCNs fed class inputs")
    return weights


def _layer(kernel: object,
           ring_names: dict[int, str]) -> GatedWeights | WaveNetWeights | TCNWeights | None:
    from streamgen.engine.programs.tcn import BlockOutput
    from streamgen.engine.programs.wavenet import WaveNetStep

    if isinstance(kernel, WaveNetStep):
        return _wavenet_layer(kernel)
    if isinstance(kernel, UpStep):  # (rows in, 2C) -> (2C, rows)
        return GatedWeights(kernel.even.t(), kernel.odd.t(), kernel.bias[0])
    if isinstance(kernel, GatedStep):
        return GatedWeights(kernel.conv.flat.t(), None, kernel.conv.bias[0])
    if isinstance(kernel, BlockOutput) or (isinstance(kernel, Rectified)
                                           and isinstance(kernel.kernel, TapConv)):
        return _tcn_layer(kernel, ring_names)
    return None


def plan_tables(program: StepProgram) -> PlanTables:
    """The tables of ``program``, which must pass ``unsupported_layers(program, wavenet=True,
    tcn=True)`` (each executor asks first for what it runs)."""
    from streamgen.engine.programs.wavenet import WaveNetHead

    reason = unsupported_layers(program, wavenet=True, tcn=True)
    if reason:
        raise ValueError(f"the compiled backends run {reason}")
    names = list(program.rings)
    index = {n: i for i, n in enumerate(names)}
    ring_names = {id(ring): name for name, ring in program.rings.items()}
    rows = [_row(op, index) for plan in program.plan for op in plan]
    embed = program.kernels[INPUT_RING]
    embed_relu = isinstance(embed, Rectified)
    if embed_relu:
        embed = embed.kernel
    head, hidden = program.head, {}
    if isinstance(head, WaveNetHead):  # relu, 1x1 (end1), then a relu + 1x1 head (end2)
        hidden = dict(hidden_weight=head.end1.weight.t(), hidden_bias=head.end1.bias)
        dense = head.end2
    else:  # a ReLU + 1x1, or a TCN's 1x1 over its last block's output (a ReLU's already)
        dense = head if isinstance(head, Dense) else head.dense
    layers = [_layer(program.kernels[n], ring_names) for n in names]
    return PlanTables(
        ops=np.array(rows, dtype=np.int64).reshape(-1, 6),
        starts=np.cumsum([0] + [len(plan) for plan in program.plan]).astype(np.int64),
        windows=np.array([r.window_size for r in program.rings.values()], dtype=np.int64),
        index_ring=index[INPUT_RING],
        layers=layers,
        embed_table=embed.table, embed_bias=embed.bias, embed_relu=embed_relu,
        head_weight=dense.weight.t(), head_bias=dense.bias,
        width=max(layer.full.shape[0] if isinstance(layer, GatedWeights) else layer.conv.shape[0]
                  for layer in layers if layer is not None),
        **hidden,
    )

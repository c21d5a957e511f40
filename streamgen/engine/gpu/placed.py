"""Placed plans: one graph period of a program's plans as rows of resolved addresses.

The ring schedule (``streamgen.engine.schedule``) fixes every ring position by the clock
phase, so each op of each phase can name the very elements it reads and writes. Given where
each ring lives in the executor's flat buffers (``FlatLayout``), an op becomes one int64 row
(``COLUMNS``) with its addresses for stream 0 and the per-stream strides; a rewind becomes a
copy row before the op that triggers it; ``advance`` needs no row at all; a copy of the
columns a layer has just written becomes that layer's second destination (``dst2``, -1:
none). The Triton kernel walks these rows and keeps no ring positions.

==========  =========================  ============================  ===========  ===========
opcode      src (+ stride)             dst (+ stride)                n            more
==========  =========================  ============================  ===========  ===========
INPUT       .                          index ring slot               .            .
EMBED       index window start         frame slot (or head) columns  frames       width, dst2
GATED       window start               frame slot (or head) columns  elements     width,
                                                                                  weights,
                                                                                  pitch, bias,
                                                                                  newest, dst2
COPY        newest frame's columns,    frame slot (or head) columns  elements     .
            or a rewind's source       or the ring's front
ICOPY       a rewind of the index      the index ring's front        frames       .
            ring
HEAD        .                          .                             .            .
WAVENET     oldest tap's frame         next ring's slot (or head)    taps         layer no.,
                                                                                  conv weights,
                                                                                  pitch, bias,
                                                                                  newest
==========  =========================  ============================  ===========  ===========

A WAVENET row's ``width`` numbers the layer in the executor's table of WaveNet layers, which
holds what does not fit a row (the residual and skip weights, the tap stride, the widths).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Taps
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.schedule import Placed, Rewind, RingSchedule

OP_INPUT, OP_EMBED, OP_GATED, OP_COPY, OP_ICOPY, OP_HEAD, OP_WAVENET = range(7)
COLUMNS = ("code", "src", "stride", "dst", "dst_stride", "n", "width", "weights", "bias",
           "newest", "pitch", "dst2", "dst2_stride")


@dataclass(frozen=True)
class FlatLayout:
    """Where frames live: ring ``r``'s frame ``f`` channel ``c`` of stream ``b`` at
    ``at[r] + b * stride[r] + f * channels[r] + c`` of the float buffer (the index ring at
    ``b * stride + f`` of its own buffer), the head input at ``head_at + b * head_width``."""

    at: dict[str, int]
    stride: dict[str, int]
    channels: dict[str, int]
    head_at: int
    head_width: int


@dataclass(frozen=True)
class WeightOffsets:
    """Per float ring, offsets into the flat weight buffer: ``full`` (2C, window * in) matrix,
    ``odd`` (2C, (window - 1) * in) (up layers only), ``bias`` (2C,); the matrices' rows start
    ``pitch`` elements apart (``full_pitch``, ``odd_pitch``)."""

    full: dict[str, int]
    odd: dict[str, int]
    bias: dict[str, int]
    full_pitch: dict[str, int]
    odd_pitch: dict[str, int]
    wavenet: dict[str, int] = field(default_factory=dict)  # ring -> WaveNet layer number


def _row(code: int, src: int = 0, stride: int = 0, dst: int = 0, dst_stride: int = 0,
         n: int = 0, width: int = 0, weights: int = 0, bias: int = 0,
         newest: int = 0, pitch: int = 0) -> list[int]:
    return [code, src, stride, dst, dst_stride, n, width, weights, bias, newest, pitch, -1, 0]


def _fuse_copy(rows: list[list[int]], copy: list[int]) -> bool:
    """Let the layer of the last row also write ``copy``'s destination, if ``copy`` reads
    exactly the frame columns that layer wrote (a skip connection, or the columns an up layer
    shares with the next layer's input): one op less on the step's critical path."""
    if not rows:
        return False
    last = rows[-1]
    c = dict(zip(COLUMNS, copy))
    fits = (last[0] in (OP_EMBED, OP_GATED) and last[11] < 0 and last[3] == c["src"]
            and last[4] == c["stride"] and last[6] == c["n"])
    if fits:
        last[11], last[12] = c["dst"], c["dst_stride"]
    return fits


def placed_rows(program: StepProgram, schedule: RingSchedule, layout: FlatLayout,
                weights: WeightOffsets) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, starts)``: phase ``p``'s rows are ``rows[starts[p]:starts[p + 1]]``, over the
    schedule's graph period."""
    names = list(program.rings)
    rings = program.rings

    def frame(ring: str, f: int, col: int = 0) -> int:
        return layout.at[ring] + f * layout.channels[ring] + col

    def destination(p: Placed, col: int) -> tuple[int, int]:
        if p.op.dst == HEAD:
            return layout.head_at + col, layout.head_width
        return frame(p.op.dst, p.slot, col), layout.stride[p.op.dst]

    def rewind(rw: Rewind) -> list[int]:
        ring = names[rw.ring]
        code = OP_ICOPY if ring == INPUT_RING else OP_COPY
        ch = layout.channels[ring]
        return _row(code, frame(ring, rw.src), layout.stride[ring], frame(ring, 0),
                    layout.stride[ring], rw.frames * ch)

    rows: list[list[int]] = []
    starts = [0]
    for step in schedule.steps:
        for p in step:
            op = p.op
            if p.rewind is not None:
                rows.append(rewind(p.rewind))
            if isinstance(op, Input):
                stride = layout.stride[INPUT_RING]
                rows.append(_row(OP_INPUT, dst=frame(INPUT_RING, p.slot), dst_stride=stride))
            elif isinstance(op, Layer) and op.ring == INPUT_RING:
                win = rings[INPUT_RING].window_size
                dst, dst_stride = destination(p, op.col)
                rows.append(_row(OP_EMBED, frame(INPUT_RING, p.newest - win + 1),
                                 layout.stride[INPUT_RING], dst, dst_stride, win, op.width))
            elif isinstance(op, Layer) and op.ring in weights.wavenet:
                win = rings[op.ring].window_size
                dst, dst_stride = destination(p, op.col)
                rows.append(_row(OP_WAVENET, frame(op.ring, p.newest - win + 1),
                                 layout.stride[op.ring], dst, dst_stride,
                                 program.kernels[op.ring].conv.k, weights.wavenet[op.ring],
                                 weights.full[op.ring],
                                 weights.bias[op.ring], frame(op.ring, p.newest),
                                 weights.full_pitch[op.ring]))
            elif isinstance(op, Layer):
                odd = op.taps == Taps.ODD
                frames = rings[op.ring].window_size - odd
                w = (weights.odd if odd else weights.full)[op.ring]
                pitch = (weights.odd_pitch if odd else weights.full_pitch)[op.ring]
                dst, dst_stride = destination(p, op.col)
                rows.append(_row(OP_GATED, frame(op.ring, p.newest - frames + 1),
                                 layout.stride[op.ring], dst, dst_stride,
                                 frames * layout.channels[op.ring], op.width, w,
                                 weights.bias[op.ring], frame(op.ring, p.newest), pitch))
            elif isinstance(op, Copy):
                dst, dst_stride = destination(p, op.dst_col)
                copy = _row(OP_COPY, frame(op.src, p.newest, op.src_col), layout.stride[op.src],
                            dst, dst_stride, op.width)
                if p.rewind is not None or not _fuse_copy(rows, copy):
                    rows.append(copy)
            elif isinstance(op, Head):
                rows.append(_row(OP_HEAD))
            elif not isinstance(op, Advance):
                raise TypeError(f"unknown op {op!r}")
        starts.append(len(rows))
    return (np.array(rows, dtype=np.int64).reshape(-1, len(COLUMNS)),
            np.array(starts, dtype=np.int64))

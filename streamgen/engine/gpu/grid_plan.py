"""Where a step shared out among many thread blocks must wait for all of them.

The grid kernel (``streamgen.engine.gpu.grid_kernels``) gives every op of a stream's step to
all the stream's blocks, each a share of the work (a gated layer's channels, the head's
classes), so a block may start an op while another still works on the one before. It waits
at a grid barrier first where the op reads what an earlier op since the last barrier wrote,
or writes what such an op reads or writes (read after write, write after read, write after
write). ``barriers`` finds those ops from the placed rows' addresses (``placed.COLUMNS``; one
stream's suffice: the streams' frames never overlap). Ops that every block performs whole are
the exception: each block writes the same values itself (the input op its class; with the
kernel's ``whole_ends``, the embedding too), so what they write needs no barrier before it is
read.

The kernel waits after every step's head, whose logits every block reads whole, so each phase
starts with nothing pending; ``barriers`` checks that the head ends every phase. Where every
block computes the head whole instead (``whole_ends`` on a Seq-U-Net), nothing waits there
and what is pending at a phase's end carries into the next phase (the last phase's into the
first). A WaveNet layer's row is taken to read and write every frame (its taps and widths live
in the executor's WaveNet table): each reads what the layer before wrote anyway.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from streamgen.engine.gpu import placed


LAYERS = (placed.OP_GATED, placed.OP_WAVENET)


class Span(NamedTuple):
    """Elements ``[lo, hi)`` of buffer ``space`` (``"frames"`` or ``"index"``)."""

    space: str
    lo: int
    hi: int

    def overlaps(self, other: "Span") -> bool:
        return self.space == other.space and self.lo < other.hi and other.lo < self.hi


EVERY_FRAME = Span("frames", 0, 1 << 62)


def accesses(row: np.ndarray, head: Span) -> tuple[list[Span], list[Span]]:
    """(reads, writes) of placed row ``row`` for stream 0; ``head``: the head's input."""
    code, src, dst, n, e, newest, dst2 = (int(row[i]) for i in (0, 1, 3, 5, 6, 9, 11))
    outputs = [Span("frames", dst, dst + e)] + ([Span("frames", dst2, dst2 + e)]
                                               if dst2 >= 0 else [])
    if code == placed.OP_INPUT:
        return [], [Span("index", dst, dst + 1)]
    if code == placed.OP_EMBED:
        return [Span("index", src, src + n)], outputs
    if code == placed.OP_GATED:
        return [Span("frames", src, src + n), Span("frames", newest, newest + e)], outputs
    if code in (placed.OP_COPY, placed.OP_ICOPY):
        space = "frames" if code == placed.OP_COPY else "index"
        return [Span(space, src, src + n)], [Span(space, dst, dst + n)]
    if code == placed.OP_HEAD:
        return [head], []
    if code == placed.OP_WAVENET:
        return [EVERY_FRAME], [EVERY_FRAME]
    raise ValueError(f"the grid kernel runs no op {code}")


def barriers(rows: np.ndarray, starts: np.ndarray, head: Span,
             whole: tuple[int, ...] = (placed.OP_INPUT,), wait_after_head: bool = True
             ) -> np.ndarray:
    """Per row, 1 where the grid kernel must wait for every block of the stream before it,
    else 0 (int32). ``whole``: the ops every block performs whole; ``wait_after_head``:
    whether the kernel waits after every head (else what is pending carries over)."""
    need = np.zeros(len(rows), dtype=np.int32)
    reads: list[Span] = []
    writes: list[tuple[Span, bool]] = []  # (span, written by every block alike)
    # carried over, the last phase's pending accesses reach the first: a second sweep starts
    # from them (a barrier only clears what is pending, so the second sweep's are safe too)
    for _ in range(1 if wait_after_head else 2):
        for p in range(len(starts) - 1):
            lo, hi = int(starts[p]), int(starts[p + 1])
            heads = rows[lo:hi, 0] == placed.OP_HEAD
            if hi == lo or not heads[-1] or heads[:-1].any():
                raise ValueError(f"phase {p}'s rows do not end with the head, and only there")
            if wait_after_head:
                reads, writes = [], []
            for j in range(lo, hi):
                r, w = accesses(rows[j], head)
                code = rows[j, 0]
                if code in (placed.OP_EMBED, placed.OP_GATED) and any(
                        a.overlaps(b) for a in r for b in w):
                    raise ValueError(f"row {j} reads what it writes: no block can share it out")
                hazard = any(s.overlaps(x) for s, alike in writes if not alike for x in r) or any(
                    x.overlaps(y) for x in w for y in reads + [s for s, _ in writes])
                if hazard or need[j]:
                    need[j] = 1
                    reads, writes = [], []
                reads += r
                writes += [(s, code in whole) for s in w]
    return need


def next_layer(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per row, the position within its phase of the phase's next layer row (gated or
    WaveNet) after it (-1: none): whose weights the kernel may load ahead (int32)."""
    ahead = np.full(len(rows), -1, dtype=np.int32)
    for p in range(len(starts) - 1):
        lo, hi = int(starts[p]), int(starts[p + 1])
        upcoming = -1
        for j in range(hi - 1, lo - 1, -1):
            ahead[j] = upcoming
            if rows[j, 0] in LAYERS:
                upcoming = j - lo
    return ahead

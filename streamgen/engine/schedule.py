"""The ring schedule: one graph period of plans with every ring position resolved.

Under ``capacity="period"`` (``streamgen.engine.program.ring_capacity``) a ring's slot index
depends only on how many frames it has been written since the start of a graph period, so
every position, every slot written and every rewind is a function of the clock phase
``t % graph_period``. ``ring_schedule`` walks one graph period of a program's plans with
``FrameRing``'s own rules (``slot`` rewinds a full ring, ``advance`` moves its newest frame)
and records them: the positions before each phase, and each op placed on absolute frames.
This is what lets an executor replay a recorded period (CUDA graphs) or run a plan compiled to
fixed offsets (the Triton kernel).

A stream state whose positions are off the schedule (restored from a ``"double"`` engine, or
reset mid-period) is moved onto it by ``align_rings``: each ring's window is copied to where
the schedule keeps it at that phase. That is exact because no step leaves a written slot
pending: every frame written in a step is made the newest in the same step (checked here).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Op
from streamgen.engine.program import StepProgram


@dataclass(frozen=True)
class Rewind:
    """A full ring's newest ``frames`` frames copied from ``src`` to the front (frame 0)."""

    ring: int
    src: int
    frames: int


@dataclass(frozen=True)
class Placed:
    """One op at one phase: ``newest`` is the newest frame of the ring it reads (a Layer's
    window ends there; a Copy reads it), ``slot`` the frame it writes in its destination ring
    (None: the head buffer, or no destination), ``rewind`` a rewind of that ring first."""

    op: Op
    newest: int | None = None
    slot: int | None = None
    rewind: Rewind | None = None


@dataclass
class RingSchedule:
    """``positions[p]``: every ring's newest frame before phase ``p`` (row ``graph_period``
    equals row 0); ``steps[p]``: phase ``p``'s ops, placed."""

    positions: np.ndarray  # (graph_period + 1, rings) int64
    steps: list[list[Placed]]

    @property
    def period(self) -> int:
        return len(self.steps)


def ring_schedule(program: StepProgram) -> RingSchedule:
    """The schedule of ``program``'s rings over one graph period, from its initial positions
    (each ring's newest frame at ``window - 1``). Raises ValueError unless the rings repeat
    with the graph period (``capacity="period"``)."""
    names = list(program.rings)
    index = {n: i for i, n in enumerate(names)}
    rings = list(program.rings.values())
    cap = [r.capacity for r in rings]
    keep = [r.window_size - 1 for r in rings]
    pos = np.array(keep, dtype=np.int64)
    start = pos.copy()
    period = program.graph_period
    positions = np.empty((period + 1, len(rings)), dtype=np.int64)
    steps: list[list[Placed]] = []
    pending: set[int] = set()  # rings with a slot written but not yet advanced

    def slot(r: int) -> tuple[int, Rewind | None]:
        rewind = None
        if pos[r] + 1 == cap[r]:  # FrameRing.slot: rewind the newest window - 1 frames
            rewind = Rewind(r, cap[r] - keep[r], keep[r]) if keep[r] else None
            pos[r] = keep[r] - 1
        pending.add(r)
        return int(pos[r] + 1), rewind

    def advance(r: int) -> None:
        pos[r] += 1
        pending.discard(r)

    for phase in range(period):
        positions[phase] = pos
        placed: list[Placed] = []
        for op in program.plan[phase % program.period]:
            if isinstance(op, Input):
                r = index[program.input_ring]
                at, rewind = slot(r)
                placed.append(Placed(op, slot=at, rewind=rewind))
                advance(r)
            elif isinstance(op, Advance):
                advance(index[op.ring])
                placed.append(Placed(op))
            elif isinstance(op, (Layer, Copy)):
                src = index[op.ring if isinstance(op, Layer) else op.src]
                newest = int(pos[src])
                if op.dst == HEAD:
                    placed.append(Placed(op, newest=newest))
                else:
                    at, rewind = slot(index[op.dst])
                    placed.append(Placed(op, newest=newest, slot=at, rewind=rewind))
            elif isinstance(op, Head):
                placed.append(Placed(op))
            else:
                raise TypeError(f"unknown op {op!r}")
        if pending:
            raise ValueError(f"phase {phase} leaves slots of {[names[r] for r in pending]} "
                             f"written but not advanced")
        steps.append(placed)
    positions[period] = pos
    if not np.array_equal(pos, start):
        raise ValueError(f"the rings of this {program.kind} do not repeat with the graph period "
                         f"(ring capacity rule {program.capacity!r}); build the program with "
                         f"capacity='period'")
    return RingSchedule(positions, steps)


def align_rings(program: StepProgram, schedule: RingSchedule, t: int) -> bool:
    """Move every ring's window to where ``schedule`` keeps it before step ``t``; returns
    whether anything moved (the streams' state is unchanged either way)."""
    want = schedule.positions[t % schedule.period]
    have = program.positions.array
    if np.array_equal(have, want):
        return False
    for ring, pos, target in zip(program.rings.values(), have.copy(), want):
        if pos != target:
            w = ring.window_size
            window = ring.data[:, pos - w + 1 : pos + 1].clone()
            ring.data[:, target - w + 1 : target + 1].copy_(window)
    have[:] = want
    return True

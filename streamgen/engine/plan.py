"""Step plans: what runs at one step of the clock, as data.

A program (``streamgen.engine.program``) builds one plan per clock phase from the network's
own layers. A plan is a short list of ops over named rings; every backend executes the same
plans (the torch executor binds them to tensor operations, the numba executor turns them into
integer tables), and the cost model sums their multiply-accumulates. Ops read ring windows or
newest frames and write into the slot (the next frame) of a ring, or into the head buffer.

``print(plan)`` shows a step::

    input
    layer input -> encoder.0.convs.0 [0:32]
    advance encoder.0.convs.0
    layer encoder.0.convs.0 -> encoder.0.convs.1 [0:32]
    ...
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Union

#: Destination name of the head's input buffer (a scratch frame, not a ring).
HEAD = "head"


class Taps(IntEnum):
    """Which taps of a layer run: all of them, or the even / odd taps of a stride-2
    transposed convolution (the fine output on / between the coarse ticks)."""

    ALL = 0
    EVEN = 1
    ODD = 2


@dataclass(frozen=True)
class Input:
    """Write the step's input classes into the slot of the input ring and advance it."""

    def __str__(self) -> str:
        return "input"


@dataclass(frozen=True)
class Advance:
    """Make the frame written into ``ring``'s slot its newest."""

    ring: str

    def __str__(self) -> str:
        return f"advance {self.ring}"


@dataclass(frozen=True)
class Layer:
    """The layer that reads ``ring`` computes one output frame from its window into columns
    ``col:col+width`` of the slot of ``dst`` (a ring, or ``HEAD``)."""

    ring: str
    dst: str
    col: int
    width: int
    taps: Taps = Taps.ALL

    def __str__(self) -> str:
        taps = "" if self.taps == Taps.ALL else f" ({self.taps.name.lower()} taps)"
        return f"layer {self.ring} -> {self.dst} [{self.col}:{self.col + self.width}]{taps}"


@dataclass(frozen=True)
class Copy:
    """Copy columns ``src_col:src_col+width`` of ``src``'s newest frame into columns
    ``dst_col:dst_col+width`` of the slot of ``dst``."""

    src: str
    dst: str
    src_col: int
    dst_col: int
    width: int

    def __str__(self) -> str:
        return (f"copy {self.src} [{self.src_col}:{self.src_col + self.width}] -> {self.dst} "
                f"[{self.dst_col}:{self.dst_col + self.width}]")


@dataclass(frozen=True)
class Head:
    """The output layers: head buffer -> logits."""

    def __str__(self) -> str:
        return "head"


Op = Union[Input, Advance, Layer, Copy, Head]


class Plan(tuple):
    """The ops of one step, in order; prints one op per line."""

    def __str__(self) -> str:
        return "\n".join(str(op) for op in self)


class PlanBuilder:
    """Appends ops to a plan; ``chain`` runs layers each into the next one's slot."""

    def __init__(self) -> None:
        self.ops: list[Op] = []

    def add(self, *ops: Op) -> None:
        self.ops.extend(ops)

    def chain(self, rings: list[str], dst: str, width: int, carry: int = 0) -> None:
        """Advance each ring and run its layer into columns ``0:width`` of the next ring's
        slot, the last one into ``dst``; the ``carry`` columns after ``width`` (a
        conditioning input shared by the chain) are copied along from ring to ring."""
        for i, ring in enumerate(rings):
            nxt = rings[i + 1] if i + 1 < len(rings) else dst
            self.add(Advance(ring))
            if carry and i + 1 < len(rings):
                self.add(Copy(ring, nxt, width, width, carry))
            self.add(Layer(ring, nxt, 0, width))

    def build(self) -> Plan:
        return Plan(self.ops)

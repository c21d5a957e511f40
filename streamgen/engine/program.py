"""The step program of a network: its rings, their layers, and one plan per clock phase.

A program is built from a trained network's own modules and weights. It names every ring
after the module whose input its frames are (``named_modules()``), the level its frames live
at (see ``streamgen.engine.clock``), and the step kernel that reads it; ``plan[phase]`` lists
what runs at a step (``print(program.plan[0])``). Capture (``streamgen.engine.capture``) fills
the rings from an offline forward pass; executors (``TorchExecutor`` here, the numba one in
``streamgen.engine.fast``) run the plans.

Programs register themselves by network kind: adding a network is one ``nn/`` file and one
``engine/programs/`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Op, Plan
from streamgen.engine.ring import FrameRing, RingPositions

if TYPE_CHECKING:
    from streamgen.engine.sampling import Sampler
    from streamgen.engine.schedule import RingSchedule

INPUT_RING = "input"

#: Ring capacity rules: ``double`` holds two windows per ring (a rewind every ``window + 1``
#: writes); ``period`` makes every ring's rewinds fall at the same clock phases in every graph
#: period (so one recorded period of steps replays exactly) with fewer spare frames.
CAPACITIES = ("double", "period")

#: The graph period is the clock period, or this many steps where the clock period is shorter
#: (single-rate networks: WaveNet, TCN).
GRAPH_STEPS = 64


def graph_period(period: int) -> int:
    """The graph period of a network of clock ``period``: the steps after which every ring
    under ``capacity="period"`` is back where it started."""
    return max(period, GRAPH_STEPS)


def ring_capacity(window: int, level: int, graph_period: int, rule: str) -> int:
    """Frames a ring of ``window`` frames at ``level`` holds under capacity ``rule``.

    A ring's slot index depends only on its write count ``k``: ``window - 1 + (k + 1) % cycle``
    with ``cycle = capacity - window + 1`` (see ``FrameRing.slot``). Under ``period`` the cycle
    divides the ring's writes per graph period (``graph_period / 2**level``, a power of two):
    the smallest power of two >= the window (at most one frame copied per write on average),
    or all of those writes where fewer (the coarsest rings then shift on each write).
    """
    if rule == "double":
        return 2 * window
    if rule != "period":
        raise ValueError(f"unknown ring capacity {rule!r}; choose one of {CAPACITIES}")
    writes = max(graph_period >> level, 1)
    cycle = min(writes, 1 << (window - 1).bit_length())
    return window - 1 + cycle


#: Network kind -> its program class (filled by ``StepProgram.__init_subclass__``).
PROGRAMS: dict[str, type["StepProgram"]] = {}


@dataclass(frozen=True)
class RingInfo:
    level: int
    source: nn.Module | None  # None for the ring of input class indices
    cond: bool = False  # frames are [x; cond] of a conditioned GatedResidual


class StepProgram:
    """Base of the per-network programs. Subclasses define ``build``: create rings with
    ``ring``, register a step kernel per ring in ``kernels`` and the head in ``head``, and
    fill ``plan``."""

    kind: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            PROGRAMS[cls.kind] = cls

    #: What a step consumes: ``classes`` (one index per stream, looked up as one-hot
    #: vectors) or ``frames`` (a float vector per stream, e.g. a piano-roll frame).
    INPUTS: ClassVar[tuple[str, ...]] = ("classes",)

    def __init__(self, model: nn.Module, batch: int, device: torch.device, dtype: torch.dtype,
                 *, inputs: str = "classes", capacity: str = "double"):
        if inputs not in self.INPUTS:
            raise ValueError(f"a {self.kind} streams inputs of kind {self.INPUTS}, not {inputs!r}")
        self.inputs = inputs
        self.input_ring = INPUT_RING  # the ring the step's input is written into
        self.model = model
        self.batch, self.device, self.dtype = batch, device, dtype
        self.classes: int = model.num_classes
        self.period: int = model.period
        self.capacity = capacity  # the ring capacity rule (CAPACITIES)
        self.graph_period: int = graph_period(self.period)
        self.positions = RingPositions()
        self.rings: dict[str, FrameRing] = {}
        self.info: dict[str, RingInfo] = {}
        self.kernels: dict[str, Any] = {}  # ring name -> the step kernel that reads it
        self.head: Any = None  # head kernel: compute(head_in, logits)
        self.head_in: torch.Tensor
        self.plan: list[Plan] = []  # one per clock phase
        self._names = {module: name for name, module in model.named_modules()}
        self.build()

    def build(self) -> None:
        raise NotImplementedError

    def ring(self, source: nn.Module | None, level: int, window: int, channels: int,
             cond: bool = False) -> str:
        """A ring holding the last ``window`` inputs of ``source`` (None: the class indices)."""
        name = INPUT_RING if source is None else self._names[source]
        if not self.rings and self.inputs == "frames":  # the first ring is fed the frames
            self.input_ring = name
        dtype = torch.int64 if source is None else self.dtype
        capacity = ring_capacity(window, level, self.graph_period, self.capacity)
        self.rings[name] = FrameRing(self.batch, window, channels, dtype=dtype, device=self.device,
                                     capacity=capacity, positions=self.positions)
        self.info[name] = RingInfo(level, source, cond)
        return name

    def scratch(self, width: int) -> torch.Tensor:
        return torch.empty(self.batch, width, dtype=self.dtype, device=self.device)

    def op_macs(self, op: Op) -> int:
        if isinstance(op, Layer):
            return self.kernels[op.ring].macs(op.taps)
        if isinstance(op, Head):
            return self.head.macs()
        return 0

    def macs_per_step(self) -> list[int]:
        """Multiply-accumulates of each step over one clock period (summed over its ops)."""
        return [sum(self.op_macs(op) for op in plan) for plan in self.plan]

    @cached_property
    def schedule(self) -> "RingSchedule":
        """The rings' schedule over one graph period (``streamgen.engine.schedule``), walked
        once and shared by the engine and its executor; ValueError unless the rings repeat
        with the graph period (``capacity="period"``)."""
        from streamgen.engine.schedule import ring_schedule

        return ring_schedule(self)


def program_class(model: nn.Module) -> type[StepProgram]:
    """The step program registered for ``model``'s network kind."""
    import streamgen.engine.programs  # noqa: F401  (registers the programs)

    kind = getattr(model, "kind", None)
    if kind not in PROGRAMS:
        raise TypeError(f"no streaming program for {type(model).__name__}; known kinds: "
                        f"{sorted(PROGRAMS)}")
    return PROGRAMS[kind]


def native_inputs(model: nn.Module) -> str:
    """The first input kind ``model``'s program takes: ``classes``, or ``frames`` for a network
    of frames only (``PlainSeqUNet``)."""
    return program_class(model).INPUTS[0]


def build_program(model: nn.Module, batch: int, device: torch.device | str = "cpu",
                  dtype: torch.dtype = torch.float32, *, inputs: str = "classes",
                  capacity: str = "double") -> StepProgram:
    """The step program registered for ``model``'s network kind, fed ``inputs``, its rings
    sized by the ``capacity`` rule (``CAPACITIES``)."""
    return program_class(model)(model, batch, torch.device(device), dtype, inputs=inputs,
                                capacity=capacity)


class Executor(Protocol):
    """Runs a program's plans: blocks of teacher-forced or free-running steps."""

    name: str

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None: ...

    def generate_block(self, n: int, sampler: "Sampler", out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None: ...


class TorchExecutor:
    """Runs a program's plans with tensor operations, on any device.

    Each op is bound once, at construction, to a closure over its rings and kernel; a step
    calls the closures of its phase in order.
    """

    name = "torch"

    def __init__(self, program: StepProgram) -> None:
        self.program = program
        self._x: torch.Tensor | None = None
        self._logits: torch.Tensor | None = None
        self._steps = [[self._bind(op) for op in plan] for plan in program.plan]

    def _dst(self, name: str, col: int, width: int) -> Callable[[], torch.Tensor]:
        if name == HEAD:
            head = self.program.head_in[:, col : col + width]
            return lambda: head
        ring = self.program.rings[name]
        return lambda: ring.slot()[:, col : col + width]

    def _bind(self, op: Op) -> Callable[[], object]:
        p = self.program
        if isinstance(op, Input):
            ring = p.rings[p.input_ring]

            def feed() -> None:
                ring.slot().copy_(self._x.view(ring.data.shape[0], -1))
                ring.advance()
            return feed
        if isinstance(op, Advance):
            return p.rings[op.ring].advance
        if isinstance(op, Layer):
            kernel, dst, taps = p.kernels[op.ring], self._dst(op.dst, op.col, op.width), op.taps
            return lambda: kernel.compute(dst(), taps)
        if isinstance(op, Copy):
            src, dst = p.rings[op.src], self._dst(op.dst, op.dst_col, op.width)
            lo, hi = op.src_col, op.src_col + op.width
            return lambda: dst().copy_(src.newest()[:, lo:hi])
        if isinstance(op, Head):
            return lambda: p.head.compute(p.head_in, self._logits)
        raise TypeError(f"unknown op {op!r}")

    def step(self, x: torch.Tensor, logits: torch.Tensor, phase: int) -> None:
        """Consume input classes ``x`` (B,) at clock ``phase`` (= t mod period); write ``logits``."""
        self._x, self._logits = x, logits
        for fn in self._steps[phase]:
            fn()

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        """Teacher-forced steps ``t0, t0+1, ...`` over ``xs`` (B, N); each step's logits into
        ``out`` (B, N, classes) if given."""
        period = self.program.period
        for i in range(xs.shape[1]):
            self.step(xs[:, i], logits, (t0 + i) % period)
            if out is not None:
                out[:, i].copy_(logits)

    def generate_block(self, n: int, sampler: "Sampler", out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        """Free-running steps from ``t0``: sample ``x`` from ``logits``, record it, feed it."""
        period = self.program.period
        for i in range(n):
            sampler.sample(logits, x)
            out[:, i].copy_(x)
            self.step(x, logits, (t0 + i) % period)

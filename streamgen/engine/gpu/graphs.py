"""The CUDA-graph executor: the torch executor's steps replayed from recorded segments.

The throughput regime (large batches): an eager step launches about 60 small kernels from
Python, and at large batches that host overhead, not the GPU, sets the rate. Under
``capacity="period"`` every ring position is a function of the phase ``t % graph_period``
(``streamgen.engine.schedule``), so the kernels of ``SEGMENT`` consecutive steps always touch
the same addresses: segment ``j`` (phases ``[SEGMENT * j, SEGMENT * (j + 1))`` of the graph
period) is recorded once per mode and replayed with one call.

A block of steps: the rings are aligned to the schedule (``align_rings``); the steps before
the next segment boundary and after the last whole segment run eagerly through the torch
executor; each whole segment copies its inputs (or draws its Gumbel noise) into static
buffers, replays and copies its outputs out (a fused sampler draws the noise in its kernel, at
the step a one-element device buffer holds). The first use of a segment in a mode runs it
eagerly on the capture stream: real steps (nothing to save or restore) that are also the
warm-up capture needs; it is recorded then, and replayed from its second use on. Modes:
``feed`` with or without every step's logits out, and ``generate`` with one sampler (its
identity and config: a new sampler gets new graphs, and the previous one's are dropped).

Capture and replay sit behind ``GraphRecorder``: CUDA graphs on a CUDA device (one capture
stream, one memory pool for all graphs: no tensor allocated during a capture outlives it, so
they replay in any order); on the CPU a stand-in that replays by calling the recorded
function at the ring positions it was recorded at, leaving the host's positions alone as a
graph does. Everything but the capture itself therefore runs in the CPU tests.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from functools import cached_property
from typing import Callable, Iterator, Protocol

import torch

from streamgen.engine.program import GRAPH_STEPS, StepProgram, TorchExecutor
from streamgen.engine.ring import RingPositions
from streamgen.engine.sampling import Sampler
from streamgen.engine.schedule import align_rings

#: Steps per recorded segment.
SEGMENT = GRAPH_STEPS


class Replay(Protocol):
    def replay(self) -> None: ...


class GraphRecorder(Protocol):
    """Records a function of device work for replay."""

    def eager(self) -> AbstractContextManager[None]:
        """Where a recording's first run goes, eagerly (its warm-up)."""

    def record(self, fn: Callable[[], None]) -> Replay: ...


class CudaGraphRecorder:
    """CUDA graphs captured on one side stream into one shared memory pool."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device)
        self.pool = torch.cuda.graph_pool_handle()

    @contextmanager
    def eager(self) -> Iterator[None]:
        current = torch.cuda.current_stream(self.device)
        self.stream.wait_stream(current)
        with torch.cuda.stream(self.stream):
            yield
        current.wait_stream(self.stream)

    def record(self, fn: Callable[[], None]) -> torch.cuda.CUDAGraph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            fn()
        return graph


class CallRecording:
    """A recorded call: ``replay`` runs it at the ring positions of recording (the addresses a
    graph holds) and restores the host's positions after (a graph does not move them)."""

    def __init__(self, fn: Callable[[], None], positions: RingPositions) -> None:
        self.fn, self.positions = fn, positions
        self.at = positions.array.copy()
        self.replays = 0

    def replay(self) -> None:
        array = self.positions.array
        host = array.copy()
        array[:] = self.at
        self.fn()
        array[:] = host
        self.replays += 1


class CallRecorder:
    """The CPU stand-in for CUDA graphs."""

    def __init__(self, positions: RingPositions) -> None:
        self.positions = positions

    @contextmanager
    def eager(self) -> Iterator[None]:
        yield

    def record(self, fn: Callable[[], None]) -> CallRecording:
        return CallRecording(fn, self.positions)


def _fuse_gates(program: StepProgram) -> None:
    """Give ``program``'s gated step kernels the fused Triton kernel (a one-line error where
    Triton cannot run it: a CPU without its interpreter)."""
    from streamgen.engine.gpu import triton_runs
    from streamgen.engine.steps import GatedStep, UpStep
    from streamgen.engine.tables import BackendError

    if not triton_runs(program.device.type):
        raise BackendError("GraphExecutor.fused_gate runs Triton kernels: on a CUDA device "
                           "with triton installed (or on the CPU with TRITON_INTERPRET=1)")
    from streamgen.engine.gpu.fused_gate import fused_gated

    for kernel in program.kernels.values():
        if isinstance(kernel, (GatedStep, UpStep)):
            kernel.fuse = fused_gated


class GraphExecutor:
    """Replays recorded segments of a ``capacity="period"`` program's steps (any network kind,
    any dtype); CUDA graphs on a CUDA device, recorded calls on the CPU."""

    name = "graphs"
    #: Run each gated layer's product and gating as one Triton kernel
    #: (``fused_gate.fused_gated``: one launch a layer instead of four), where Triton runs.
    fused_gate: bool = False

    def __init__(self, program: StepProgram) -> None:
        if program.capacity != "period":
            raise ValueError(f"the graphs backend replays rings on a fixed schedule: build the "
                             f"engine with capacity='period' (or 'auto'), not {program.capacity!r}")
        self.program = program
        self.schedule = program.schedule
        if self.fused_gate:
            _fuse_gates(program)
        self.torch = TorchExecutor(program)
        dev, b, c = program.device, program.batch, program.classes
        self.recorder: GraphRecorder = (CudaGraphRecorder(dev) if dev.type == "cuda"
                                        else CallRecorder(program.positions))
        # static buffers: what the recorded kernels read and write
        if program.inputs == "frames":
            self.inputs = torch.zeros(b, SEGMENT, c, dtype=program.dtype, device=dev)
        else:
            self.inputs = torch.zeros(b, SEGMENT, dtype=torch.int64, device=dev)
        self.logits = torch.zeros(b, c, dtype=program.dtype, device=dev)
        self.logits_out = torch.zeros(b, SEGMENT, c, dtype=program.dtype, device=dev)
        self.samples = torch.zeros(b, SEGMENT, dtype=torch.int64, device=dev)
        self.step = torch.zeros(1, dtype=torch.int64, device=dev)  # a fused sampler's
        #: (mode, segment) -> its recording
        self.recorded: dict[tuple[str, int], Replay] = {}
        self._sampler: tuple[Sampler, object] | None = None  # whose generate graphs are kept

    # -- segments ----------------------------------------------------------------------
    def _feed_steps(self, phase: int, logits_out: bool) -> Callable[[], None]:
        period = self.program.period

        def run() -> None:
            for i in range(SEGMENT):
                self.torch.step(self.inputs[:, i], self.logits, (phase + i) % period)
                if logits_out:
                    self.logits_out[:, i].copy_(self.logits)
        return run

    def _generate_steps(self, phase: int, sampler: Sampler) -> Callable[[], None]:
        period = self.program.period

        def run() -> None:
            for i in range(SEGMENT):
                x = self.samples[:, i]  # sampled in place and fed from there: no copy a step
                if sampler.fused:
                    sampler.sample_at(self.logits, x, self.step, i)
                else:
                    sampler.sample(self.logits, x, noise=self.noise[i])
                self.torch.step(x, self.logits, (phase + i) % period)
        return run

    def _segment(self, mode: str, phase: int, steps: Callable[[int], Callable[[], None]]) -> None:
        """Run the segment starting at graph ``phase`` over the static buffers: replay its
        recording, or run it eagerly and record it; then put the host's ring positions where
        the segment leaves them."""
        key = (mode, phase // SEGMENT)
        positions = self.program.positions.array
        recording = self.recorded.get(key)
        if recording is None:
            fn = steps(phase)
            with self.recorder.eager():
                fn()
            positions[:] = self.schedule.positions[phase]
            self.recorded[key] = self.recorder.record(fn)
        else:
            recording.replay()
        positions[:] = self.schedule.positions[phase + SEGMENT]

    def _run(self, t0: int, n: int, logits: torch.Tensor, eager: Callable[[int, int], None],
             segment: Callable[[int, int], None]) -> None:
        """Steps ``t0 .. t0+n-1``: ``eager(lo, hi)`` runs block steps ``lo:hi`` through the
        torch executor; ``segment(at, phase)`` runs the whole segment at block step ``at``
        (graph ``phase``) over the static buffers, which hold ``logits`` meanwhile."""
        if n == 0:
            return
        align_rings(self.program, self.schedule, t0)
        head = min(n, -t0 % SEGMENT)
        tail = head + (n - head) // SEGMENT * SEGMENT
        eager(0, head)
        if tail > head:
            self.logits.copy_(logits)
            for at in range(head, tail, SEGMENT):
                segment(at, (t0 + at) % self.schedule.period)
            logits.copy_(self.logits)
        eager(tail, n)

    # -- the executor interface ----------------------------------------------------------
    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        with_out = out is not None
        mode = "feed+logits" if with_out else "feed"

        def eager(lo: int, hi: int) -> None:
            self.torch.feed_block(xs[:, lo:hi], out[:, lo:hi] if with_out else None, logits,
                                  t0 + lo)

        def segment(at: int, phase: int) -> None:
            self.inputs.copy_(xs[:, at : at + SEGMENT])
            self._segment(mode, phase, lambda p: self._feed_steps(p, with_out))
            if with_out:
                out[:, at : at + SEGMENT].copy_(self.logits_out)

        self._run(t0, xs.shape[1], logits, eager, segment)

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        self._keep_graphs_of(sampler)

        def eager(lo: int, hi: int) -> None:
            self.torch.generate_block(hi - lo, sampler, out[:, lo:hi], logits, t0 + lo, x)

        def segment(at: int, phase: int) -> None:
            if sampler.fused:  # the kernels draw the noise of the segment's steps
                self.step.fill_(sampler.claim(SEGMENT))
            elif sampler.uses_noise:  # the segment's noise, drawn straight into its buffer
                sampler.draw(sampler.claim(SEGMENT), self.noise)
            self._segment("generate", phase, lambda p: self._generate_steps(p, sampler))
            out[:, at : at + SEGMENT].copy_(self.samples)

        self._run(t0, n, logits, eager, segment)

    @cached_property
    def noise(self) -> torch.Tensor:
        """A segment's noise for torch's sampler (SEGMENT, B, classes), allocated at its first
        use (4 GiB at 65,536 streams of 256 classes: a fused sampler needs none)."""
        p = self.program
        return torch.zeros(SEGMENT, p.batch, p.classes, dtype=torch.float32, device=p.device)

    def _keep_graphs_of(self, sampler: Sampler) -> None:
        """Drop the generate graphs unless they were recorded with this sampler and config
        (they hold its scratch buffers and its settings); the sampler is kept alive with them."""
        if self._sampler is not None and (self._sampler[0] is not sampler
                                          or self._sampler[1] != sampler.config):
            self.recorded = {k: r for k, r in self.recorded.items() if k[0] != "generate"}
        self._sampler = (sampler, sampler.config)

"""The incremental inference engine: a batch of independent streams over a trained network.

Teacher-forced (``feed``) and free-running (``generate``) use the same step: one new input
class per stream in, one distribution over the next sample out. The engine's output at step
``t`` equals the offline forward pass over the whole sequence, on a grid fixed in absolute
time (level ``l`` frames at ``(t + 1) % 2**l == 0``), with the start history (zero vectors,
or the silence class: ``STARTS``) before each stream's start.
"""

from __future__ import annotations

import numbers
from typing import Any

import torch
from torch import nn

from streamgen.devices import resolve_device
from streamgen.engine.backends import BACKENDS, KERNELS
from streamgen.engine.capture import Capture
from streamgen.engine.clock import silence_class, zero_index
from streamgen.engine.fast import numba_available
from streamgen.engine.program import (CAPACITIES, Executor, StepProgram, TorchExecutor, build_program,
                                      native_inputs)
from streamgen.engine.sampling import Sampler, SamplingConfig
from streamgen.engine.schedule import RingSchedule, align_rings
from streamgen.engine.tables import BackendError, unsupported_layers
from streamgen.sampling import STARTS

#: On one thread, batches up to this size stream faster through the numba kernel than through
#: batched torch matrix products: with plain sampling the crossover lies between 64 streams
#: (numba 1.4x ahead) and 256 (torch 1.2x ahead) in benchmarks/results/cpu-x86-64-full.md.
#: On more threads numba leads at every batch measured (this 2-core VM, the model's top-p:
#: 230k vs 120k samples/s at 256 streams, 236k vs 159k at 1,024; torch on the same threads).
NUMBA_MAX_BATCH = 64


def resolve_capacity(capacity: str, device: torch.device, backend: str) -> str:
    """The ring capacity rule (``CAPACITIES``) ``capacity`` names: ``auto`` is ``period`` on a
    CUDA device and for the backends that need it anywhere (graphs, the persistent kernels),
    ``double`` on the CPU otherwise (what the CPU figures were measured with)."""
    if capacity == "auto":
        scheduled = backend == "graphs" or backend in KERNELS
        return "period" if device.type == "cuda" or scheduled else "double"
    if capacity not in CAPACITIES:
        raise ValueError(f"unknown ring capacity {capacity!r}; choose one of {('auto',) + CAPACITIES}")
    return capacity


def _graphs_executor(program: StepProgram) -> Executor:
    from streamgen.engine.gpu.graphs import GraphExecutor

    return GraphExecutor(program)


def _latency_executor(program: StepProgram, backend: str) -> Executor:
    """A persistent kernel where one runs ``program``: ``auto`` on a CUDA device takes
    numba-cuda (23.8k samples/s for the default model at batch 1 on an H200, against Triton's
    18.4k side by side), else Triton, at batches up to their ``MAX_BATCH``; else graphs (rings
    on a schedule) or torch. The grid kernel (``numba-cuda-grid``, many blocks per stream)
    runs when asked for, until it is timed. An explicit kernel that cannot run is an error."""
    from streamgen.engine.gpu.cuda_executor import CudaExecutor
    from streamgen.engine.gpu.flat import MAX_BATCH
    from streamgen.engine.gpu.triton_executor import TritonExecutor

    if backend == "numba-cuda":
        return CudaExecutor(program)
    if backend == "numba-cuda-grid":
        from streamgen.engine.gpu.grid_executor import GridExecutor

        return GridExecutor(program)
    if backend == "triton":
        return TritonExecutor(program)
    # auto takes a kernel for Seq-U-Nets (timed); the numba-cuda kernels run WaveNets when asked
    if program.batch <= MAX_BATCH and unsupported_layers(program) is None:
        for kernel in (CudaExecutor, TritonExecutor):
            if not kernel.unsupported(program):
                return kernel(program)
    return _graphs_executor(program) if program.capacity == "period" else TorchExecutor(program)


def build_executor(program: StepProgram, backend: str, threads: int | None = None) -> Executor:
    """An executor of ``program``'s plans: ``auto`` picks the compiled interpreter of the plan
    tables where it runs the program and is faster (on the CPU numba: 25x torch at batch 1; up
    to ``NUMBA_MAX_BATCH`` streams where it has one thread; on a CUDA GPU a persistent kernel,
    numba-cuda or Triton, at batches up to 64 (``_latency_executor``), else CUDA graphs of the
    torch steps where the rings run on a schedule), else torch."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "torch":
        return TorchExecutor(program)
    if backend == "graphs":
        return _graphs_executor(program)
    if backend in KERNELS or (backend == "auto" and program.device.type == "cuda"):
        return _latency_executor(program, backend)
    if not numba_available():
        if backend == "numba":
            raise BackendError("the numba backend needs numba: pip install numba")
        return TorchExecutor(program)
    from streamgen.engine.fast.numba_executor import NumbaExecutor, resolve_threads

    one_thread_large_batch = program.batch > NUMBA_MAX_BATCH and resolve_threads(threads) == 1
    if backend == "auto" and (NumbaExecutor.unsupported(program) or one_thread_large_batch):
        return TorchExecutor(program)
    return NumbaExecutor(program, threads)


def available_backends(model: nn.Module, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> list[str]:
    """The backends that can stream ``model`` on ``device`` (torch always can; triton,
    numba-cuda, numba-cuda-grid and graphs on a CUDA device only: not through Triton's
    interpreter, numba's simulator, nor graphs' CPU stand-in)."""
    from streamgen.engine.gpu.cuda_executor import CudaExecutor
    from streamgen.engine.gpu.grid_executor import GridExecutor
    from streamgen.engine.gpu.triton_executor import TritonExecutor

    device = torch.device(device)
    program = build_program(model, 1, device, dtype, inputs=native_inputs(model),
                            capacity=resolve_capacity("auto", device, "auto"))
    backends = ["torch"]
    if numba_available():
        from streamgen.engine.fast.numba_executor import NumbaExecutor

        backends += [] if NumbaExecutor.unsupported(program) else ["numba"]
    for name, kernel in (("triton", TritonExecutor), ("numba-cuda", CudaExecutor),
                         ("numba-cuda-grid", GridExecutor)):
        if program.device.type == "cuda" and not kernel.unsupported(program):
            backends.append(name)
    if program.device.type == "cuda":
        backends.append("graphs")
    return backends


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether ``a`` and ``b`` are one device (``cuda`` without an index: the current one)."""
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _whole(value: object, least: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``least``."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least


class StreamingEngine:
    """Streams of a trained network (any kind with a step program: ``SeqUNet``, ``WaveNet``,
    ``TCN``, ``PlainSeqUNet``), one sample per step.

    All state lives in preallocated rings sized from the network's layers; nothing is
    allocated and no history is copied per step. ``device`` defaults to the model's.
    ``capacity`` sizes the rings (``streamgen.engine.program.ring_capacity``): ``"double"``
    (two windows each), ``"period"`` (rewinds at the same phases of every graph period,
    fewer spare frames: what replaying recorded steps needs; the rings are then kept on the
    schedule, ``streamgen.engine.schedule``) or ``"auto"`` (``resolve_capacity``: period on
    a CUDA device or for the graphs backend, else double).
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        backend: str = "auto",
        start: str = "zeros",
        inputs: str = "classes",
        capacity: str = "auto",
        threads: int | None = None,
    ) -> None:
        """``start``: the history before a stream's first sample (``STARTS``). ``inputs``:
        ``classes`` (mu-law sample classes, (B, N) int64) or ``frames`` (float vectors of the
        model's ``classes`` channels, (B, N, classes), e.g. piano-roll frames: teacher-forced
        only, zero frames before the start). ``threads``: how many threads the numba backend
        runs the streams on, at most one per stream (None: numba's ``NUMBA_NUM_THREADS``,
        every core unless set); the samples are the same for any number."""
        if not _whole(batch_size, 1):
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if threads is not None and not _whole(threads, 1):
            raise ValueError(f"threads must be a whole number >= 1, got {threads!r}")
        if start not in STARTS:
            raise ValueError(f"unknown start {start!r}; choose one of {STARTS}")
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise ValueError(f"dtype must be a floating torch.dtype (torch.float32, "
                             f"torch.bfloat16, ...), got {dtype!r}")
        self.device = resolve_device(device) if device is not None else next(model.parameters()).device
        self.model = model
        self.batch_size, self.dtype, self.start = batch_size, dtype, start
        self.program = build_program(model, batch_size, self.device, dtype, inputs=inputs,
                                     capacity=resolve_capacity(capacity, self.device, backend))
        self.schedule: RingSchedule | None = (self.program.schedule
                                              if self.program.capacity == "period" else None)
        self.inputs = inputs
        self.executor = build_executor(self.program, backend, threads)
        self.backend: str = self.executor.name
        self.classes, self.period = self.program.classes, self.program.period
        self.t = 0  # index of the next step on the shared clock
        self.logits = torch.empty(batch_size, self.classes, dtype=dtype, device=self.device)
        self._input = torch.empty(batch_size, dtype=torch.int64, device=self.device)
        self._before = zero_index(self.classes) if start == "zeros" else silence_class(self.classes)
        # the start history is periodic in time: one capture holds every phase
        empty = self._empty_history()
        self._start = Capture(self.program, empty, t_last=2 * self.period - 1, span=self.period,
                              before=self._before)
        if start == "zeros" and inputs == "classes":  # the first sample is the silence class
            first = torch.full((self.classes,), -1e4, dtype=dtype, device=self.device)
            first[silence_class(self.classes)] = 0.0
            self._first_logits = [first] * self.period
        else:
            self._first_logits = [self._start.logits_at(self._start.t_first + i)[0].to(self.device, dtype)
                                  for i in range(self.period)]
        self.reset()

    def _empty_history(self) -> torch.Tensor:
        if self.inputs == "frames":
            return torch.empty(1, 0, self.classes, dtype=self.dtype)
        return torch.empty(1, 0, dtype=torch.int64)

    # -- state -------------------------------------------------------------------------
    def _place_rings(self, keep: bool) -> None:
        """Put the rings where the schedule (if any) has them before step ``self.t``: moving
        their windows (``keep``), or only their positions (every window is about to be
        overwritten). Replaying executors then find them in place."""
        if self.schedule is None:
            return
        if keep:
            align_rings(self.program, self.schedule, self.t)
        else:
            self.program.positions.array[:] = self.schedule.positions[self.t % self.schedule.period]

    def _load_capture(self, capture: Capture, t: int, streams: torch.Tensor | None) -> None:
        """Fill every ring (of all streams, or of ``streams``) as it stands after step ``t``
        of ``capture`` (batch 1 captures are broadcast)."""
        count = self.batch_size if streams is None else len(streams)
        for name, ring in self.program.rings.items():
            frames = capture.window(name, t).to(self.device)
            ring.fill(frames.expand(count, -1, -1), streams)

    def reset(self, streams: list[int] | torch.Tensor | None = None) -> None:
        """Restore the start history: all streams (and the clock), or only ``streams``.

        A stream reset mid-run continues on the shared clock as if every input it had
        received were the start history (``start``: zero vectors or the silence class).
        """
        if streams is None:
            self.t = 0
            sel = None
        else:
            sel = torch.as_tensor(streams, dtype=torch.int64, device=self.device).view(-1)
            if sel.numel() and (int(sel.min()) < 0 or int(sel.max()) >= self.batch_size):
                raise ValueError(f"streams must be in 0..{self.batch_size - 1}, got "
                                 f"{sel.tolist()}")
        self._place_rings(keep=sel is not None)
        start = self._start  # periodic: the captured step with the same clock phase as t - 1
        t = start.t_first + (self.t - 1 - start.t_first) % self.period
        self._load_capture(start, t, sel)
        first = self._first_logits[t - start.t_first]
        if sel is None:
            self.logits.copy_(first.expand_as(self.logits))
        else:
            self.logits[sel] = first

    def prime(self, prompt: torch.Tensor) -> torch.Tensor:
        """Restart all streams from a prompt ``(B, N)`` of classes in one offline pass.

        Equivalent to ``reset(); feed(prompt)`` (without returning every step's logits);
        returns the logits predicting the sample after the prompt.
        """
        prompt = self._check_inputs(prompt)
        n = prompt.shape[1]
        if n == 0:
            self.reset()
            return self.logits
        capture = Capture(self.program, prompt, t_last=n - 1, before=self._before)
        self.t = n
        self._place_rings(keep=False)
        self._load_capture(capture, n - 1, None)
        self.logits.copy_(capture.logits_at(n - 1))
        return self.logits

    def state_dict(self, sampler: Sampler | None = None) -> dict[str, Any]:
        """A copy of the full streaming state (rings, clock, pending logits), and of
        ``sampler``'s if given: restoring both continues the same free-running stream."""
        state: dict[str, Any] = {
            "t": self.t,
            "logits": self.logits.clone(),
            "rings": {n: (r.data.clone(), r.pos) for n, r in self.program.rings.items()},
        }
        if sampler is not None:
            state["sampler"] = sampler.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any], sampler: Sampler | None = None) -> None:
        """Restore a ``state_dict`` (saved by any backend and ring capacity of the same model
        and batch), and into ``sampler`` the sampler state saved with it."""
        if sampler is not None and "sampler" not in state:
            raise ValueError("this state holds no sampler; save it with state_dict(sampler)")
        rings = self.program.rings
        if set(state["rings"]) != set(rings) or any(
                data.shape[::2] != rings[name].data.shape[::2]
                for name, (data, _) in state["rings"].items()):
            raise ValueError("this state belongs to another network or batch size; restore it "
                             "into an engine of the same model and batch")
        self.t = int(state["t"])
        self.logits.copy_(state["logits"])
        for name, (data, pos) in state["rings"].items():
            ring = rings[name]
            if data.shape == ring.data.shape:
                ring.data.copy_(data)
                ring.pos = pos
            else:  # saved under another capacity rule: its window, at this ring's start
                ring.pos = ring.window_size - 1
                ring.fill(data[:, pos - ring.window_size + 1 : pos + 1])
        self._place_rings(keep=True)
        if sampler is not None:
            sampler.load_state_dict(state["sampler"])

    # -- stepping ----------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N) classes, or (B, N, classes) frames, on the engine's device."""
        x = torch.as_tensor(x)
        if self.inputs == "frames":
            if x.dim() != 3 or x.shape[0] != self.batch_size or x.shape[2] != self.classes:
                raise ValueError(f"expected (batch={self.batch_size}, N, {self.classes}) frames, "
                                 f"got {tuple(x.shape)}")
            return x.to(device=self.device, dtype=self.dtype)
        if x.dim() != 2 or x.shape[0] != self.batch_size:
            raise ValueError(f"expected (batch={self.batch_size}, N) classes, got {tuple(x.shape)}")
        if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
            raise ValueError(f"expected integer classes (mu-law indices), got {x.dtype}: encode "
                             "audio with streamgen.audio.mulaw_encode first")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.classes):
            raise ValueError(f"classes must be in 0..{self.classes - 1}")
        return x.to(device=self.device, dtype=torch.int64)

    def _check_out(self, out: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        """``out`` must be exactly what the executors write into (their kernels trust it)."""
        if (not isinstance(out, torch.Tensor) or not _same_device(out.device, self.device)
                or tuple(out.shape) != shape or out.dtype != dtype):
            got = (f"{out.dtype} {tuple(out.shape)} on {out.device}"
                   if isinstance(out, torch.Tensor) else type(out).__name__)
            raise ValueError(f"out must be {dtype} {shape} on {self.device}, got {got}")

    @torch.no_grad()
    def feed(self, samples: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor | None:
        """Teacher-forced: consume ``samples`` (B, N); write each step's logits into ``out``
        ``(B, N, classes)`` if given. ``self.logits`` then predicts the next sample."""
        samples = self._check_inputs(samples).contiguous()
        if out is not None:
            self._check_out(out, (self.batch_size, samples.shape[1], self.classes), self.dtype)
        self.executor.feed_block(samples, out, self.logits, self.t)
        self.t += samples.shape[1]
        return out

    @torch.no_grad()
    def generate(self, n: int, sampler: Sampler, out: torch.Tensor | None = None) -> torch.Tensor:
        """Free-running: draw ``n`` samples per stream from the model into ``out`` (B, n)."""
        if self.inputs != "classes":
            raise ValueError("free-running generation draws classes; an engine fed frames "
                             "runs teacher-forced (feed)")
        if not _whole(n, 0):
            raise ValueError(f"n must be a whole number of samples >= 0, got {n!r}")
        n = int(n)
        if sampler.shape != (self.batch_size, self.classes) or not _same_device(sampler.device,
                                                                                self.device):
            raise ValueError(f"this sampler draws {sampler.shape[0]} streams of "
                             f"{sampler.shape[1]} classes on {sampler.device}, the engine "
                             f"{self.batch_size} of {self.classes} on {self.device}: make it with "
                             "engine.sampler()")
        if out is None:
            out = torch.empty(self.batch_size, n, dtype=torch.int64, device=self.device)
        else:
            self._check_out(out, (self.batch_size, n), torch.int64)
        self.executor.generate_block(n, sampler, out, self.logits, self.t, self._input)
        self.t += n
        return out

    def sampler(self, config: SamplingConfig | None = None, seed: int = 0) -> Sampler:
        """A sampler matching this engine's batch, classes and device."""
        return Sampler(config or SamplingConfig(), self.batch_size, self.classes,
                       seed=seed, device=self.device)

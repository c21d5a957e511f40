"""Flat buffers for the persistent GPU kernels, and the executor they share.

A kernel that walks placed plans (``streamgen.engine.gpu.placed``) reads every float frame
from one flat buffer, the class indices from the index ring's own buffer, and the weights from
one flat buffer: ``FlatPlans`` moves the program's rings there (``FrameRing.data`` and
``head_in`` become views of it, so capture, reset, prime and state save/restore stay the
torch executor's) and lays out the weights and the rows. ``PlacedExecutor`` runs blocks of
steps through a kernel's ``launch``: it aligns the rings with the schedule before a block and
sets their positions from it after, one launch per block of teacher-forced steps or per noise
block of free-running ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from streamgen.engine.gpu import placed
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.schedule import align_rings
from streamgen.engine.tables import PlanTables, WaveNetWeights, plan_tables, unsupported_layers
from streamgen.sampling import SamplingConfig

#: Weight matrix rows start on multiples of this many elements (16-byte loads of float32).
ALIGN = 16
#: The persistent kernels are built for the latency regime: one thread block (or Triton
#: program) per stream, so a batch beyond the GPU's multiprocessors runs in waves; larger
#: batches go to batched matrix products (graphs, torch).
MAX_BATCH = 64


#: A WaveNet layer's entry in ``FlatPlans.wavenet`` (offsets into the weight buffer; pitches
#: in elements; ``skip_bias`` -1 but on the first layer, whose summed skip biases start the
#: skip sum; ``last`` 1 on the layer that writes the finished sum instead of a residual).
WAVENET_COLUMNS = ("taps", "tap_stride", "residual_channels", "dilation_channels",
                   "skip_channels", "residual", "residual_pitch", "residual_bias", "skip",
                   "skip_pitch", "skip_bias", "last")


def _wavenet_row(layer: WaveNetWeights, put, channels: int) -> list[int]:
    """A WaveNet layer's ``WAVENET_COLUMNS``, its weights put into the buffer by ``put``."""
    residual, residual_pitch = put(layer.residual, False)
    skip, skip_pitch = put(layer.skip, False)
    skip_bias = put(layer.skip_bias)[0] if layer.skip_bias is not None else -1
    d, r = layer.residual.shape
    return [layer.taps, layer.dilation * channels, r, d, layer.skip.shape[1], residual,
            residual_pitch, put(layer.residual_bias)[0], skip, skip_pitch, skip_bias,
            int(layer.last)]


@dataclass
class FlatPlans:
    """A program's state, weights and placed rows in flat device buffers."""

    frames: torch.Tensor  # float32: every float ring, then the head input
    weights: torch.Tensor  # per float ring: (2C, window) matrix, odd taps, bias
    rows: torch.Tensor  # (rows, len(placed.COLUMNS)) int64
    starts: torch.Tensor  # (period + 1,) int64: phase p's rows are rows[starts[p]:starts[p+1]]
    tables: PlanTables
    layout: placed.FlatLayout  # where each ring's frames, and the head input, are in ``frames``
    widest: int  # the most elements a gated layer reads
    wavenet: torch.Tensor  # (WaveNet layers, len(WAVENET_COLUMNS)) int64: a WAVENET row's rest

    @property
    def head_at(self) -> int:
        """Where stream 0's head input starts in ``frames``."""
        return self.layout.head_at

    @property
    def head_width(self) -> int:
        """The head input's elements per stream."""
        return self.layout.head_width

    @property
    def max_rows(self) -> int:
        """The most rows of any phase."""
        return int((self.starts[1:] - self.starts[:-1]).max())


def flatten(program: StepProgram, weight_dtype: torch.dtype = torch.float32, *,
            transposed: bool = False) -> FlatPlans:
    """Move ``program``'s float rings into one flat buffer and place its plans on it.
    ``transposed``: each (2C, pitch) matrix is stored as its (pitch, 2C) transpose at the same
    offset (a window element's 2C weights side by side)."""
    dev = program.device
    tables = plan_tables(program)
    float_rings = {n: r for n, r in program.rings.items() if n != INPUT_RING}
    head_width = program.head_in.shape[1]
    size = sum(r.data.numel() for r in float_rings.values()) + program.head_in.numel()
    frames = torch.zeros(size, dtype=torch.float32, device=dev)
    at, stride, channels, offset = {}, {}, {}, 0
    for name, ring in program.rings.items():
        at[name], stride[name] = offset, ring.capacity * ring.channels
        channels[name] = ring.channels
        if name == INPUT_RING:  # its own int64 buffer
            at[name] = 0
            continue
        view = frames[offset : offset + ring.data.numel()].view(ring.data.shape)
        view.copy_(ring.data)
        ring.data = view
        offset += view.numel()
    program.head_in = frames[offset:].view(program.batch, head_width)
    layout = placed.FlatLayout(at, stride, channels, head_at=offset, head_width=head_width)
    # per float ring its (2C, K) matrix, odd taps and bias, each matrix row starting on a
    # multiple of ALIGN elements (vector loads)
    parts: list[torch.Tensor] = []
    full, odd, bias, full_pitch, odd_pitch = {}, {}, {}, {}, {}

    def put(t: torch.Tensor | None, transpose: bool = transposed) -> tuple[int, int]:
        if t is None:
            return 0, 0
        t = t.detach().to(dev, weight_dtype)
        pitch = -(-t.shape[-1] // ALIGN) * ALIGN
        if t.dim() == 2:
            t = torch.nn.functional.pad(t, (0, pitch - t.shape[1]))
            if transpose:
                t = t.t()
        start = sum(p.numel() for p in parts)
        parts.append(t.contiguous().view(-1))
        parts.append(torch.zeros((-t.numel()) % ALIGN, dtype=t.dtype, device=dev))
        return start, pitch

    wavenet: dict[str, int] = {}
    wavenet_rows: list[list[int]] = []
    for name, layer in zip(program.rings, tables.layers):
        if isinstance(layer, WaveNetWeights):  # its matrices as they come, whatever the kernel
            full[name], full_pitch[name] = put(layer.conv, False)
            bias[name] = put(layer.conv_bias)[0]
            wavenet[name] = len(wavenet_rows)
            wavenet_rows.append(_wavenet_row(layer, put, channels[name]))
        elif layer is not None:
            full[name], full_pitch[name] = put(layer.full)
            odd[name], odd_pitch[name] = put(layer.odd)
            bias[name] = put(layer.bias)[0]
    rows, starts = placed.placed_rows(program, program.schedule, layout, placed.WeightOffsets(
        full, odd, bias, full_pitch, odd_pitch, wavenet))
    widest = max([int(r[5]) for r in rows if r[0] == placed.OP_GATED] or [1])

    def i64(values: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values, dtype=np.int64), device=dev)

    return FlatPlans(frames, torch.cat(parts), i64(rows), i64(starts), tables, layout, widest,
                     i64(np.array(wavenet_rows, dtype=np.int64).reshape(-1, len(WAVENET_COLUMNS))))


@dataclass(frozen=True)
class Block:
    """One launch's work: ``n`` steps from clock ``t0``. Teacher-forced: classes ``xs``
    (B, n) in, each step's logits into ``out`` (B, n, classes) if ``write_out``. Free-running
    (``sampling`` set): noise rows ``noise[noise_at:]``, samples into ``out`` (B, n). The
    pending ``logits`` (B, classes) are read at the start and written back at the end."""

    n: int
    t0: int
    logits: torch.Tensor
    xs: torch.Tensor | None
    out: torch.Tensor | None
    noise: torch.Tensor | None
    noise_at: int
    sampling: SamplingConfig | None
    write_out: bool


def refusal(program: StepProgram, backend: str, *, missing: str | None, on_cpu: bool,
            cpu_mode: str, wavenet: bool = False) -> str | None:
    """Why the persistent kernel ``backend`` cannot run ``program`` (None if it can):
    ``missing`` names what to install if its tool is absent; ``on_cpu`` says whether this
    process runs the tool's kernels on the CPU (``cpu_mode``: how that is switched on);
    ``wavenet``: whether the kernel runs WaveNet layers too."""
    if missing:
        return missing
    if program.device.type != "cuda" and not on_cpu:
        return (f"the {backend} backend runs on a CUDA device, not {program.device.type!r} "
                f"(or on the CPU with {cpu_mode})")
    if program.device.type == "cuda" and on_cpu:
        return f"the {backend} backend runs its kernels on the CPU in this process ({cpu_mode})"
    if program.dtype != torch.float32:
        return f"the {backend} backend runs in float32, not {program.dtype}"
    reason = unsupported_layers(program, wavenet)
    if reason:
        return f"the {backend} backend runs {reason}"
    if program.capacity != "period":
        return f"the {backend} backend runs rings that repeat with the clock (capacity='period')"
    return None


class PlacedExecutor:
    """Runs blocks of steps of a program through a persistent kernel over ``FlatPlans``;
    subclasses set ``name`` and implement ``launch``."""

    name = "placed"
    #: How the gated layers' weights are stored (read as float32).
    weight_dtype: torch.dtype = torch.float32

    #: Whether the kernel reads each weight matrix transposed (``flatten``).
    transposed_weights: bool = False

    def __init__(self, program: StepProgram) -> None:
        self.program = program
        self.schedule = program.schedule
        self.flat = flatten(program, self.weight_dtype, transposed=self.transposed_weights)

    def launch(self, block: Block) -> None:
        raise NotImplementedError

    def _run(self, block: Block) -> None:
        p = self.program
        align_rings(p, self.schedule, block.t0)
        self.launch(block)
        p.positions.array[:] = self.schedule.positions[(block.t0 + block.n) % self.schedule.period]

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        n = xs.shape[1]
        if n == 0:
            return
        write = out is not None
        buf = out if write and out.is_contiguous() else None
        if write and buf is None:
            buf = torch.empty(out.shape, dtype=torch.float32, device=out.device)
        self._run(Block(n, t0, logits, xs.contiguous(), buf, None, 0, None, write))
        if write and buf is not out:
            out.copy_(buf)

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        done = 0
        for noise, start, count in sampler.runs(n):  # one launch per noise block
            buf = torch.empty(out.shape[0], count, dtype=torch.int64, device=out.device)
            self._run(Block(count, t0 + done, logits, None, buf, noise, start, sampler.config,
                            False))
            out[:, done : done + count].copy_(buf)
            x.copy_(buf[:, -1])
            done += count

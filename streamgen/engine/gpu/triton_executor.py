"""The Triton executor: a program's plans run by one persistent kernel launch per block.

The latency regime (batch 1 to ``MAX_BATCH``): one Triton program per stream walks the placed
plans of ``streamgen.engine.gpu.placed`` (every address resolved by the ring schedule) for a
whole block of steps, sampling included, so a block of hundreds of samples costs one launch
instead of about 60 small kernels per step. Like the numba executor it runs Seq-U-Net plans
in float32, over the program's own rings (moved into one flat buffer; ``FrameRing.data`` and
``head_in`` become views of it), so capture, reset, prime and state save/restore are shared
with the torch executor. The rings must repeat with the clock (``capacity="period"``): a
block starts by aligning them to the schedule and ends by setting their positions from it.

It runs on a CUDA device, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``
set before triton is first imported: the mode holds for the whole process), which is how the
tests check it without a GPU.
"""

from __future__ import annotations

import numpy as np
import torch

from streamgen.engine.gpu import interpreting, triton_available
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.schedule import align_rings
from streamgen.engine.tables import plan_tables, refuse_unless_runnable, unsupported_layers

#: The executor is built for the latency regime; larger batches go to torch's batched
#: matrix products (one program per stream: a batch beyond the GPU's multiprocessors runs
#: in waves).
MAX_BATCH = 64
#: Weight matrix rows start on multiples of this many elements (16-byte loads of float32).
ALIGN = 16


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << max(n - 1, 0).bit_length()))


class TritonExecutor:
    """float32 Seq-U-Net plans on a CUDA device (or the Triton interpreter on the CPU)."""

    name = "triton"
    #: Warps per program; None: by the widest layer tile (``_warps``).
    num_warps: int | None = None
    #: How the gated layers' weights are stored (read as float32).
    weight_dtype: torch.dtype = torch.float32

    @staticmethod
    def unsupported(program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        if not triton_available():
            return "the triton backend needs triton (pip install triton; CUDA builds of torch ship it)"
        if program.device.type != "cuda" and not interpreting():
            return (f"the triton backend runs on a CUDA device, not {program.device.type!r} "
                    f"(or on the CPU with TRITON_INTERPRET=1)")
        if program.device.type == "cuda" and interpreting():
            return "triton runs through its CPU interpreter in this process (TRITON_INTERPRET=1)"
        if program.dtype != torch.float32:
            return f"the triton backend runs in float32, not {program.dtype}"
        reason = unsupported_layers(program)
        if reason:
            return f"the triton backend runs {reason}"
        if program.capacity != "period":
            return "the triton backend runs rings that repeat with the clock (capacity='period')"
        return None

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        from streamgen.engine.gpu import placed, triton_kernels

        self._kernels = triton_kernels
        self.program = program
        self.schedule = program.schedule
        dev = program.device
        tables = plan_tables(program)

        def i64(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.int64), device=dev)

        # one flat float buffer for every float ring and the head input, which become views
        float_rings = {n: r for n, r in program.rings.items() if n != INPUT_RING}
        head_width = program.head_in.shape[1]
        size = sum(r.data.numel() for r in float_rings.values()) + program.head_in.numel()
        self.frames = torch.zeros(size, dtype=torch.float32, device=dev)
        at, stride, channels, offset = {}, {}, {}, 0
        for name, ring in program.rings.items():
            at[name], stride[name] = offset, ring.capacity * ring.channels
            channels[name] = ring.channels
            if name == INPUT_RING:  # its own int64 buffer
                at[name] = 0
                continue
            view = self.frames[offset : offset + ring.data.numel()].view(ring.data.shape)
            view.copy_(ring.data)
            ring.data = view
            offset += view.numel()
        program.head_in = self.frames[offset:].view(program.batch, head_width)
        layout = placed.FlatLayout(at, stride, channels, head_at=offset, head_width=head_width)
        # one flat weight buffer: per float ring its (2C, K) matrix, odd taps and bias, each
        # matrix row starting on a multiple of ALIGN elements (vector loads)
        parts: list[torch.Tensor] = []
        full, odd, bias, full_pitch, odd_pitch = {}, {}, {}, {}, {}

        def put(t: torch.Tensor | None) -> tuple[int, int]:
            if t is None:
                return 0, 0
            t = t.detach().to(dev, self.weight_dtype)
            pitch = -(-t.shape[-1] // ALIGN) * ALIGN
            if t.dim() == 2:
                t = torch.nn.functional.pad(t, (0, pitch - t.shape[1]))
            start = sum(p.numel() for p in parts)
            parts.append(t.contiguous().view(-1))
            parts.append(torch.zeros((-t.numel()) % ALIGN, dtype=t.dtype, device=dev))
            return start, pitch

        for name, layer in zip(program.rings, tables.layers):
            if layer is not None:
                full[name], full_pitch[name] = put(layer.full)
                odd[name], odd_pitch[name] = put(layer.odd)
                bias[name] = put(layer.bias)[0]
        self.weights = torch.cat(parts)
        rows, starts = placed.placed_rows(program, self.schedule, layout, placed.WeightOffsets(
            full, odd, bias, full_pitch, odd_pitch))
        self.rows, self.starts = i64(rows), i64(starts)

        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, torch.float32).contiguous()

        self.embed, self.embed_bias = f32(tables.embed_table), f32(tables.embed_bias)
        self.head_w, self.head_b = f32(tables.head_weight), f32(tables.head_bias)
        self.head_at, self.head_width = offset, head_width
        widest = max([int(r[5]) for r in rows if r[0] == placed.OP_GATED] or [1])
        self.blocks = dict(
            BLOCK_O=_pow2(tables.width // 2, 16, 32),
            BLOCK_K=_pow2(widest, 32, 256),
            BLOCK_C=_pow2(program.classes, 16, 1 << 16),
            BLOCK_H=_pow2(head_width, 16, 32),
            BLOCK_W=_pow2(int(tables.windows[tables.index_ring]), 2, 1 << 10),
            BLOCK_R=min(32, _pow2(program.classes, 16, 1 << 16)),
        )
        self._dummy_f = torch.zeros(1, dtype=torch.float32, device=dev)
        self._dummy_i = torch.zeros(1, dtype=torch.int64, device=dev)

    def _warps(self) -> int:
        """16 warps for tiles of 8k weights or more: on an H200 the default model streamed
        18.4k samples/s at batch 1 with 16 against 17.2k with 8, the paper-size one 1,278
        against 1,169 (one run)."""
        if self.num_warps is not None:
            return self.num_warps
        return 16 if self.blocks["BLOCK_O"] * self.blocks["BLOCK_K"] >= 8192 else 4

    def _launch(self, n: int, t0: int, logits: torch.Tensor, xs: torch.Tensor,
                out: torch.Tensor, noise: torch.Tensor, noise_at: int, sampler: Sampler | None,
                write_out: bool) -> None:
        p = self.program
        align_rings(p, self.schedule, t0)
        cfg = sampler.config if sampler is not None else None
        self._kernels.run_block[(p.batch,)](
            self.rows, self.starts, n, t0, self.schedule.period,
            self.frames, p.rings[INPUT_RING].data, self.weights,
            self.embed, self.embed_bias, self.embed.shape[1], p.classes + 1,
            self.head_w, self.head_b, self.head_at, self.head_width,
            logits, p.classes, p.batch,
            xs, out,
            noise, noise_at,
            float(cfg.temperature) if cfg else 1.0, int(cfg.top_k) if cfg else 0,
            float(cfg.top_p) if cfg else 1.0,
            GENERATE=sampler is not None, WRITE_OUT=write_out,
            GREEDY=bool(cfg and cfg.greedy), TOP_K=bool(cfg and cfg.top_k),
            TOP_P=bool(cfg and cfg.top_p < 1.0),
            num_warps=self._warps(),
            **self.blocks,
        )
        p.positions.array[:] = self.schedule.positions[(t0 + n) % self.schedule.period]

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        n = xs.shape[1]
        if n == 0:
            return
        write = out is not None
        buf = out if write and out.is_contiguous() else None
        if write and buf is None:
            buf = torch.empty(out.shape, dtype=torch.float32, device=out.device)
        self._launch(n, t0, logits, xs.contiguous(), buf if write else self._dummy_f,
                     self._dummy_f, 0, None, write)
        if write and buf is not out:
            out.copy_(buf)

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        done = 0
        for noise, start, count in sampler.runs(n):  # one launch per noise block
            buf = torch.empty(out.shape[0], count, dtype=torch.int64, device=out.device)
            self._launch(count, t0 + done, logits, self._dummy_i, buf, noise, start, sampler,
                         False)
            out[:, done : done + count].copy_(buf)
            x.copy_(buf[:, -1])
            done += count

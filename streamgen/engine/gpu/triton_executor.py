"""The Triton executor: a program's plans run by one persistent kernel launch per block.

The latency regime (batch 1 to ``MAX_BATCH``): one Triton program per stream interprets the
plan tables of ``streamgen.engine.tables`` (the numba executor's) for a whole block of steps,
sampling included, so a block of hundreds of samples costs one launch instead of about 60
small kernels per step. Like the numba executor it runs Seq-U-Net plans in float32, over
the program's own rings (moved into one flat buffer; ``FrameRing.data`` become views of it)
and shared ring positions, so capture, reset, prime and state save/restore are shared with
the torch executor.

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
from streamgen.engine.tables import plan_tables, refuse_unless_runnable, unsupported_layers

#: The executor is built for the latency regime; larger batches go to torch's batched
#: matrix products (one program per stream: a batch beyond the GPU's multiprocessors runs
#: in waves).
MAX_BATCH = 64


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << max(n - 1, 0).bit_length()))


class TritonExecutor:
    """float32 Seq-U-Net plans on a CUDA device (or the Triton interpreter on the CPU)."""

    name = "triton"

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
        return f"the triton backend runs {reason}" if reason else None

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        from streamgen.engine.gpu import triton_kernels

        self._kernels = triton_kernels
        self.program = program
        dev = program.device
        tables = plan_tables(program)
        rings = list(program.rings.values())

        def i64(values) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.int64), device=dev)

        # one flat float buffer for every float ring; the rings become views of it
        float_rings = [r for n, r in program.rings.items() if n != INPUT_RING]
        self.ring_storage = torch.zeros(sum(r.data.numel() for r in float_rings),
                                        dtype=torch.float32, device=dev)
        offsets, at = [], 0
        for name, ring in program.rings.items():
            offsets.append(at if name != INPUT_RING else 0)
            if name != INPUT_RING:
                view = self.ring_storage[at : at + ring.data.numel()].view(ring.data.shape)
                view.copy_(ring.data)
                ring.data = view
                at += view.numel()
        # one flat weight buffer: per ring its (2C, K) matrix, odd taps and bias
        parts: list[torch.Tensor] = []
        w_off, odd_off, bias_off = [], [], []

        def put(t: torch.Tensor | None) -> int:
            if t is None:
                return 0
            start = sum(p.numel() for p in parts)
            parts.append(t.detach().to(dev, torch.float32).contiguous().view(-1))
            return start

        for layer in tables.layers:
            w_off.append(put(layer.full if layer else None))
            odd_off.append(put(layer.odd if layer else None))
            bias_off.append(put(layer.bias if layer else None))
        self.weights = torch.cat(parts) if parts else torch.zeros(1, device=dev)
        self.w_off, self.odd_off, self.bias_off = i64(w_off), i64(odd_off), i64(bias_off)

        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, torch.float32).contiguous()

        self.embed, self.embed_bias = f32(tables.embed_table), f32(tables.embed_bias)
        self.head_w, self.head_b = f32(tables.head_weight), f32(tables.head_bias)
        self.ops, self.starts = i64(tables.ops), i64(tables.starts)
        self.ring_off = i64(offsets)
        self.ring_cap = i64([r.capacity for r in rings])
        self.ring_ch = i64([r.channels for r in rings])
        self.windows = i64(tables.windows)
        self.index_ring = tables.index_ring
        self.pos = torch.zeros(len(rings), dtype=torch.int64, device=dev)
        self.pos_out = torch.zeros_like(self.pos)
        self.blocks = dict(
            BLOCK_R=_pow2(len(rings), 16, 1 << 16),
            BLOCK_O=_pow2(tables.width // 2, 16, 32),  # 64 spills registers on sm_90
            BLOCK_K=64,
            BLOCK_C=_pow2(program.classes, 16, 1 << 16),
        )
        self._dummy_f = torch.zeros(1, dtype=torch.float32, device=dev)
        self._dummy_i = torch.zeros(1, dtype=torch.int64, device=dev)

    def _launch(self, n: int, t0: int, logits: torch.Tensor, xs: torch.Tensor,
                out: torch.Tensor, noise: torch.Tensor, noise_at: int, sampler: Sampler | None,
                write_out: bool) -> None:
        p = self.program
        positions = p.positions.array
        self.pos.copy_(torch.from_numpy(positions))
        cfg = sampler.config if sampler is not None else None
        self._kernels.run_block[(p.batch,)](
            self.ops, self.starts, n, t0, p.period,
            self.pos, self.pos_out, len(positions), self.ring_off, self.ring_cap, self.ring_ch,
            self.windows,
            self.ring_storage, p.rings[INPUT_RING].data, self.index_ring,
            self.weights, self.w_off, self.odd_off, self.bias_off,
            self.embed, self.embed_bias, self.embed.shape[1], p.classes + 1,
            self.head_w, self.head_b, p.head_in, p.head_in.shape[1],
            logits, p.classes, p.batch,
            xs, out,
            noise, noise_at,
            float(cfg.temperature) if cfg else 1.0, int(cfg.top_k) if cfg else 0,
            float(cfg.top_p) if cfg else 1.0,
            GENERATE=sampler is not None, WRITE_OUT=write_out,
            GREEDY=bool(cfg and cfg.greedy), TOP_K=bool(cfg and cfg.top_k),
            TOP_P=bool(cfg and cfg.top_p < 1.0),
            **self.blocks,
        )
        positions[:] = self.pos_out.cpu().numpy()

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
        while done < n:  # one launch per noise block (at most NOISE_BLOCK steps)
            noise, start, count = sampler.take(n - done)
            buf = torch.empty(out.shape[0], count, dtype=torch.int64, device=out.device)
            self._launch(count, t0 + done, logits, self._dummy_i, buf, noise, start, sampler,
                         False)
            out[:, done : done + count].copy_(buf)
            x.copy_(buf[:, -1])
            done += count

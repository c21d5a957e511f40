"""The numba executor: a program's plans as integer tables, run by a compiled interpreter.

It runs plans whose layers are all gated residual layers over float rings with a one-hot
input convolution and a ReLU + 1x1 head (the Seq-U-Net's), on the CPU in float32, a whole
block of steps per native call. The rings and their positions are the program's own (numpy
views), so capture, reset, prime and state save/restore are shared with the torch executor;
only the summation order of the dot products differs, within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from streamgen.engine.fast import kernels
from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Op, Taps
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.steps import GatedStep, OneHotConv, ReluDense, UpStep


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


class NumbaExecutor:
    """CPU float32 only; ``feed_block`` / ``generate_block`` run whole blocks natively."""

    name = "numba"

    @staticmethod
    def unsupported(program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        if program.device.type != "cpu" or program.dtype != torch.float32:
            return "the numba backend runs on the CPU in float32"
        if program.inputs != "classes":
            return "the numba backend streams class inputs, not frames"
        for name, kernel in program.kernels.items():
            fits = isinstance(kernel, OneHotConv) and kernel.dilation == 1 if name == INPUT_RING \
                else isinstance(kernel, (GatedStep, UpStep))
            if not fits:
                return (f"the numba backend runs plans of gated layers (Seq-U-Nets), not a "
                        f"{program.kind} ({type(kernel).__name__} at ring {name!r})")
        if not isinstance(program.head, ReluDense):
            return f"the numba backend has no kernel for the {program.kind} head"
        return None

    def __init__(self, program: StepProgram) -> None:
        reason = self.unsupported(program)
        if reason:
            raise ValueError(f"{reason}; use backend='torch'")
        self.program = program
        names = list(program.rings)
        self._index = {n: i for i, n in enumerate(names)}
        placeholder = np.zeros((1, 1, 1), dtype=np.float32)
        rings, weights, odds, biases = [], [], [], []
        for name in names:
            kernel = program.kernels[name]
            if isinstance(kernel, UpStep):  # (rows in, 2C) -> (2C, rows)
                rings.append(program.rings[name].data.numpy())
                weights.append(_f32(kernel.even.t()))
                odds.append(_f32(kernel.odd.t()))
                biases.append(_f32(kernel.bias[0]))
            elif isinstance(kernel, GatedStep):
                rings.append(program.rings[name].data.numpy())
                weights.append(_f32(kernel.conv.flat.t()))
                odds.append(placeholder[0])
                biases.append(_f32(kernel.conv.bias[0]))
            else:  # the index ring
                rings.append(placeholder)
                weights.append(placeholder[0])
                odds.append(placeholder[0])
                biases.append(placeholder[0, 0])
        table = [self._row(op) for plan in program.plan for op in plan]
        starts = np.cumsum([0] + [len(plan) for plan in program.plan])
        embed: OneHotConv = program.kernels[INPUT_RING]
        head: ReluDense = program.head
        width = max(2 * k.channels for k in program.kernels.values() if hasattr(k, "channels"))
        self.compiled = kernels.Compiled(
            ops=np.array(table, dtype=np.int64).reshape(-1, 6), starts=starts.astype(np.int64),
            pos=program.positions.array,
            wins=np.array([r.window_size for r in program.rings.values()], dtype=np.int64),
            rings=tuple(rings), index=program.rings[INPUT_RING].data.numpy(),
            index_ring=self._index[INPUT_RING], weights=tuple(weights), odds=tuple(odds),
            biases=tuple(biases), table=_f32(embed.table), table_bias=_f32(embed.bias),
            head_w=_f32(head.dense.weight.t()), head_b=_f32(head.dense.bias),
            head_in=program.head_in.numpy().reshape(program.batch, 1, -1),
            acc=np.zeros(width, dtype=np.float32),
        )

    def _ring(self, name: str) -> int:
        return -1 if name == HEAD else self._index[name]

    def _row(self, op: Op) -> tuple[int, ...]:
        """One table row: (opcode, a, b, c, d, e)."""
        if isinstance(op, Input):
            return (kernels.OP_INPUT, 0, 0, 0, 0, 0)
        if isinstance(op, Advance):
            return (kernels.OP_ADVANCE, self._index[op.ring], 0, 0, 0, 0)
        if isinstance(op, Layer):
            code = kernels.OP_EMBED if op.ring == INPUT_RING else kernels.OP_GATED
            taps = {Taps.ALL: kernels.TAPS_ALL, Taps.EVEN: kernels.TAPS_EVEN,
                    Taps.ODD: kernels.TAPS_ODD}[op.taps]
            return (code, self._index[op.ring], self._ring(op.dst), op.col, taps, op.width)
        if isinstance(op, Copy):
            return (kernels.OP_COPY, self._index[op.src], self._ring(op.dst), op.src_col,
                    op.dst_col, op.width)
        if isinstance(op, Head):
            return (kernels.OP_HEAD, 0, 0, 0, 0, 0)
        raise TypeError(f"unknown op {op!r}")

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        write = out is not None
        out_np = out.numpy() if write else np.zeros((1, 1, 1), dtype=np.float32)
        kernels.feed(xs.numpy(), out_np, write, t0, self.program.period, logits.numpy(),
                     self.compiled)

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        cfg = sampler.config
        classes = self.program.classes
        args = (np.float32(cfg.temperature), cfg.top_k, np.float32(cfg.top_p), cfg.greedy,
                np.zeros(classes, dtype=np.float32), np.zeros(classes, dtype=np.float32))
        done = 0
        while done < n:
            noise, start, count = sampler.take(n - done)
            kernels.generate(count, out[:, done : done + count].numpy(), t0 + done,
                             self.program.period, logits.numpy(), self.compiled, noise.numpy(),
                             start, *args, x.numpy())
            done += count

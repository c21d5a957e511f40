"""The numba executor: a program's plans as integer tables, run by a compiled interpreter.

It runs plans whose layers are all gated residual layers over float rings with a one-hot
input convolution and a ReLU + 1x1 head (the Seq-U-Net's), on the CPU in float32, a whole
block of steps per native call. The rings and their positions are the program's own (numpy
views), so capture, reset, prime and state save/restore are shared with the torch executor.
Only the arithmetic differs, within float32 rounding: the summation order of the dot products,
and the gates' tanh and the sampler's exp, computed by rational and polynomial approximations
(within 4e-7) in loops that vectorize.
"""

from __future__ import annotations

import numpy as np
import torch

from streamgen.engine.fast import kernels
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.tables import plan_tables, refuse_unless_runnable, unsupported_layers


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
        reason = unsupported_layers(program)
        return f"the numba backend runs {reason}" if reason else None

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        self.program = program
        tables = plan_tables(program)
        placeholder = np.zeros((1, 1, 1), dtype=np.float32)
        rings, weights, odds, biases = [], [], [], []
        for ring, layer in zip(program.rings.values(), tables.layers):
            if layer is None:  # the index ring
                rings.append(placeholder)
                weights.append(placeholder[0])
                odds.append(placeholder[0])
                biases.append(placeholder[0, 0])
                continue
            rings.append(ring.data.numpy())
            weights.append(_f32(layer.full))
            odds.append(placeholder[0] if layer.odd is None else _f32(layer.odd))
            biases.append(_f32(layer.bias))
        self.compiled = kernels.Compiled(
            ops=tables.ops, starts=tables.starts, pos=program.positions.array,
            wins=tables.windows, rings=tuple(rings),
            index=program.rings[INPUT_RING].data.numpy(), index_ring=tables.index_ring,
            weights=tuple(weights), odds=tuple(odds), biases=tuple(biases),
            table=_f32(tables.embed_table), table_bias=_f32(tables.embed_bias),
            head_w=_f32(tables.head_weight.t()), head_b=_f32(tables.head_bias),
            head_in=program.head_in.numpy().reshape(program.batch, 1, -1),
            acc=np.zeros(tables.width, dtype=np.float32),
        )

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
                np.zeros((4, classes), dtype=np.float32), np.zeros(classes, dtype=np.int32),
                np.zeros(classes, dtype=np.int64))
        done = 0
        for noise, start, count in sampler.runs(n):
            kernels.generate(count, out[:, done : done + count].numpy(), t0 + done,
                             self.program.period, logits.numpy(), self.compiled, noise.numpy(),
                             start, *args, x.numpy())
            done += count

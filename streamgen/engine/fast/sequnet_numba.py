"""The Seq-U-Net step program compiled with numba: whole blocks of steps per native call.

Same rings, same layer graph and same arithmetic as ``SeqUNetProgram`` (it is one, with the
per-sample loop moved into ``kernels.py``); only the summation order of the dot products
differs, within float32 rounding.
"""

from __future__ import annotations

import numpy as np
import torch

from streamgen.engine.fast import kernels
from streamgen.engine.program import INPUT_RING
from streamgen.engine.sampling import Sampler
from streamgen.engine.sequnet_program import SeqUNetProgram
from streamgen.engine.steps import UpStep
from streamgen.nn.sequnet import SeqUNet


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


class NumbaSeqUNetProgram(SeqUNetProgram):
    """CPU float32 only. ``feed_block`` / ``generate_block`` replace per-step calls."""

    def __init__(self, model: SeqUNet, batch: int, device: torch.device, dtype: torch.dtype):
        if device.type != "cpu" or dtype != torch.float32:
            raise ValueError("the numba backend runs on the CPU in float32")
        super().__init__(model, batch, device, dtype)
        names = [n for n in self.rings if n != INPUT_RING]
        index = {n: i for i, n in enumerate(names)}
        self._names = names
        # homogeneous tuples (not numba typed lists, which compile anew in every process)
        self._rings = tuple(self.rings[n].data.numpy() for n in names)
        self._wins = np.array([self.rings[n].window_size for n in names], dtype=np.int64)
        self._pos = np.zeros(len(names), dtype=np.int64)
        dummy = np.zeros((1, 1), dtype=np.float32)
        weights, odds, biases = [], [], []
        steps = {id(s.ring): s for s in self._all_steps()}
        for n in names:
            step = steps[id(self.rings[n])]
            if isinstance(step, UpStep):  # (rows in, 2C) -> (2C, rows)
                weights.append(_f32(step.even.t()))
                odds.append(_f32(step.odd.t()))
                biases.append(_f32(step.bias[0]))
            else:
                weights.append(_f32(step.conv.flat.t()))
                odds.append(dummy)
                biases.append(_f32(step.conv.bias[0]))
        self._weights, self._odds, self._biases = tuple(weights), tuple(odds), tuple(biases)

        def ids(steps_: list) -> np.ndarray:
            return np.array([index[self._name_of(s)] for s in steps_], dtype=np.int64)

        d = model.config.depth
        enc_convs = np.array([ids(convs) for convs, _ in self.encoder], dtype=np.int64).reshape(-1, d)
        enc_down = np.array([index[self._name_of(down)] for _, down in self.encoder], dtype=np.int64)
        dec_up = np.array([index[self._name_of(up)] for up, _ in self.decoder], dtype=np.int64)
        dec_convs = np.array([ids(convs) for _, convs in self.decoder], dtype=np.int64).reshape(-1, d)
        self._in_ring = self.input.ring.data.numpy()
        self._in_pos = np.zeros(1, dtype=np.int64)
        self._head_in = np.zeros((batch, 1, self.channels), dtype=np.float32)
        self._logits_scratch = np.zeros((batch, self.classes), dtype=np.float32)
        self._static = (
            np.array(self.tops, dtype=np.int64), self._in_ring, self._in_pos,
            _f32(self.input.table), _f32(self.input.bias),
            self._rings, self._pos, self._wins, self._weights, self._odds, self._biases,
            self.channels, enc_convs, enc_down, ids(self.bottleneck), dec_up, dec_convs,
            _f32(self.head.weight.t()), _f32(self.head.bias), self._head_in,
            np.zeros(2 * self.channels, dtype=np.float32),
        )

    def _all_steps(self) -> list:
        out = [s for convs, down in self.encoder for s in (*convs, down)] + list(self.bottleneck)
        return out + [s for up, convs in self.decoder for s in (up, *convs)]

    def _name_of(self, step) -> str:
        return next(n for n, r in self.rings.items() if r is step.ring)

    # ring positions live in the FrameRings; the kernels work on an array copy of them
    def _load_pos(self) -> None:
        for i, n in enumerate(self._names):
            self._pos[i] = self.rings[n].pos
        self._in_pos[0] = self.input.ring.pos

    def _store_pos(self) -> None:
        for i, n in enumerate(self._names):
            self.rings[n].pos = int(self._pos[i])
        self.input.ring.pos = int(self._in_pos[0])

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor, t0: int) -> None:
        self._load_pos()
        write = out is not None
        out_np = out.numpy() if write else np.zeros((1, 1, 1), dtype=np.float32)
        kernels.sequnet_feed(xs.numpy(), out_np, write, t0, self.period, logits.numpy(), self._static)
        self._store_pos()

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        cfg = self._sampling_args(sampler)
        self._load_pos()
        done = 0
        while done < n:
            noise, start, count = sampler.take(n - done)
            kernels.sequnet_generate(
                count, out[:, done : done + count].numpy(), t0 + done, self.period, logits.numpy(),
                self._static, noise.numpy(), start, *cfg, x.numpy(),
            )
            done += count
        self._store_pos()

    def _sampling_args(self, sampler: Sampler) -> tuple:
        c = sampler.config
        scratch = np.zeros(self.classes, dtype=np.float32)
        return (np.float32(c.temperature), c.top_k, np.float32(c.top_p), c.greedy, scratch,
                np.zeros(self.classes, dtype=np.float32))

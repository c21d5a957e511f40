"""The numba executor: a program's plans as integer tables, run by a compiled interpreter.

It runs plans fed class indices through a one-hot input convolution: a Seq-U-Net's gated
residual layers with its ReLU + 1x1 head, a WaveNet's dilated gated layers with their residual
and skip 1x1s and its two-layer head, or a TCN's residual blocks of two dilated convolutions
with its 1x1 head; on the CPU in float32, a whole block of steps per native call. The rings
and their positions are the program's own (numpy views), so capture, reset, prime and state
save/restore are shared with the torch executor.
Only the arithmetic differs, within float32 rounding: the summation order of the dot products,
and the gates' tanh and the sampler's exp, computed by rational and polynomial approximations
(within 4e-7) in loops that vectorize.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numba
import numpy as np
import torch

from streamgen.engine.fast import kernels
from streamgen.engine.fast.groups import StreamGroup, StreamGroups
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.tables import (GatedWeights, TCNWeights, WaveNetWeights, plan_tables,
                                     refuse_unless_runnable, unsupported_layers)


#: What stands in a view a ring does not use, or for the logits' output of a block
#: that keeps none (1, 1, 1).
_PLACEHOLDER = np.zeros((1, 1, 1), dtype=np.float32)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _wavenet_projection(layer: WaveNetWeights) -> tuple[np.ndarray, np.ndarray]:
    """A WaveNet layer's 1x1s as one ``(D, R + S)`` matrix (``(D, S)`` on the last layer, which
    has no residual output) and its bias: the residual bias, then the summed skip biases on
    the first layer (zeros on the others, which add to the running skip sum)."""
    skip_bias = (torch.zeros(layer.skip.shape[1]) if layer.skip_bias is None
                 else layer.skip_bias.detach().cpu().float())
    if layer.last:
        return _f32(layer.skip), _f32(skip_bias)
    return (_f32(torch.cat([layer.residual, layer.skip], 1)),
            _f32(torch.cat([layer.residual_bias.detach().cpu().float(), skip_bias])))


def resolve_threads(threads: int | None) -> int:
    """The threads a numba executor runs its streams on: ``threads``, or by default numba's
    ``NUMBA_NUM_THREADS`` (every core unless set)."""
    return threads or numba.config.NUMBA_NUM_THREADS


@contextmanager
def _contiguous(out: torch.Tensor | None) -> Iterator[torch.Tensor | None]:
    """``out`` (or None), or a contiguous copy of it that goes back into it at the end
    (interrupted too): the kernels take C-contiguous arrays only, so that each compiles once."""
    if out is None or out.is_contiguous():
        yield out
        return
    copy = out.contiguous()
    try:
        yield copy
    finally:
        out.copy_(copy)


#: A ring's arrays (its row of ``Compiled.views``, in ``kernels.VIEW_*`` order) and its row of
#: ``Compiled.specs``.
RingEntries = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                    tuple[int, int, int, int, int]]


def _tcn_spec(layer: TCNWeights, own: int,
              numbers: dict[str, int]) -> tuple[int, int, int, int, int]:
    """A TCN convolution's row of ``Compiled.specs``: its source ring (``own``, the ring
    itself, where the residual reads no frame) and residual mode."""
    if layer.source is None:
        source, mode = own, kernels.RES_NONE
    elif layer.source == INPUT_RING:
        source, mode = own, kernels.RES_LOOKUP
    else:
        source, mode = numbers[layer.source], kernels.RES_FRAME
    return (kernels.LAYER_TCN, layer.taps, layer.dilation, source, mode)


def _ring_entries(data: torch.Tensor, layer: GatedWeights | WaveNetWeights | TCNWeights | None,
                  own: int, numbers: dict[str, int]) -> RingEntries:
    """(ring, weights, odd-tap weights, bias, 1x1s, 1x1 bias, spec) of ring number ``own``: a
    Seq-U-Net layer's, a WaveNet layer's, a TCN convolution's (the first block's 1x1 over
    one-hot classes as its 1x1s), or the index ring's placeholders."""
    unused, unused_2d, unused_1d = _PLACEHOLDER, _PLACEHOLDER[0], _PLACEHOLDER[0, 0]
    if isinstance(layer, WaveNetWeights):
        proj, proj_bias = _wavenet_projection(layer)
        spec = (kernels.LAYER_WAVENET, layer.taps, layer.dilation,
                int(layer.skip_bias is not None), int(layer.last))
        return (data.numpy(), _f32(layer.conv), unused_2d, _f32(layer.conv_bias), proj,
                proj_bias, spec)
    if isinstance(layer, TCNWeights):
        spec = _tcn_spec(layer, own, numbers)
        project = unused_2d if layer.project is None else _f32(layer.project)
        project_bias = unused_1d if layer.project_bias is None else _f32(layer.project_bias)
        return (data.numpy(), _f32(layer.conv), unused_2d, _f32(layer.conv_bias), project,
                project_bias, spec)
    if layer is None:  # the index ring
        return unused, unused_2d, unused_2d, unused_1d, unused_2d, unused_1d, (0, 0, 0, 0, 0)
    odd = unused_2d if layer.odd is None else _f32(layer.odd)
    return (data.numpy(), _f32(layer.full), odd, _f32(layer.bias), unused_2d, unused_1d,
            (kernels.LAYER_GATED, 0, 0, 0, 0))


class NumbaExecutor:
    """CPU float32 only; ``feed_block`` / ``generate_block`` run whole blocks natively, the
    streams split over ``threads`` threads (``streamgen.engine.fast.groups``; None: numba's
    ``NUMBA_NUM_THREADS``, every core unless set)."""

    name = "numba"

    @staticmethod
    def unsupported(program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        if program.device.type != "cpu" or program.dtype != torch.float32:
            return "the numba backend runs on the CPU in float32"
        reason = unsupported_layers(program, wavenet=True, tcn=True)
        return f"the numba backend runs {reason}" if reason else None

    def __init__(self, program: StepProgram, threads: int | None = None) -> None:
        refuse_unless_runnable(self.unsupported(program))
        self.program = program
        tables = plan_tables(program)
        batch = program.batch
        numbers = {name: i for i, name in enumerate(program.rings)}
        entries = [_ring_entries(ring.data, layer, i, numbers)
                   for i, (ring, layer) in enumerate(zip(program.rings.values(), tables.layers))]
        #: What ``Compiled.views`` points into: kept alive with the executor.
        self.arrays = [arrays for *arrays, _ in entries]
        views = np.array([[kernels.view_entry(a) for a in arrays] for arrays in self.arrays],
                         dtype=np.int64)
        _, weights, _, _, projs, _, specs = zip(*entries)
        wavenets = [layer for layer in tables.layers if isinstance(layer, WaveNetWeights)]
        skip_width = max([layer.skip.shape[1] for layer in wavenets], default=1)
        work_width = max([max(*w.shape, p.shape[1])  # the taps, the 1x1s' or residual's outputs
                          for w, p, spec in zip(weights, projs, specs)
                          if spec[0] != kernels.LAYER_GATED], default=1)
        head_w = _f32(tables.head_weight.t())  # (C, classes): rows added whole
        if tables.hidden_weight is None:  # one 1x1: no hidden layer
            hid_w, hid_b = np.zeros((head_w.shape[0], 0), np.float32), _PLACEHOLDER[0, 0]
        else:
            hid_w, hid_b = _f32(tables.hidden_weight.t()), _f32(tables.hidden_bias)
        self.compiled = kernels.Compiled(
            ops=tables.ops, starts=tables.starts, pos=program.positions.array,
            wins=tables.windows, views=views,
            index=program.rings[INPUT_RING].data.numpy(), index_ring=tables.index_ring,
            table=_f32(tables.embed_table), table_bias=_f32(tables.embed_bias),
            embed_relu=tables.embed_relu,
            head_w=head_w, head_b=_f32(tables.head_bias),
            head_in=program.head_in.numpy().reshape(batch, 1, -1),
            acc=np.zeros(max(tables.width, *head_w.shape, *hid_w.shape), dtype=np.float32),
            specs=np.array(specs, dtype=np.int64).reshape(-1, 5),
            skip=np.zeros((batch, skip_width), dtype=np.float32),
            hid_w=hid_w, hid_b=hid_b,
            hidden=np.zeros((batch, 1, hid_w.shape[1]), dtype=np.float32),
            work=np.zeros((2, work_width), dtype=np.float32),
        )
        self.groups = StreamGroups(self.compiled, batch, program.classes,
                                   resolve_threads(threads))

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        xs_np, logits_np, period = xs.numpy(), logits.numpy(), self.program.period
        with _contiguous(out) as written:
            out_np = None if written is None else written.numpy()

            def run(group: StreamGroup) -> None:
                streams = group.streams
                kernels.feed(xs_np[streams], _PLACEHOLDER if out_np is None else out_np[streams],
                             out_np is not None, t0, period, logits_np[streams], group.compiled)

            self.groups.run(run)

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        with _contiguous(out) as written:
            self._generate(n, sampler, written.numpy(), logits, t0, x)

    def _generate(self, n: int, sampler: Sampler, out_np: np.ndarray, logits: torch.Tensor,
                  t0: int, x: torch.Tensor) -> None:
        """Runs of up to ``noise_steps`` steps, each group drawing its streams' noise on its
        own thread; where a thread is to spare, the calling thread draws the next run's
        meanwhile, into the groups' other buffers."""
        cfg = sampler.config
        sampling = (np.float32(cfg.temperature), cfg.top_k, np.float32(cfg.top_p), cfg.greedy)
        logits_np, x_np = logits.numpy(), x.numpy()
        period, groups = self.program.period, self.groups
        run_steps = groups.noise_steps if sampler.uses_noise else n  # greedy: one run
        done, buffer = 0, 0
        while done < n:
            count = min(run_steps, n - done)
            step = sampler.claim(count)
            after = min(run_steps, n - done - count)

            def run(group: StreamGroup, done: int = done, step: int = step, count: int = count,
                    buffer: int = buffer) -> None:
                streams = group.streams
                rows = (group.noise[buffer] if not sampler.uses_noise
                        else group.noise_rows(sampler, step, count, buffer))
                kernels.generate(count, out_np[streams], done, t0 + done, period,
                                 logits_np[streams], group.compiled, rows, 0, *sampling,
                                 *group.sampler_scratch, x_np[streams])

            def ahead(step: int = step + count, count: int = after, buffer: int = 1 - buffer
                      ) -> None:
                for group in groups.groups:
                    group.draw(sampler, step, count, buffer)

            groups.run(run, ahead if after else None)
            done, buffer = done + count, 1 - buffer

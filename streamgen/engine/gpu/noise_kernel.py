"""The sampler's noise drawn on a GPU by a Triton kernel: ``streamgen.engine.noise``'s numbers
(Triton's ``tl.philox`` is the same Philox4x32-10 with the same key split), one program per
step and stream, the uniforms bit for bit those of the CPU and the logs within float32
rounding of numpy's."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from streamgen.engine.noise import UNIFORM_BITS


@triton.jit
def gumbel_kernel(out_ptr, seed, step, stream, streams, classes,
                  SHIFT: tl.constexpr, SCALE: tl.constexpr, BLOCK_Q: tl.constexpr):
    """Row ``pid`` of ``out`` (steps * streams, classes): step ``step + pid // streams``,
    stream ``stream + pid % streams`` (key ``seed`` + stream, modulo 2^64); lane q draws
    classes 4q...4q + 3."""
    pid = tl.program_id(0).to(tl.int64)
    s = step + pid // streams
    key = seed.to(tl.uint64) + (stream + pid % streams).to(tl.uint64)
    q = tl.arange(0, BLOCK_Q)
    zero = q * 0
    c1 = (zero + (s & 0xFFFFFFFF)).to(tl.uint32)
    c2 = (zero + (s >> 32)).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(key, q.to(tl.uint32), c1, c2, zero.to(tl.uint32))
    at = 4 * q
    row = out_ptr + pid * classes
    _store_gumbel(row + at, w0, at < classes, SHIFT, SCALE)
    _store_gumbel(row + at + 1, w1, at + 1 < classes, SHIFT, SCALE)
    _store_gumbel(row + at + 2, w2, at + 2 < classes, SHIFT, SCALE)
    _store_gumbel(row + at + 3, w3, at + 3 < classes, SHIFT, SCALE)


@triton.jit
def _store_gumbel(ptrs, word, mask, SHIFT: tl.constexpr, SCALE: tl.constexpr):
    """-log(-log U) of the words' uniforms (their top bits, centred) where ``mask``."""
    u = ((word >> SHIFT).to(tl.float32) + 0.5) * SCALE
    tl.store(ptrs, -tl.log(-tl.log(u)), mask=mask)


def gumbel_into(seed: int, step: int, stream: int, out: torch.Tensor) -> torch.Tensor:
    """``streamgen.engine.noise.gumbel_into`` for a C-contiguous float32 tensor on a GPU (or
    on the CPU through Triton's interpreter)."""
    steps, streams, classes = out.shape
    if out.numel():
        gumbel_kernel[(steps * streams,)](
            out, seed % (1 << 64), step, stream, streams, classes,
            SHIFT=32 - UNIFORM_BITS, SCALE=2.0 ** -UNIFORM_BITS,
            BLOCK_Q=triton.next_power_of_2(-(-classes // 4)))
    return out

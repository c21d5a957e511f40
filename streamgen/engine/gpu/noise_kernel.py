"""The sampler's noise drawn on a GPU by Triton: ``streamgen.engine.noise``'s numbers
(Triton's ``tl.philox`` is the same Philox4x32-10 with the same key split), the uniforms bit
for bit those of the CPU and the logs within float32 rounding of numpy's. ``stream_gumbel``
gives one stream's step inside any kernel (the fused sampler's, ``sample_kernel``);
``gumbel_kernel`` writes blocks of it."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from streamgen.engine.noise import UNIFORM_BITS

SHIFT = tl.constexpr(32 - UNIFORM_BITS)
SCALE = tl.constexpr(2.0 ** -UNIFORM_BITS)


@triton.jit
def stream_gumbel(key, step, BLOCK_C: tl.constexpr):
    """The noise of classes ``0 .. BLOCK_C - 1`` (a multiple of 4) at ``step`` of the stream
    keyed ``key`` (uint64: seed + stream): lane q draws counter (q, step low, step high, 0),
    whose word k is class 4q + k."""
    q = tl.arange(0, BLOCK_C // 4).to(tl.uint32)
    zero = q * 0
    lo = (zero + (step & 0xFFFFFFFF)).to(tl.uint32)
    hi = (zero + (step >> 32)).to(tl.uint32)
    w0, w1, w2, w3 = tl.philox(key, q, lo, hi, zero)
    # (q, i, j) row-major is class 4q + 2i + j: word 2i + j
    words = tl.reshape(tl.join(tl.join(w0, w2), tl.join(w1, w3)), [BLOCK_C])
    u = ((words >> SHIFT).to(tl.float32) + 0.5) * SCALE
    return -tl.log(-tl.log(u))


@triton.jit
def gumbel_kernel(out_ptr, seed, step, stream, streams, classes, BLOCK_C: tl.constexpr):
    """Row ``pid`` of ``out`` (steps * streams, classes): step ``step + pid // streams``,
    stream ``stream + pid % streams`` (key ``seed`` + stream, modulo 2^64)."""
    pid = tl.program_id(0).to(tl.int64)
    key = seed.to(tl.uint64) + (stream + pid % streams).to(tl.uint64)
    cc = tl.arange(0, BLOCK_C)
    tl.store(out_ptr + pid * classes + cc, stream_gumbel(key, step + pid // streams, BLOCK_C),
             mask=cc < classes)


def class_block(classes: int) -> int:
    """The power-of-two block that holds ``classes`` classes in whole quads."""
    return max(4, triton.next_power_of_2(classes))


def gumbel_into(seed: int, step: int, stream: int, out: torch.Tensor) -> torch.Tensor:
    """``streamgen.engine.noise.gumbel_into`` for a C-contiguous float32 tensor on a GPU (or
    on the CPU through Triton's interpreter)."""
    steps, streams, classes = out.shape
    if out.numel():
        gumbel_kernel[(steps * streams,)](out, seed % (1 << 64), step, stream, streams, classes,
                                          BLOCK_C=class_block(classes))
    return out

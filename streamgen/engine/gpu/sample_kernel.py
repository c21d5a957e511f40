"""The sampler as one Triton kernel: a program per stream reads its logits once, applies the
``Sampler``'s rule (temperature; top-k; top-p) in registers and takes the Gumbel argmax with
its noise drawn in place (``noise_kernel.stream_gumbel``).

Torch's rule costs about ten kernels a step, a sort over every stream's classes among them,
and a noise block of ``steps x streams x classes`` floats in memory (16 GiB for 256 steps of
65,536 streams). Here the nucleus comes from one in-register sort: the classes ranked by
score, their exclusive running mass, and the lowest score still inside the nucleus, so a
class is kept when it scores at least that (torch's rule, with ties kept whole).

The step is ``step_ptr[0] + step``: a recorded CUDA graph reads the step of each replay from
the device, eager callers pass it as a number.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from streamgen.engine.gpu.noise_kernel import class_block, stream_gumbel
from streamgen.sampling import SamplingConfig

#: Warps per program (one stream's classes: 256 classes are 4 per thread).
WARPS = 2
NEG, POS = tl.constexpr(float("-inf")), tl.constexpr(float("inf"))


@triton.jit(do_not_specialize=["step", "seed", "top_k"])
def sample_kernel(logits_ptr, row_stride, out_ptr, out_stride, step_ptr, step, seed, classes,
                  temperature, top_k, top_p, GREEDY: tl.constexpr, TOP_K: tl.constexpr,
                  TOP_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Stream ``pid``'s next class from its logits (any float dtype, scored in float32) into
    ``out[pid]``, with the noise of step ``step_ptr[0] + step`` and key ``seed + pid``."""
    pid = tl.program_id(0).to(tl.int64)
    cc = tl.arange(0, BLOCK_C)
    s = tl.load(logits_ptr + pid * row_stride + cc, mask=cc < classes, other=NEG)
    s = s.to(tl.float32)
    if GREEDY:
        x = tl.argmax(s, axis=0)
    else:
        s = s / temperature
        if TOP_K or TOP_P:
            ranked = tl.sort(s, descending=True)
        if TOP_K:  # keep the classes scoring at least the top_k-th
            kth = tl.max(tl.where(cc == top_k - 1, ranked, NEG), axis=0)
            s = tl.where(s >= kth, s, NEG)
            ranked = tl.where(ranked >= kth, ranked, NEG)
        if TOP_P:  # keep the classes whose better-ranked ones hold less than top_p
            mass = tl.exp(ranked - tl.max(ranked, axis=0))
            p = mass / tl.sum(mass, axis=0)
            before = tl.cumsum(p, axis=0) - p
            floor = tl.min(tl.where(before < top_p, ranked, POS), axis=0)
            s = tl.where(s >= floor, s, NEG)
        at = tl.load(step_ptr).to(tl.int64) + step
        x = tl.argmax(s + stream_gumbel(seed.to(tl.uint64) + pid.to(tl.uint64), at, BLOCK_C),
                      axis=0)
    tl.store(out_ptr + pid * out_stride, x.to(tl.int64))


def sample_into(config: SamplingConfig, seed: int, logits: torch.Tensor, out: torch.Tensor,
                step: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Each stream's next class from ``logits`` (B, classes; unit stride along the classes)
    into ``out`` (B,) int64, at noise step ``step[0] + offset`` (``step``: a one-element
    int64 tensor on the logits' device)."""
    batch, classes = logits.shape
    if logits.stride(1) != 1:
        raise ValueError("sample_into reads each stream's classes contiguously")
    if batch:
        sample_kernel[(batch,)](
            logits, logits.stride(0), out, out.stride(0), step, offset, seed % (1 << 64),
            classes, config.temperature, config.top_k, config.top_p,
            GREEDY=config.greedy, TOP_K=config.top_k > 0, TOP_P=config.top_p < 1.0,
            BLOCK_C=class_block(classes), num_warps=WARPS)
    return out

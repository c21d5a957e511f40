"""A gated layer's step for a batch of streams in one Triton kernel: the matrix product and the
gating fused (``out = identity + tanh(x Wf + bf) * sigmoid(x Wg + bg)``).

The torch step (``streamgen.engine.steps``) launches four kernels a gated layer (``addmm``,
``tanh_``, ``sigmoid_``, ``addcmul``): about 45 of the 60 a step of a Seq-U-Net takes, which is
what the graphs executor replays at large batches, each too small to fill the GPU. Here each
program computes a ``BLOCK_B`` streams by ``BLOCK_C`` channels tile of the filter and the
gate products over the flattened window (``tl.dot``; float32 operands multiply in IEEE float32,
not TF32, so the engine stays within 1e-4 of the float64 pass), then gates it in registers and
writes the result. Operands are strided views (the ring's window, the newest frame, the
destination slot); only their last dimension must be contiguous.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from streamgen.engine.gpu.triton_kernels import _tanh


@triton.jit
def gated_matmul(x_ptr, x_stride, w_ptr, b_ptr, id_ptr, id_stride, out_ptr, out_stride,
                 batch, n, channels,
                 BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
                 IEEE: tl.constexpr):
    """``out[s, c] = id[s, c] + tanh(sum_k x[s, k] w[k, c] + b[c]) * sigmoid(sum_k x[s, k]
    w[k, C + c] + b[C + c])`` for this program's tile; ``w`` is (n, 2C) row-major."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    row_ok, col_ok = rows < batch, cols < channels
    f = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    g = tl.zeros((BLOCK_B, BLOCK_C), dtype=tl.float32)
    for k0 in range(0, n, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < n
        x = tl.load(x_ptr + rows[:, None] * x_stride + ks[None, :],
                    mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        w_at = w_ptr + ks[:, None] * (2 * channels) + cols[None, :]
        w_ok = k_ok[:, None] & col_ok[None, :]
        wf = tl.load(w_at, mask=w_ok, other=0.0)
        wg = tl.load(w_at + channels, mask=w_ok, other=0.0)
        if IEEE:
            f = tl.dot(x, wf, f, input_precision="ieee")
            g = tl.dot(x, wg, g, input_precision="ieee")
        else:
            f = tl.dot(x, wf, f)
            g = tl.dot(x, wg, g)
    f += tl.load(b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    g += tl.load(b_ptr + channels + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    ok = row_ok[:, None] & col_ok[None, :]
    identity = tl.load(id_ptr + rows[:, None] * id_stride + cols[None, :], mask=ok, other=0.0)
    y = identity.to(tl.float32) + _tanh(f) * tl.sigmoid(g)
    tl.store(out_ptr + rows[:, None] * out_stride + cols[None, :],
             y.to(out_ptr.dtype.element_ty), mask=ok)


#: Warps per program: two 64 x 64 float32 accumulators spill at 4 (sm_90,
#: tests/triton_compile.py).
WARPS = 8


def _block(size: int, least: int, most: int) -> int:
    """A power of two covering ``size`` within ``[least, most]`` (tl.dot wants 16 at least)."""
    return max(least, min(most, triton.next_power_of_2(size)))


def fused_gated(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor, identity: torch.Tensor,
                out: torch.Tensor) -> torch.Tensor:
    """``out = identity + tanh(x @ w[:, :C] + bias[:C]) * sigmoid(x @ w[:, C:] + bias[C:])``:
    ``x`` (B, n), ``w`` (n, 2C) contiguous, ``bias`` (2C,), ``identity`` and ``out`` (B, C);
    each a view whose last dimension is contiguous."""
    batch, n = x.shape
    channels = w.shape[1] // 2
    for name, t in (("x", x), ("identity", identity), ("out", out)):
        if t.stride(-1) != 1:
            raise ValueError(f"fused_gated: {name}'s last dimension must be contiguous")
    block_b, block_c = _block(batch, 16, 64), _block(channels, 16, 64)
    grid = (triton.cdiv(batch, block_b), triton.cdiv(channels, block_c))
    gated_matmul[grid](x, x.stride(0), w.contiguous(), bias.contiguous(), identity,
                       identity.stride(0), out, out.stride(0), batch, n, channels,
                       BLOCK_B=block_b, BLOCK_C=block_c, BLOCK_K=32,
                       IEEE=x.dtype == torch.float32, num_warps=WARPS)
    return out

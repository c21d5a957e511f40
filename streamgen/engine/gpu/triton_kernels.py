"""Triton kernels: a persistent interpreter of step plans of gated layers (float32).

One launch runs a whole block of steps; one Triton program per stream interprets the plan
tables of ``streamgen.engine.tables`` (the numba kernel's tables) step after step. Rings live
in one flat float buffer (stream ``b`` of ring ``r`` at ``ring_off[r] + b * cap[r] * ch[r]``,
frames contiguous, so a layer's window is one contiguous vector), weights in another (offset
tables per ring); each gated layer is a blocked multiply + reduce over its flattened window,
looped over output and input blocks so wide (C = 180) layers fit.

Ring positions are the program's shared counters: every Triton program loads them at the
start of the block, keeps them in registers (one vector, updated by ``tl.where``) while it
steps (all streams move them identically), and program 0 writes them to a second buffer at
the end (the executor copies them back). A
ring is rewound exactly as ``FrameRing.slot`` does it, each program copying its own stream.

Within a program, a frame written by one op is read by the next ones through global memory:
``tl.debug_barrier()`` after every write makes it visible to all the program's threads.

Free-running blocks sample inside the kernel from the ``Sampler``'s Gumbel noise block with
the torch ``Sampler``'s rule (greedy; temperature; top-k; top-p as a value cutoff, like the
numba kernel).
"""

from __future__ import annotations

import triton
import triton.language as tl

from streamgen.engine import tables

OP_INPUT = tl.constexpr(tables.OP_INPUT)
OP_ADVANCE = tl.constexpr(tables.OP_ADVANCE)
OP_EMBED = tl.constexpr(tables.OP_EMBED)
OP_GATED = tl.constexpr(tables.OP_GATED)
OP_COPY = tl.constexpr(tables.OP_COPY)
OP_HEAD = tl.constexpr(tables.OP_HEAD)
TAPS_ODD = tl.constexpr(tables.TAPS_ODD)


@triton.jit
def _get(vec, idx, i):
    """Element ``i`` of a register vector (``idx`` = its arange)."""
    return tl.sum(tl.where(idx == i, vec, 0), axis=0)


@triton.jit
def _slot(data_ptr, base, pos, ridx, r, cap, ch, win, BLOCK: tl.constexpr):
    """Frame index of ring ``r``'s next frame for this stream (``base``: its first element),
    rewinding the ring first when it is full; returns it and the updated positions."""
    p = _get(pos, ridx, r)
    if p + 1 == cap:
        keep = win - 1
        n = keep * ch
        src = data_ptr + base + (cap - keep) * ch
        for j in range(0, n, BLOCK):
            offs = j + tl.arange(0, BLOCK)
            m = offs < n
            v = tl.load(src + offs, mask=m)
            tl.debug_barrier()  # a short ring's source and destination overlap
            tl.store(data_ptr + base + offs, v, mask=m)
        tl.debug_barrier()
        p = keep - 1
        pos = tl.where(ridx == r, p, pos)
    return p + 1, pos


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


#: Scalar integer arguments: never specialised (Triton makes a 1 a compile-time constant),
#: widened to int64 on entry so every index computation has one type.
INT_ARGS = ["n_steps", "t0", "period", "n_rings", "index_ring", "embed_cols", "embed_rows",
            "head_width", "classes", "batch", "noise_at", "top_k"]


@triton.jit(do_not_specialize=INT_ARGS)
def run_block(
    ops_ptr, starts_ptr, n_steps, t0, period,
    pos_ptr, pos_out_ptr, n_rings, ring_off_ptr, ring_cap_ptr, ring_ch_ptr, win_ptr,
    rings_ptr, index_ptr, index_ring,
    weights_ptr, w_off_ptr, odd_off_ptr, bias_off_ptr,
    embed_ptr, embed_bias_ptr, embed_cols, embed_rows,
    head_w_ptr, head_b_ptr, head_in_ptr, head_width,
    logits_ptr, classes, batch,
    xs_ptr, out_ptr,
    noise_ptr, noise_at, temperature, top_k, top_p,
    GENERATE: tl.constexpr, WRITE_OUT: tl.constexpr, GREEDY: tl.constexpr,
    TOP_K: tl.constexpr, TOP_P: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """``n_steps`` steps of stream ``program_id(0)`` from clock ``t0``. Teacher-forced:
    classes from ``xs`` (B, n_steps), logits of every step into ``out`` (B, n_steps, classes)
    if ``WRITE_OUT``. Free-running (``GENERATE``): each step samples from the pending logits
    with noise rows ``noise_at...`` into ``out`` (B, n_steps) and feeds the sample back."""
    n_steps, t0, period = n_steps.to(tl.int64), t0.to(tl.int64), period.to(tl.int64)
    n_rings, index_ring = n_rings.to(tl.int64), index_ring.to(tl.int64)
    embed_cols, embed_rows = embed_cols.to(tl.int64), embed_rows.to(tl.int64)
    head_width, classes, batch = head_width.to(tl.int64), classes.to(tl.int64), batch.to(tl.int64)
    noise_at, top_k = noise_at.to(tl.int64), top_k.to(tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    ridx = tl.arange(0, BLOCK_R)
    pos = tl.load(pos_ptr + ridx, mask=ridx < n_rings, other=0)
    oo = tl.arange(0, BLOCK_O)
    kk = tl.arange(0, BLOCK_K)
    cc = tl.arange(0, BLOCK_C)
    cmask = cc < classes
    row_logits = logits_ptr + pid * classes
    head_in = head_in_ptr + pid * head_width
    index_cap = tl.load(ring_cap_ptr + index_ring)
    index_win = tl.load(win_ptr + index_ring)
    index_base = pid * index_cap
    for i in range(n_steps):
        phase = (t0 + i) % period
        if GENERATE:
            lg = tl.load(row_logits + cc, mask=cmask, other=-float("inf"))
            if GREEDY:
                x = tl.argmax(lg, axis=0)
            else:
                s = lg / temperature
                if TOP_K:
                    srt = tl.sort(s, descending=True)
                    kth = tl.max(tl.where(cc == top_k - 1, srt, -float("inf")), axis=0)
                    s = tl.where(s < kth, -float("inf"), s)
                if TOP_P:
                    srt = tl.sort(s, descending=True)
                    top = tl.max(srt, axis=0)
                    ex = tl.exp(srt - top)
                    probs = ex / tl.sum(ex, axis=0)
                    above = tl.cumsum(probs, axis=0) - probs  # mass ranked above each class
                    keep = (above < top_p) & (srt > -float("inf"))
                    cutoff = tl.min(tl.where(keep, srt, float("inf")), axis=0)
                    s = tl.where(s < cutoff, -float("inf"), s)
                nz = tl.load(noise_ptr + ((noise_at + i) * batch + pid) * classes + cc,
                             mask=cmask, other=0.0)
                x = tl.argmax(tl.where(cmask, s + nz, -float("inf")), axis=0)
            x = x.to(tl.int64)
            tl.store(out_ptr + pid * n_steps + i, x)
        else:
            x = tl.load(xs_ptr + pid * n_steps + i)
        lo = tl.load(starts_ptr + phase)
        hi = tl.load(starts_ptr + phase + 1)
        for j in range(lo, hi):
            row = ops_ptr + j * 6
            code = tl.load(row)
            a = tl.load(row + 1)
            b = tl.load(row + 2)
            c = tl.load(row + 3)
            d = tl.load(row + 4)
            e = tl.load(row + 5)
            if code == OP_INPUT:
                q, pos = _slot(index_ptr, index_base, pos, ridx, index_ring, index_cap, 1,
                               index_win, BLOCK_K)
                tl.store(index_ptr + index_base + q, x)
                tl.debug_barrier()
                pos = tl.where(ridx == index_ring, q, pos)
            elif code == OP_ADVANCE:
                pos = tl.where(ridx == a, pos + 1, pos)
            elif code == OP_HEAD:  # relu, 1x1
                for o0 in range(0, classes, BLOCK_O):
                    o = o0 + oo
                    om = o < classes
                    acc = tl.load(head_b_ptr + o, mask=om, other=0.0)
                    for k0 in range(0, head_width, BLOCK_K):
                        k = k0 + kk
                        km = k < head_width
                        h = tl.maximum(tl.load(head_in + k, mask=km, other=0.0), 0.0)
                        w = tl.load(head_w_ptr + o[:, None] * head_width + k[None, :],
                                    mask=om[:, None] & km[None, :], other=0.0)
                        acc += tl.sum(w * h[None, :], axis=1)
                    tl.store(row_logits + o, acc, mask=om)
                tl.debug_barrier()
            else:  # ops that write a frame: into ring b's slot, or the head input
                if b < 0:
                    dst = head_in
                else:
                    b_ch = tl.load(ring_ch_ptr + b)
                    b_base = tl.load(ring_off_ptr + b) + pid * tl.load(ring_cap_ptr + b) * b_ch
                    qb, pos = _slot(rings_ptr, b_base, pos, ridx, b, tl.load(ring_cap_ptr + b),
                                    b_ch, tl.load(win_ptr + b), BLOCK_K)
                    dst = rings_ptr + b_base + qb * b_ch
                if code == OP_EMBED:  # one-hot convolution as table lookups
                    p = _get(pos, ridx, index_ring)
                    for o0 in range(0, e, BLOCK_O):
                        o = o0 + oo
                        om = o < e
                        acc = tl.load(embed_bias_ptr + o, mask=om, other=0.0)
                        for t in range(index_win):
                            cls = tl.load(index_ptr + index_base + p - index_win + 1 + t)
                            acc += tl.load(embed_ptr + (t * embed_rows + cls) * embed_cols + o,
                                           mask=om, other=0.0)
                        tl.store(dst + c + o, acc, mask=om)
                else:
                    a_ch = tl.load(ring_ch_ptr + a)
                    a_base = rings_ptr + tl.load(ring_off_ptr + a) \
                        + pid * tl.load(ring_cap_ptr + a) * a_ch
                    p = _get(pos, ridx, a)
                    newest = a_base + p * a_ch
                    if code == OP_COPY:
                        for o0 in range(0, e, BLOCK_O):
                            o = o0 + oo
                            om = o < e
                            tl.store(dst + d + o, tl.load(newest + c + o, mask=om), mask=om)
                    else:  # OP_GATED: newest + tanh(f) * sigmoid(g) over the window
                        frames = tl.load(win_ptr + a)
                        w_ptr = weights_ptr + tl.load(w_off_ptr + a)
                        if d == TAPS_ODD:
                            frames -= 1
                            w_ptr = weights_ptr + tl.load(odd_off_ptr + a)
                        n_in = frames * a_ch
                        window = a_base + (p - frames + 1) * a_ch
                        bias = weights_ptr + tl.load(bias_off_ptr + a)
                        for o0 in range(0, e, BLOCK_O):
                            o = o0 + oo
                            om = o < e
                            f = tl.load(bias + o, mask=om, other=0.0)
                            g = tl.load(bias + e + o, mask=om, other=0.0)
                            for k0 in range(0, n_in, BLOCK_K):
                                k = k0 + kk
                                km = k < n_in
                                m2 = om[:, None] & km[None, :]
                                xin = tl.load(window + k, mask=km, other=0.0)[None, :]
                                wf = tl.load(w_ptr + o[:, None] * n_in + k[None, :], mask=m2,
                                             other=0.0)
                                wg = tl.load(w_ptr + (o[:, None] + e) * n_in + k[None, :],
                                             mask=m2, other=0.0)
                                f += tl.sum(wf * xin, axis=1)
                                g += tl.sum(wg * xin, axis=1)
                            y = tl.load(newest + o, mask=om, other=0.0) + _tanh(f) * tl.sigmoid(g)
                            tl.store(dst + c + o, y, mask=om)
                tl.debug_barrier()
        if WRITE_OUT:
            lg = tl.load(row_logits + cc, mask=cmask)
            tl.store(out_ptr + (pid * n_steps + i) * classes + cc, lg, mask=cmask)
    if pid == 0:
        tl.store(pos_out_ptr + ridx, pos, mask=ridx < n_rings)

"""Triton kernels: a persistent interpreter of placed step plans (float32).

One launch runs a whole block of steps; one Triton program per stream walks the rows of
``streamgen.engine.gpu.placed`` step after step. A row is an op with every address resolved
for stream 0 (the ring schedule fixes each position by the clock phase), so a step reads no
ring positions and keeps no counters: each operand is ``offset + stream * stride``.

Every float frame (rings and the head's input) lives in one flat buffer, the class indices in
another, the weights in a third. A gated layer is a multiply + reduce of its ``(2C, window)``
matrix with the flattened window, in tiles of ``BLOCK_O`` outputs by ``BLOCK_K`` inputs (one
tile for the default model's layers). The head writes each step's logits to the stream's row
of ``logits`` (the pending logits); free-running steps read them back and sample inside the
kernel with the ``Sampler``'s Gumbel noise block and rule (greedy; temperature; top-k; top-p),
ranking the classes by comparing every pair.

The pending logits go through memory, not registers: carried from step to step, they took
the head's reduction layout (128 of the 256 classes in every thread at 16 warps), and ptxas
spilled inside the gated layers' loop. That, and reducing a tile's f rows before loading its
g rows, removed the spills (bytes a thread, ``tests/triton_compile.py``, pointers aligned as
the JIT launches them) with the Triton releases torch 2.9 to 2.13 bring, 3.5/3.6/3.7: the
default tiles (16 warps) with top-k and top-p from 184/192/172 to none; narrow models' tiles
(4 warps) from 436/416/436 to 0/12/4, and to none once the weights load as vectors (below).
Teacher-forced and greedy steps in the default tiles spill in none; 3.9 in none of them.

A tile's weights are read up to the rows' pitch (zero padding past the window), not the
window's end: the mask then keeps whole quads, and each thread loads 4 weights at once
(``LDG.E.128``; 8 loads instead of 32 for a default tile's f and g rows; greedy steps
compile to 1,520 SASS instructions instead of 1,656 with Triton 3.9). The window itself is
read only to its end (zeros past it), so the padding's products are zeros.

Each op loads its row's fields where it uses them. Loading a whole row up front (int32 rows,
the next op's row prefetched as loop-carried scalars) halved the batch-1 rate on an H200
(10.7k against 21.1k samples/s greedy, one A/B run): keep the loads lazy.

Within a program, a frame written by one op is read by the next ones through global memory:
``tl.debug_barrier()`` after every op makes it visible to all the program's threads.
"""

from __future__ import annotations

import triton
import triton.language as tl

from streamgen.engine.gpu import placed

OP_INPUT = tl.constexpr(placed.OP_INPUT)
OP_EMBED = tl.constexpr(placed.OP_EMBED)
OP_GATED = tl.constexpr(placed.OP_GATED)
OP_COPY = tl.constexpr(placed.OP_COPY)
OP_ICOPY = tl.constexpr(placed.OP_ICOPY)
OP_HEAD = tl.constexpr(placed.OP_HEAD)
NCOL = tl.constexpr(len(placed.COLUMNS))


@triton.jit
def _tanh(x):
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def _copy(src, dst, n, BLOCK: tl.constexpr):
    """``n`` elements from ``src`` to ``dst`` (``dst <= src`` where they overlap: a rewind)."""
    for j in range(0, n, BLOCK):
        offs = j + tl.arange(0, BLOCK)
        m = offs < n
        v = tl.load(src + offs, mask=m)
        tl.debug_barrier()
        tl.store(dst + offs, v, mask=m)


@triton.jit
def _outranking(s, top, scratch, classes, BLOCK_C: tl.constexpr, BLOCK_R: tl.constexpr,
                MASS: tl.constexpr):
    """Per class ``c``: how many classes score strictly higher than ``s[c]`` (``MASS``: their
    summed ``exp(s - top)``), by comparing every pair, ``BLOCK_R`` rows at a time (a sort
    network costs far more barriers). ``scratch`` holds ``classes`` floats."""
    cc = tl.arange(0, BLOCK_C)
    rr = tl.arange(0, BLOCK_R)
    tl.debug_barrier()  # every earlier read of the scratch done before it is written
    tl.store(scratch + cc, s, mask=cc < classes)
    tl.debug_barrier()
    acc = tl.zeros([BLOCK_C], dtype=tl.float32)
    for r0 in range(0, BLOCK_C, BLOCK_R):
        r = r0 + rr
        sr = tl.load(scratch + r, mask=r < classes, other=-float("inf"))
        if MASS:
            weight = tl.exp(sr - top)[:, None]
        else:
            weight = 1.0
        acc += tl.sum(tl.where(sr[:, None] > s[None, :], weight, 0.0), axis=0)
    tl.debug_barrier()  # every read done before the scratch is written again
    return acc


#: Scalar integer arguments: never specialised (Triton makes a 1 a compile-time constant),
#: widened to int64 on entry so every index computation has one type.
INT_ARGS = ["n_steps", "t0", "period", "embed_cols", "embed_rows", "head_at", "head_width",
            "classes", "batch", "noise_at", "top_k"]


@triton.jit(do_not_specialize=INT_ARGS)
def run_block(
    rows_ptr, starts_ptr, n_steps, t0, period,
    frames_ptr, index_ptr, weights_ptr,
    embed_ptr, embed_bias_ptr, embed_cols, embed_rows,
    head_w_ptr, head_b_ptr, head_at, head_width,
    logits_ptr, classes, batch,
    xs_ptr, out_ptr,
    noise_ptr, noise_at, temperature, top_k, top_p,
    GENERATE: tl.constexpr, WRITE_OUT: tl.constexpr, GREEDY: tl.constexpr,
    TOP_K: tl.constexpr, TOP_P: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """``n_steps`` steps of stream ``program_id(0)`` from clock ``t0``, starting from the
    pending ``logits``. Teacher-forced: classes from ``xs`` (B, n_steps), logits of every step
    into ``out`` (B, n_steps, classes) if ``WRITE_OUT``. Free-running (``GENERATE``): each step
    samples from the pending logits with noise rows ``noise_at...`` into ``out`` (B, n_steps)
    and feeds the sample back. Each step's logits end in the stream's row of ``logits``."""
    n_steps, t0, period = n_steps.to(tl.int64), t0.to(tl.int64), period.to(tl.int64)
    embed_cols, embed_rows = embed_cols.to(tl.int64), embed_rows.to(tl.int64)
    head_at, head_width = head_at.to(tl.int64), head_width.to(tl.int64)
    classes, batch = classes.to(tl.int64), batch.to(tl.int64)
    noise_at, top_k = noise_at.to(tl.int64), top_k.to(tl.int64)
    pid = tl.program_id(0).to(tl.int64)
    oo = tl.arange(0, BLOCK_O)
    kk = tl.arange(0, BLOCK_K)
    cc = tl.arange(0, BLOCK_C)
    hh = tl.arange(0, BLOCK_H)
    ww = tl.arange(0, BLOCK_W)
    cmask = cc < classes
    head_in = frames_ptr + head_at + pid * head_width
    scratch = logits_ptr + pid * classes  # the pending logits, between steps
    for i in range(n_steps):
        phase = (t0 + i) % period
        if GENERATE:
            lg = tl.load(scratch + cc, mask=cmask, other=-float("inf"))
            if GREEDY:
                x = tl.argmax(lg, axis=0)
            else:
                s = lg / temperature
                if TOP_K:  # keep the classes with fewer than top_k scoring higher
                    higher = _outranking(s, s, scratch, classes, BLOCK_C, BLOCK_R, False)
                    s = tl.where(higher < top_k, s, -float("inf"))
                if TOP_P:  # keep the classes outranked by less than top_p of the mass
                    top = tl.max(s, axis=0)
                    total = tl.sum(tl.exp(s - top), axis=0)
                    above = _outranking(s, top, scratch, classes, BLOCK_C, BLOCK_R, True)
                    s = tl.where(above < top_p * total, s, -float("inf"))
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
            row = rows_ptr + j * NCOL
            code = tl.load(row)
            src = tl.load(row + 1) + pid * tl.load(row + 2)
            dst = tl.load(row + 3) + pid * tl.load(row + 4)
            n = tl.load(row + 5)
            dst2 = tl.load(row + 11)
            dst2 = tl.where(dst2 < 0, -1, dst2 + pid * tl.load(row + 12))
            if code == OP_INPUT:
                tl.store(index_ptr + dst, x)
            elif code == OP_ICOPY:  # a rewind of the ring of class indices
                _copy(index_ptr + src, index_ptr + dst, n, BLOCK_K)
            elif code == OP_COPY:  # a rewind, or columns of a newest frame into a slot
                _copy(frames_ptr + src, frames_ptr + dst, n, BLOCK_K)
            elif code == OP_HEAD:  # relu, 1x1, into the pending logits
                acc = tl.load(head_b_ptr + cc, mask=cmask, other=0.0)
                for k0 in range(0, head_width, BLOCK_H):
                    k = k0 + hh
                    km = k < head_width
                    h = tl.maximum(tl.load(head_in + k, mask=km, other=0.0), 0.0)
                    w = tl.load(head_w_ptr + cc[:, None] * head_width + k[None, :],
                                mask=cmask[:, None] & km[None, :], other=0.0)
                    acc += tl.sum(w * h[None, :], axis=1)
                tl.store(scratch + cc, acc, mask=cmask)
                if WRITE_OUT:
                    tl.store(out_ptr + (pid * n_steps + i) * classes + cc, acc, mask=cmask)
            else:
                e = tl.load(row + 6)
                if code == OP_EMBED:  # one-hot convolution as table lookups over the window
                    cls = tl.load(index_ptr + src + ww, mask=ww < n, other=0)
                    rows = (ww * embed_rows + cls) * embed_cols
                    for o0 in range(0, e, BLOCK_O):
                        o = o0 + oo
                        om = o < e
                        acc = tl.load(embed_bias_ptr + o, mask=om, other=0.0)
                        tab = tl.load(embed_ptr + rows[:, None] + o[None, :],
                                      mask=(ww < n)[:, None] & om[None, :], other=0.0)
                        acc += tl.sum(tab, axis=0)
                        tl.store(frames_ptr + dst + o, acc, mask=om)
                        if dst2 >= 0:
                            tl.store(frames_ptr + dst2 + o, acc, mask=om)
                else:  # OP_GATED: newest + tanh(f) * sigmoid(g) over the window
                    w_ptr = weights_ptr + tl.multiple_of(tl.load(row + 7), 16)
                    pitch = tl.multiple_of(tl.load(row + 10), 16)
                    bias = weights_ptr + tl.load(row + 8)
                    newest = frames_ptr + tl.load(row + 9) + pid * tl.load(row + 2)
                    window = frames_ptr + src
                    for o0 in range(0, e, BLOCK_O):
                        o = o0 + oo
                        om = o < e
                        f = tl.load(bias + o, mask=om, other=0.0).to(tl.float32)
                        g = tl.load(bias + e + o, mask=om, other=0.0).to(tl.float32)
                        for k0 in range(0, n, BLOCK_K):
                            k = k0 + kk
                            km = k < n
                            # up to the pitch, not n: 128-bit loads (module docstring)
                            m2 = om[:, None] & (k < pitch)[None, :]
                            xin = tl.load(window + k, mask=km, other=0.0)[None, :]
                            wf = tl.load(w_ptr + o[:, None] * pitch + k[None, :], mask=m2,
                                         other=0.0).to(tl.float32)
                            f += tl.sum(wf * xin, axis=1)
                            wg = tl.load(w_ptr + (o[:, None] + e) * pitch + k[None, :],
                                         mask=m2, other=0.0).to(tl.float32)
                            g += tl.sum(wg * xin, axis=1)
                        y = tl.load(newest + o, mask=om, other=0.0) + _tanh(f) * tl.sigmoid(g)
                        tl.store(frames_ptr + dst + o, y, mask=om)
                        if dst2 >= 0:
                            tl.store(frames_ptr + dst2 + o, y, mask=om)
            tl.debug_barrier()

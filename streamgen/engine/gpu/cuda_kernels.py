"""numba-cuda kernel: a persistent interpreter of placed step plans (float32), one thread block
per stream.

The same rows as the Triton kernel (``streamgen.engine.gpu.placed``: every address resolved
by the ring schedule), interpreted CUDA-style where Triton gives no control:

- each step's rows are staged into shared memory with one coalesced load, so an op reads its
  fields without a round trip to global memory;
- a gated layer's work is split one of two ways (``MAPPINGS``): ``lanes`` gives each warp
  ``CH`` output channels (their filter and gate rows), its lanes striding the flattened window
  ``U`` elements at a time (that many weight loads in flight per lane) and warp shuffles
  summing them; ``rows`` gives each lane weight rows and each warp a share of the window, the
  partial sums meeting in shared memory. The window and head loops index with unsigned
  integers: numba checks a signed index for wraparound on every load, which kept the loads
  off constant offsets (Nsight Compute found the first version bound by instruction issue,
  ``benchmarks/results/gpu-nvidia-h200-numba-cuda-log.md``);
- a WaveNet layer (its dilated taps, the residual, the skip sum kept in shared memory) and a
  WaveNet's two-layer head are ops of their own, compiled only into WaveNet kernels;
- the pending logits live in shared memory; a free-running step samples them in the kernel
  (greedy; temperature; top-k; top-p) with the ``Sampler``'s Gumbel noise and rule. Top-p
  ranks only the candidates that can lie in the nucleus (``apply_top_p``'s bound, compacted in
  class order), so its pairwise ranking costs a few dozen comparisons per class, not all.

Frames written by one op are read by the next through global memory; ``syncthreads`` after
every op makes them visible to the whole block. Every warp shuffle sits where all the block's
threads reach it, which is what the CPU simulator's emulation of shuffles needs
(``streamgen.engine.gpu.cudasim``).

``build`` compiles one kernel per shape: threads per block, rows per step, classes, output
channels, the unroll, the mapping and the WaveNet widths, all compile-time constants.
"""

from __future__ import annotations

import math
from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import cuda, float32, int64, uint64

from streamgen.engine.gpu import placed, simulating
from streamgen.engine.sampling import NUCLEUS_BOUND

FULL = 0xFFFFFFFF
NCOL = len(placed.COLUMNS)
NEG = np.float32(-np.inf)
NONE = np.int64(1 << 62)  # an index beyond every class
OP_INPUT, OP_EMBED, OP_GATED = placed.OP_INPUT, placed.OP_EMBED, placed.OP_GATED
OP_COPY, OP_ICOPY, OP_HEAD = placed.OP_COPY, placed.OP_ICOPY, placed.OP_HEAD
OP_WAVENET = placed.OP_WAVENET
#: modes of a launch
FEED, FEED_OUT, GENERATE = 0, 1, 2


@cuda.jit(device=True, inline=True)
def warp_sum(v):
    """Every lane gets the same sum (the butterfly adds the same pairs in every lane)."""
    v += cuda.shfl_xor_sync(FULL, v, 16)
    v += cuda.shfl_xor_sync(FULL, v, 8)
    v += cuda.shfl_xor_sync(FULL, v, 4)
    v += cuda.shfl_xor_sync(FULL, v, 2)
    v += cuda.shfl_xor_sync(FULL, v, 1)
    return v


@cuda.jit(device=True, inline=True)
def warp_max(v):
    v = max(v, cuda.shfl_xor_sync(FULL, v, 16))
    v = max(v, cuda.shfl_xor_sync(FULL, v, 8))
    v = max(v, cuda.shfl_xor_sync(FULL, v, 4))
    v = max(v, cuda.shfl_xor_sync(FULL, v, 2))
    v = max(v, cuda.shfl_xor_sync(FULL, v, 1))
    return v


@cuda.jit(device=True, inline=True)
def _better(v, i, v2, i2):
    """Whether ``(v2, i2)`` beats ``(v, i)``: higher, or as high at a lower index (argmax
    keeps the first maximum)."""
    return v2 > v or (v2 == v and i2 < i)


@cuda.jit(device=True, inline=True)
def warp_argmax(v, i):
    for m in (16, 8, 4, 2, 1):
        v2 = cuda.shfl_xor_sync(FULL, v, m)
        i2 = cuda.shfl_xor_sync(FULL, i, m)
        if _better(v, i, v2, i2):
            v, i = v2, i2
    return v, i


@cuda.jit(device=True, inline=True)
def warp_scan(v, lane):
    """Inclusive prefix sum over the warp's lanes."""
    for d in (1, 2, 4, 8, 16):
        y = cuda.shfl_up_sync(FULL, v, d)
        if lane >= d:
            v += y
    return v


@cuda.jit(device=True, inline=True)
def embed_op(rs, b, pid, o0, o1, step, frames, index, embed, embed_bias, embed_cols,
             embed_rows):
    """Embedding row ``b`` (the one-hot convolution as table lookups) for output channels
    ``o0, o0 + step, ...`` below ``o1``."""
    n = rs[b + 5]
    src = rs[b + 1] + pid * rs[b + 2]
    dst = rs[b + 3] + pid * rs[b + 4]
    dst2 = rs[b + 11]
    for o in range(o0, o1, step):
        acc = embed_bias[o]
        for j in range(n):
            acc += embed[(j * embed_rows + index[src + j]) * embed_cols + o]
        frames[dst + o] = acc
        if dst2 >= 0:
            frames[dst2 + pid * rs[b + 12] + o] = acc


@cuda.jit(device=True, inline=True)
def copy_op(rs, b, pid, code, frames, index, t, threads):
    """Copy row ``b`` (``OP_COPY`` of frames, ``OP_ICOPY`` of classes) by a block of
    ``threads``: a rewind (dst below src where they overlap) or columns into a slot, each
    chunk read whole before any of it is written."""
    n = rs[b + 5]
    src = rs[b + 1] + pid * rs[b + 2]
    dst = rs[b + 3] + pid * rs[b + 4]
    for j0 in range(0, n, threads):
        j = j0 + t
        if code == OP_COPY:
            v = frames[src + j] if j < n else float32(0.0)
            cuda.syncthreads()
            if j < n:
                frames[dst + j] = v
        else:
            iv = index[src + j] if j < n else int64(0)
            cuda.syncthreads()
            if j < n:
                index[dst + j] = iv


#: Window elements each lane has in flight per weight row, at most; and the registers a lane
#: may give to the loads in flight.
UNROLL, LOAD_REGISTERS = 10, 96
#: How a gated layer's work is split: ``lanes`` (each warp takes channels, its lanes the
#: window, warp shuffles sum them) or ``rows`` (each lane takes weight rows, each warp a share
#: of the window, partial sums meet in shared memory: no shuffles; the weights transposed).
MAPPINGS = ("lanes", "rows")


@lru_cache(maxsize=None)
def block_ops(threads: int, classes: int) -> SimpleNamespace:
    """A thread block's reductions over its warps (``block_sum``, ``block_max``,
    ``block_argmax``, each over shared scratch rows ``red[slot]``), ``head``, a Seq-U-Net's
    head into the pending logits, and ``sample``, the in-kernel sampler, for blocks of
    ``threads`` threads and ``classes`` classes (each thread holds ``ceil(classes / threads)``
    of them)."""
    T, WARPS = threads, threads // 32
    CS = -(-classes // threads)  # classes per thread
    HEAD_UNROLL = np.uint64(8)

    @cuda.jit(device=True, inline=True)
    def head(head_wt, head_b, frames, head_in, head_width, lg, t):
        """relu, 1x1: each of this thread's classes ``c`` into ``lg[c]`` from the
        ``head_width`` frames at ``head_in`` (``head_wt``: (C, classes), read coalesced)."""
        hw, cls, h0 = uint64(head_width), uint64(classes), uint64(head_in)
        for q in range(CS):
            c = min(t + q * T, classes - 1)  # past the classes: repeat, discard
            acc = head_b[c]
            cu = uint64(c)
            for j0 in range(uint64(0), hw - hw % HEAD_UNROLL, HEAD_UNROLL):
                for jj in range(HEAD_UNROLL):  # loads first, no branch between
                    j = j0 + jj
                    acc += head_wt[j * cls + cu] * max(frames[h0 + j], float32(0.0))
            for j in range(hw - hw % HEAD_UNROLL, hw):
                acc += head_wt[j * cls + cu] * max(frames[h0 + j], float32(0.0))
            if t + q * T < classes:
                lg[c] = acc

    @cuda.jit(device=True, inline=True)
    def block_sum(v, red, slot, lane, warp):
        v = warp_sum(v)
        if lane == 0:
            red[slot, warp] = v
        cuda.syncthreads()
        total = red[slot, 0]
        for w in range(1, WARPS):
            total += red[slot, w]
        return total

    @cuda.jit(device=True, inline=True)
    def block_max(v, red, slot, lane, warp):
        v = warp_max(v)
        if lane == 0:
            red[slot, warp] = v
        cuda.syncthreads()
        top = red[slot, 0]
        for w in range(1, WARPS):
            top = max(top, red[slot, w])
        return top

    @cuda.jit(device=True, inline=True)
    def block_argmax(v, i, red, redi, slot, lane, warp):
        v, i = warp_argmax(v, i)
        if lane == 0:
            red[slot, warp] = v
            redi[slot, warp] = i
        cuda.syncthreads()
        v, i = red[slot, 0], redi[slot, 0]
        for w in range(1, WARPS):
            if _better(v, i, red[slot, w], redi[slot, w]):
                v, i = red[slot, w], redi[slot, w]
        return i

    @cuda.jit(device=True, inline=True)
    def sample(lg, noise, row, pid, classes, temperature, top_k, top_p, greedy,
               cs, ce, ci, cn, counts, red, redi, t, lane, warp):
        """The next class from the pending logits ``lg`` (every thread returns it); ``cs``,
        ``ce``, ``ci``, ``cn``: the nucleus candidates' scores, masses, classes and noise."""
        best_v, best_i = NEG, NONE
        if greedy:
            for q in range(CS):
                c = t + q * T
                if c < classes and _better(best_v, best_i, lg[c], c):
                    best_v, best_i = lg[c], c
            return block_argmax(best_v, best_i, red, redi, 0, lane, warp)
        # this thread's classes' noise asked for first: the reductions below hide its latency
        nz = cuda.local.array(CS, float32)
        for q in range(CS):
            c = t + q * T
            nz[q] = noise[row, pid, c] if c < classes else float32(0.0)
        sq = cuda.local.array(CS, float32)
        for q in range(CS):
            c = t + q * T
            sq[q] = lg[c] / temperature if c < classes else NEG
        if top_k > 0:  # keep the classes with fewer than top_k scoring higher
            for q in range(CS):
                cs[t + q * T] = sq[q]
            cuda.syncthreads()
            for q in range(CS):
                higher = 0
                for j in range(classes):
                    if cs[j] > sq[q]:
                        higher += 1
                if higher >= top_k:
                    sq[q] = NEG
            cuda.syncthreads()  # every read of cs done before the candidates go there
        if top_p < 1.0:  # keep the classes outranked by less than top_p of the mass
            top = NEG
            for q in range(CS):
                top = max(top, sq[q])
            top = block_max(top, red, 1, lane, warp)
            mass = float32(0.0)
            for q in range(CS):
                mass += math.exp(sq[q] - top)
            total = block_sum(mass, red, 2, lane, warp)
            floor = top + math.log(NUCLEUS_BOUND * (1.0 - top_p) * total / classes)
            # candidates compacted in class order: slot q's classes, warp by warp
            rank = cuda.local.array(CS, int64)
            for q in range(CS):
                flag = 1 if sq[q] >= floor else 0
                incl = warp_scan(flag, lane)
                rank[q] = incl - flag
                if lane == 31:
                    counts[q, warp] = incl
            cuda.syncthreads()
            n_cand = 0
            for q in range(CS):
                for w in range(WARPS):
                    if w == warp:
                        rank[q] += n_cand
                    n_cand += counts[q, w]
            for q in range(CS):
                if sq[q] >= floor:
                    cs[rank[q]] = sq[q]
                    ce[rank[q]] = math.exp(sq[q] - top)
                    ci[rank[q]] = t + q * T
                    cn[rank[q]] = nz[q]
            cuda.syncthreads()
            keep = top_p * total
            for k in range(t, n_cand, T):
                above = float32(0.0)
                for j in range(n_cand):
                    if cs[j] > cs[k]:
                        above += ce[j]
                if above < keep:
                    v = cs[k] + cn[k]
                    if _better(best_v, best_i, v, ci[k]):
                        best_v, best_i = v, ci[k]
        else:
            for q in range(CS):
                c = t + q * T
                if c < classes:
                    v = sq[q] + nz[q]
                    if _better(best_v, best_i, v, c):
                        best_v, best_i = v, c
        return block_argmax(best_v, best_i, red, redi, 3, lane, warp)

    return SimpleNamespace(block_sum=block_sum, block_max=block_max,
                           block_argmax=block_argmax, head=head, sample=sample)


@lru_cache(maxsize=None)
def build(threads: int, max_rows: int, classes: int, channels: int, unroll: int | None = None,
          mapping: str = "lanes", uniform: bool = False, wavenet: tuple[int, int] = (0, 0)):
    """The kernel for blocks of ``threads`` (a multiple of 32), steps of at most ``max_rows``
    rows, ``classes`` classes and gated layers of at most ``channels`` output channels
    (``uniform``: every one exactly ``channels``, a Seq-U-Net's, so the ``rows`` mapping's
    stride is a constant); ``unroll`` window elements per lane in flight (None: as many as
    ``LOAD_REGISTERS`` allow, at most ``UNROLL``); ``mapping`` one of ``MAPPINGS``;
    ``wavenet``: the most dilation channels and the widest skip sum or head layer of WaveNet
    layers ((0, 0): none)."""
    if threads % 32:
        raise ValueError(f"threads per block must be a multiple of 32, not {threads}")
    if mapping not in MAPPINGS:
        raise ValueError(f"unknown mapping {mapping!r}; choose one of {MAPPINGS}")
    T, WARPS = threads, threads // 32
    CS = -(-classes // threads)  # classes per thread
    CH = -(-channels // WARPS)  # lanes: channels per warp
    RPL = -(-2 * channels // 32)  # rows: weight rows per lane
    loads = 2 * CH + 1 if mapping == "lanes" else RPL + 1  # per window element in flight
    U = unroll or max(1, min(UNROLL, LOAD_REGISTERS // loads))
    CP, ROWS, PART = CS * threads, max_rows * NCOL, WARPS * RPL * 32
    ROWWISE = mapping == "rows"
    LANES, CHUNK = np.uint64(32), np.uint64(32 * U)
    UNROLLED = np.uint64(U)
    STRIDE = np.uint64(2 * channels if uniform else 0)  # 0: the layer's own 2C
    DMAX, SMAX = max(wavenet[0], 1), max(wavenet[1], 1)
    WAVENET = wavenet[0] > 0  # compile the WaveNet paths only for WaveNets (registers)
    CHW = -(-DMAX // WARPS)  # WaveNet: dilation channels per warp

    ops = block_ops(threads, classes)
    sample, head = ops.sample, ops.head

    @cuda.jit(device=True, inline=True)
    def gated(rs, b, pid, frames, weights, lane, warp):
        """``dst = newest + tanh(f) * sigmoid(g)`` over the window: warp ``w`` computes the
        channels ``w, w + WARPS, ...`` (a warp past the last channel repeats it and discards
        the result, so no load waits on a branch)."""
        n, e = rs[b + 5], rs[b + 6]
        src = rs[b + 1] + pid * rs[b + 2]
        w0, bias, pitch = rs[b + 7], rs[b + 8], rs[b + 10]
        newest = rs[b + 9] + pid * rs[b + 2]
        f = cuda.local.array(CH, float32)
        g = cuda.local.array(CH, float32)
        bf = cuda.local.array(CH, float32)
        bg = cuda.local.array(CH, float32)
        nw = cuda.local.array(CH, float32)
        rf = cuda.local.array(CH, uint64)  # filter row offsets; the gate's are e rows on
        xs = cuda.local.array(U, float32)
        for r in range(CH):  # the epilogue's operands first: their loads overlap the window's
            o = min(warp + r * WARPS, e - 1)
            rf[r] = uint64(w0 + o * pitch)
            bf[r], bg[r], nw[r] = weights[bias + o], weights[bias + e + o], frames[newest + o]
            f[r], g[r] = float32(0.0), float32(0.0)
        # the window's loops index with unsigned integers (a signed index pays a negative-index
        # check per load), so an unrolled chunk's loads sit at constant offsets
        gate, nu, x0 = uint64(e * pitch), uint64(n), uint64(src)
        whole = nu - nu % CHUNK
        # whole chunks of 32 * U elements with every load issued before its products
        for kb in range(uint64(lane), whole, CHUNK):
            for u in range(U):
                xs[u] = frames[x0 + kb + LANES * uint64(u)]
            for r in range(CH):
                for u in range(U):
                    k = rf[r] + kb + LANES * uint64(u)
                    f[r] += weights[k] * xs[u]
                    g[r] += weights[k + gate] * xs[u]
        for k in range(whole + uint64(lane), nu, LANES):  # the rest, one element per lane
            xv = frames[x0 + k]
            for r in range(CH):
                f[r] += weights[rf[r] + k] * xv
                g[r] += weights[rf[r] + gate + k] * xv
        dst = rs[b + 3] + pid * rs[b + 4]
        dst2 = rs[b + 11]
        for r in range(CH):
            fr = warp_sum(f[r]) + bf[r]
            gr = warp_sum(g[r]) + bg[r]
            o = warp + r * WARPS
            if lane == r % 32 and o < e:
                y = nw[r] + math.tanh(fr) / (float32(1.0) + math.exp(-gr))
                frames[dst + o] = y
                if dst2 >= 0:
                    frames[dst2 + o + pid * rs[b + 12]] = y

    @cuda.jit(device=True, inline=True)
    def gated_rows(rs, b, pid, frames, weights, part, t, lane, warp):
        """``dst = newest + tanh(f) * sigmoid(g)`` with the weights transposed (window element
        ``k``'s 2C weights at ``w0 + k * 2C``): lane ``l`` accumulates rows ``l, l + 32, ...``
        (filter rows, then gate rows) over warp ``w``'s share of the window; the warps'
        partial sums meet in ``part``, summed in warp order by a thread per channel."""
        n, e = rs[b + 5], rs[b + 6]
        rows = STRIDE if STRIDE else uint64(2 * e)
        x0 = uint64(rs[b + 1] + pid * rs[b + 2])
        w0 = uint64(rs[b + 7])
        share = (uint64(n) + uint64(WARPS - 1)) // uint64(WARPS)
        k0 = uint64(warp) * share
        k1 = min(k0 + share, uint64(n))
        if k0 > k1:
            k0 = k1
        acc = cuda.local.array(RPL, float32)
        at = cuda.local.array(RPL, uint64)
        xs = cuda.local.array(U, float32)
        for r in range(RPL):  # a lane past the last row repeats it and discards the sum
            at[r] = w0 + min(uint64(lane + 32 * r), rows - uint64(1))
            acc[r] = float32(0.0)
        whole = k0 + (k1 - k0) - (k1 - k0) % UNROLLED
        for kb in range(k0, whole, UNROLLED):  # every load of a chunk before its products
            for u in range(U):
                xs[u] = frames[x0 + kb + uint64(u)]
            for u in range(U):
                for r in range(RPL):
                    acc[r] += weights[at[r] + (kb + uint64(u)) * rows] * xs[u]
        for k in range(whole, k1):
            xv = frames[x0 + k]
            for r in range(RPL):
                acc[r] += weights[at[r] + k * rows] * xv
        for r in range(RPL):
            row = lane + 32 * r
            if row < 2 * e:
                part[warp * RPL * 32 + row] = acc[r]
        cuda.syncthreads()
        bias = rs[b + 8]
        newest = rs[b + 9] + pid * rs[b + 2]
        dst = rs[b + 3] + pid * rs[b + 4]
        dst2 = rs[b + 11]
        for o in range(t, e, T):
            f = part[o]
            g = part[e + o]
            for w in range(1, WARPS):
                f += part[w * RPL * 32 + o]
                g += part[w * RPL * 32 + e + o]
            f += weights[bias + o]
            g += weights[bias + e + o]
            y = frames[newest + o] + math.tanh(f) / (float32(1.0) + math.exp(-g))
            frames[dst + o] = y
            if dst2 >= 0:
                frames[dst2 + o + pid * rs[b + 12]] = y

    @cuda.jit(device=True, inline=True)
    def wavenet_layer(rs, b, pid, frames, weights, wn, hbuf, skip, t, lane, warp):
        """One WaveNet layer: ``h = tanh(f) * sigmoid(g)`` over its dilated taps (warp ``w``
        computes the channels ``w, w + WARPS, ...``, lanes along each tap's inputs), then a
        thread per output: the residual ``newest + W_r h + b_r`` into the next ring, and the
        skip sum ``start + W_s h`` (``start``: the summed skip biases on the first layer), kept
        in ``skip``, or written as the head's input by the last layer."""
        src = rs[b + 1] + pid * rs[b + 2]
        layer = rs[b + 6]
        conv, pitch, cb = rs[b + 7], rs[b + 10], rs[b + 8]
        taps, stride, r_ch, d_ch, s_ch = (wn[layer, 0], wn[layer, 1], wn[layer, 2],
                                          wn[layer, 3], wn[layer, 4])
        f = cuda.local.array(CHW, float32)
        g = cuda.local.array(CHW, float32)
        for r in range(CHW):
            f[r], g[r] = float32(0.0), float32(0.0)
        for q in range(taps):
            for i in range(lane, r_ch, 32):
                xv = frames[src + q * stride + i]
                for r in range(CHW):
                    o = min(warp + r * WARPS, d_ch - 1)
                    f[r] += weights[conv + o * pitch + q * r_ch + i] * xv
                    g[r] += weights[conv + (d_ch + o) * pitch + q * r_ch + i] * xv
        for r in range(CHW):
            fr = warp_sum(f[r])
            gr = warp_sum(g[r])
            o = warp + r * WARPS
            if lane == 0 and o < d_ch:
                fr += weights[cb + o]
                gr += weights[cb + d_ch + o]
                hbuf[o] = math.tanh(fr) / (float32(1.0) + math.exp(-gr))
        cuda.syncthreads()
        res, res_pitch, res_b = wn[layer, 5], wn[layer, 6], wn[layer, 7]
        sk, sk_pitch, sk_b, last = wn[layer, 8], wn[layer, 9], wn[layer, 10], wn[layer, 11]
        dst = rs[b + 3] + pid * rs[b + 4]
        newest = rs[b + 9] + pid * rs[b + 2]
        outputs = s_ch if last else r_ch + s_ch
        for j in range(t, outputs, T):
            if j < outputs - s_ch:  # a residual channel
                acc = frames[newest + j]
                for o in range(d_ch):
                    acc += hbuf[o] * weights[res + o * res_pitch + j]
                frames[dst + j] = acc + weights[res_b + j]
            else:  # a channel of the skip sum
                c = j - (outputs - s_ch)
                acc = weights[sk_b + c] if sk_b >= 0 else skip[c]
                for o in range(d_ch):
                    acc += hbuf[o] * weights[sk + o * sk_pitch + c]
                if last:
                    frames[dst + c] = acc
                else:
                    skip[c] = acc

    # every thread of a block must fit the multiprocessor's 64k registers (the simulator
    # takes no such option)
    @cuda.jit(**({} if simulating() else {"max_registers": min(255, 65536 // T)}))
    def run_block(rows, starts, n_steps, t0, period,
                  frames, index, weights,
                  embed, embed_bias, embed_cols, embed_rows,
                  head_wt, head_b, head_at, head_width,
                  hid_wt, hid_b, hid_width, wn,
                  logits, classes,
                  xs, out_logits, out_samples,
                  noise, noise_at, mode, greedy, temperature, top_k, top_p):
        """``n_steps`` steps of stream ``blockIdx.x`` from clock ``t0``, from the pending
        ``logits`` (written back at the end). ``FEED``/``FEED_OUT``: classes from ``xs``
        (B, n), each step's logits into ``out_logits`` (B, n, classes) for ``FEED_OUT``.
        ``GENERATE``: each step samples the pending logits with noise row ``noise_at + i``
        into ``out_samples`` (B, n) and feeds the sample back."""
        pid = cuda.blockIdx.x
        t = cuda.threadIdx.x
        lane, warp = t % 32, t // 32
        rs = cuda.shared.array(ROWS, int64)
        part = cuda.shared.array(PART, float32)
        hbuf = cuda.shared.array(DMAX, float32)
        skip = cuda.shared.array(SMAX, float32)
        hid = cuda.shared.array(SMAX, float32)
        lg = cuda.shared.array(CP, float32)
        cs = cuda.shared.array(CP, float32)
        ce = cuda.shared.array(CP, float32)
        ci = cuda.shared.array(CP, int64)
        cn = cuda.shared.array(CP, float32)
        counts = cuda.shared.array((CS, 32), int64)
        red = cuda.shared.array((4, 32), float32)
        redi = cuda.shared.array((4, 32), int64)
        for q in range(CS):
            c = t + q * T
            lg[c] = logits[pid, c] if c < classes else NEG
        head_in = head_at + pid * head_width
        for i in range(n_steps):
            cuda.syncthreads()  # lg written; the last step's rows all read
            phase = (t0 + i) % period
            if mode == GENERATE:
                x = sample(lg, noise, noise_at + i, pid, classes, temperature, top_k, top_p,
                           greedy, cs, ce, ci, cn, counts, red, redi, t, lane, warp)
                if t == 0:
                    out_samples[pid, i] = x
            else:
                x = xs[pid, i]
            lo, hi = starts[phase], starts[phase + 1]
            for j in range(t, (hi - lo) * NCOL, T):
                rs[j] = rows[lo * NCOL + j]
            cuda.syncthreads()
            for r in range(hi - lo):
                b = r * NCOL
                code = rs[b]
                if code == OP_GATED:
                    if ROWWISE:
                        gated_rows(rs, b, pid, frames, weights, part, t, lane, warp)
                    else:
                        gated(rs, b, pid, frames, weights, lane, warp)
                elif WAVENET and code == OP_WAVENET:
                    wavenet_layer(rs, b, pid, frames, weights, wn, hbuf, skip, t, lane, warp)
                elif WAVENET and code == OP_HEAD:  # relu, 1x1, relu, 1x1 (a WaveNet's)
                    for j in range(t, hid_width, T):
                        acc = hid_b[j]
                        for k in range(head_width):
                            acc += hid_wt[k * hid_width + j] * max(frames[head_in + k],
                                                                   float32(0.0))
                        hid[j] = acc
                    cuda.syncthreads()
                    for q in range(CS):
                        c = t + q * T
                        if c < classes:
                            acc = head_b[c]
                            for j in range(hid_width):
                                acc += head_wt[j * classes + c] * max(hid[j], float32(0.0))
                            lg[c] = acc
                elif code == OP_HEAD:  # relu, 1x1, into the pending logits
                    head(head_wt, head_b, frames, head_in, head_width, lg, t)
                elif code == OP_EMBED:
                    embed_op(rs, b, pid, t, rs[b + 6], T, frames, index, embed, embed_bias,
                             embed_cols, embed_rows)
                elif code == OP_INPUT:
                    if t == 0:
                        index[rs[b + 3] + pid * rs[b + 4]] = x
                elif code == OP_COPY or code == OP_ICOPY:
                    copy_op(rs, b, pid, code, frames, index, t, T)
                cuda.syncthreads()
            if mode == FEED_OUT:
                for q in range(CS):
                    c = t + q * T
                    if c < classes:
                        out_logits[pid, i, c] = lg[c]
        for q in range(CS):
            c = t + q * T
            if c < classes:
                logits[pid, c] = lg[c]

    return run_block

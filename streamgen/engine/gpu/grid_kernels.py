"""numba-cuda kernel: each stream's step shared out among many thread blocks (the latency
regime for wide networks).

One block cannot read a paper-size Seq-U-Net's weights fast enough (18 MB per step on
average): the one-block kernel (``streamgen.engine.gpu.cuda_kernels``) streams it at 1.3k
samples/s on an H200. Here each stream has ``G`` blocks, nv-wavenet's design, and every op of
a step is shared out among them:

- a gated layer: block ``g`` takes a contiguous share of the output channels (their filter
  and gate rows), its threads along the window. Every weight of the share is loaded into
  registers in one go, so a layer costs one memory round trip. A block arrives at the
  barrier after a layer as soon as its outputs are written, and with ``prefetch`` loads the
  next layer's weights (which never depend on the others) before it waits. The warps'
  partial sums meet in shared memory;
- a WaveNet layer: its ``h = tanh(f) * sigmoid(g)`` the same way over its dilated taps, by
  dilation channels, into a per-stream scratch in global memory; after a barrier, a share of
  its outputs (residual channels into the next ring, skip channels into the skip sum kept in
  the scratch, or the head's input on the last layer), a warp per output along ``h``;
- the embedding: a share of the channels; a copy: the stream's first block (copies are short);
- the head: a share of the classes, into a logits buffer in global memory (two, alternating
  by step; a WaveNet's first 1x1 layer before it likewise, by hidden channels, and a
  barrier). After a barrier every block reads all the logits and samples the next class by
  itself (the ``Sampler``'s rule and noise, ``cuda_kernels.block_ops``), so all the stream's
  blocks hold the same class without another barrier; the input op has each write it.
- with ``whole_ends``, every block computes the embedding whole, and a Seq-U-Net's head (one
  1x1 layer) too, straight into its own logits: the same values everywhere, so the next
  layer reads the embedding and the sampler the logits without a barrier after either (two a
  step fewer, for an embedding of a few table lookups and a head of classes x channels
  multiply-adds in every block).

The blocks meet at a grid barrier where ``grid_plan.barriers`` finds a hazard, and after every
head shared out. ``BARRIERS``: ``counter`` counts arrivals with atomics on a global counter, as
cooperative groups' grid sync does, needing nothing beyond numba (the executor sizes the grid
so every block is resident at once, and a block that waits too long gives up and says so).
numba has no volatile load, so a waiting block polls with atomics too, on the counter the
arrivals add to; ``broadcast`` has the last block to arrive release each block through a flag
of its own instead, so the polls queue behind neither the arrivals nor each other.
``cooperative`` is the grid sync itself, which makes numba launch the kernel cooperatively
and link CUDA's device runtime library (and ask a GPU for its architecture just to compile).
``cluster`` (Hopper and later) makes each stream's blocks one thread-block cluster
(``streamgen.engine.gpu.cluster``) and meets at its hardware barrier, whose arrival and wait
are separate instructions; the blocks of different streams then never wait for each other,
and a stream gets at most ``cluster.MAX_BLOCKS`` blocks.
"""

from __future__ import annotations

import math
from functools import lru_cache

from numba import cuda, float32, int32, int64, uint64

from streamgen.engine.gpu import cluster, simulating
from streamgen.engine.gpu.cuda_kernels import (FEED_OUT, GENERATE, NCOL, NEG, OP_COPY, OP_EMBED,
                                               OP_GATED, OP_HEAD, OP_ICOPY, OP_INPUT, OP_WAVENET,
                                               block_ops, copy_op, embed_op, warp_sum)

BARRIERS = ("counter", "broadcast", "cooperative", "cluster")
#: Polls of the counter (about a microsecond each on a GPU) before a block gives up waiting:
#: a grid whose blocks are not all resident would otherwise hang the GPU.
PATIENCE = 1 << 22
#: The barrier's words (``bar``): the give-up flag, the arrivals, then a release per block.
GAVE_UP, ARRIVALS, RELEASES = 0, 1, 2
#: What the flag at ``GAVE_UP`` says when set (the largest wins): a block waited too long at a
#: polling barrier; the blocks were not launched in clusters of a stream's blocks.
WAITED_TOO_LONG, NOT_CLUSTERED = 1, 2


def _grid_barrier(kind: str, patience: int = PATIENCE):
    """The device functions ``arrive`` and ``wait`` of a grid barrier: a block arrives once
    its writes are done and waits before it reads what the others wrote, loading what does
    not depend on them in between (a fence before arriving would otherwise wait for those
    loads). ``bar`` (int64) holds at ``GAVE_UP`` ``WAITED_TOO_LONG`` once a block gave up
    waiting (it stays set), at ``ARRIVALS`` the blocks' arrivals, from ``RELEASES`` each
    block's release (all but the first zeroed before each launch); ``k`` numbers this block's
    barriers, ``blocks`` is the grid's size. The cluster barrier uses none of these
    arguments."""

    @cuda.jit(device=True, inline=True)
    def poll(bar, at, target):
        """Poll ``bar[at]`` until it reaches ``target``, or give up (and say so in
        ``bar[GAVE_UP]``) after ``patience`` polls or when another block gave up."""
        polls = 0
        while cuda.atomic.add(bar, at, 0) < target:
            polls += 1
            if polls % 256 == 0 and cuda.atomic.add(bar, GAVE_UP, 0) > 0:
                break  # another block gave up: the launch's results are void
            if polls > patience:
                cuda.atomic.max(bar, GAVE_UP, WAITED_TOO_LONG)
                break

    if kind == "cluster":  # the cluster's hardware barrier, each thread arriving
        cluster_arrive, cluster_wait, _ = cluster.device_functions()

        @cuda.jit(device=True, inline=True)
        def arrive(bar, k, blocks, t):
            cluster_arrive()

        @cuda.jit(device=True, inline=True)
        def wait(bar, k, blocks, t):
            cluster_wait()
    elif kind == "cooperative":  # one call: the grid sync
        @cuda.jit(device=True, inline=True)
        def arrive(bar, k, blocks, t):
            return

        @cuda.jit(device=True, inline=True)
        def wait(bar, k, blocks, t):
            cuda.cg.this_grid().sync()
    elif kind == "counter":
        @cuda.jit(device=True, inline=True)
        def arrive(bar, k, blocks, t):
            cuda.syncthreads()
            if t == 0:
                cuda.threadfence()  # the block's writes before its arrival
                cuda.atomic.add(bar, ARRIVALS, 1)

        @cuda.jit(device=True, inline=True)
        def wait(bar, k, blocks, t):
            if t == 0:
                poll(bar, ARRIVALS, k * blocks)
                cuda.threadfence()
            cuda.syncthreads()
    elif kind == "broadcast":
        @cuda.jit(device=True, inline=True)
        def arrive(bar, k, blocks, t):
            cuda.syncthreads()
            arrived = int64(-1)
            if t == 0:
                cuda.threadfence()  # the block's writes before its arrival
                arrived = cuda.atomic.add(bar, ARRIVALS, 1)
            if cuda.syncthreads_or(1 if arrived == k * blocks - 1 else 0):
                cuda.threadfence()  # the last to arrive: every arrival seen, release them
                for j in range(t, blocks, cuda.blockDim.x):
                    cuda.atomic.max(bar, RELEASES + j, k)

        @cuda.jit(device=True, inline=True)
        def wait(bar, k, blocks, t):
            if t == 0:
                poll(bar, RELEASES + cuda.blockIdx.x, k)
                cuda.threadfence()
            cuda.syncthreads()
    else:
        raise ValueError(f"unknown barrier {kind!r}; choose one of {BARRIERS}")
    return arrive, wait


def whole_ops(whole_ends: bool, wavenet: bool) -> tuple[tuple[int, ...], bool]:
    """The ops every block performs whole (the input op always, the embedding with
    ``whole_ends``), and whether the kernel computes the head whole too (``whole_ends`` on a
    Seq-U-Net: a WaveNet's head, two wide layers, stays shared out), so waits not after it:
    ``grid_plan.barriers``' ``whole`` and ``not wait_after_head``."""
    return ((OP_INPUT, OP_EMBED) if whole_ends else (OP_INPUT,)), whole_ends and not wavenet


@lru_cache(maxsize=None)
def build(threads: int, groups: int, max_rows: int, classes: int, channels: int, window: int,
          barrier: str = "counter", prefetch: bool = True, wavenet: tuple[int, int] = (0, 0),
          resident: int = 1, whole_ends: bool = False):
    """The kernel for ``groups`` blocks per stream of ``threads`` threads (a multiple of 32),
    steps of at most ``max_rows`` rows, ``classes`` classes, gated (or WaveNet) layers of at
    most ``channels`` output (dilation) channels over windows of at most ``window`` elements;
    ``barrier`` one of ``BARRIERS`` (``cluster``: compile and launch it within
    ``cluster.compiled_in_clusters(groups)``); ``prefetch``: load the next layer's weights
    between arriving at its barrier and waiting there; ``wavenet``: the most dilation
    channels and the widest skip sum or head layer of WaveNet layers ((0, 0): none);
    ``resident``: blocks that must share a multiprocessor (its registers are split among
    them); ``whole_ends``: every block computes the embedding whole, and a Seq-U-Net's head
    (one 1x1 layer) too, into its own logits, so neither needs a barrier after it (plan the
    barriers by ``whole_ops``)."""
    if threads % 32:
        raise ValueError(f"threads per block must be a multiple of 32, not {threads}")
    T, G, WARPS = threads, groups, threads // 32
    CS = -(-classes // threads)  # classes per thread (sampling)
    CPB = -(-channels // groups)  # channels per block, at most
    KPT = -(-window // threads)  # window elements per thread, at most
    CP, ROWS = CS * threads, max_rows * NCOL
    W = CPB * KPT  # weight registers per thread, filter and gate each
    SUMS = 2 * CPB  # a block's filter and gate sums of a layer
    WAVENET = wavenet[0] > 0  # compile the WaveNet paths only for WaveNets
    whole, WHOLE_HEAD = whole_ops(whole_ends, WAVENET)
    WHOLE_EMBED = OP_EMBED in whole
    DMAX, SMAX = max(wavenet[0], 1), max(wavenet[1], 1)
    SCRATCH = DMAX + 2 * SMAX  # per stream in global memory: a WaveNet's h, skip sum, hidden
    ops = block_ops(threads, classes)
    sample, head = ops.sample, ops.head
    arrive, wait = _grid_barrier(barrier)
    CLUSTER = barrier == "cluster"
    if CLUSTER:
        cluster_size = cluster.device_functions()[2]
    else:
        @cuda.jit(device=True, inline=True)
        def cluster_size():
            return int32(G)

    @cuda.jit(device=True, inline=True)
    def grid_barrier(bar, k, blocks, t):
        arrive(bar, k, blocks, t)
        wait(bar, k, blocks, t)

    @cuda.jit(device=True, inline=True)
    def shape(rs, b, wn):
        """(window elements, output channels) of layer row ``b``: a gated layer's, or a
        WaveNet layer's (taps times residual channels, dilation channels)."""
        if WAVENET and rs[b] == OP_WAVENET:
            layer = rs[b + 6]
            return wn[layer, 0] * wn[layer, 2], wn[layer, 3]
        return rs[b + 5], rs[b + 6]

    @cuda.jit(device=True, inline=True)
    def load(rs, b, g, weights, wn, wf, wg, t):
        """Block ``g``'s filter and gate weights of layer row ``b`` into ``wf``, ``wg``
        (``r * KPT + u``: its ``r``-th channel, window element ``t + u * T``; past the
        channels or the window a thread repeats the last and its product is discarded)."""
        n, e = shape(rs, b, wn)
        w0, pitch = rs[b + 7], rs[b + 10]
        c0 = g * ((e + G - 1) // G)
        for r in range(CPB):
            o = min(c0 + r, e - 1)
            row_f = uint64(w0 + o * pitch)
            row_g = uint64(w0 + (e + o) * pitch)
            for u in range(KPT):
                k = uint64(min(t + u * T, n - 1))
                wf[r * KPT + u] = weights[row_f + k]
                wg[r * KPT + u] = weights[row_g + k]

    @cuda.jit(device=True, inline=True)
    def window_sums(rs, b, pid, frames, wn, wf, wg, red, t, lane, warp):
        """Block-wide filter and gate sums of this block's channels of layer row ``b`` (its
        weights in ``wf``, ``wg``), per warp into ``red[2r]``, ``red[2r + 1]``. A WaveNet
        layer's window is its taps, each ``stride`` elements after the last."""
        n, e = shape(rs, b, wn)
        src = uint64(rs[b + 1] + pid * rs[b + 2])
        xs = cuda.local.array(KPT, float32)
        for u in range(KPT):
            k = t + u * T
            kk = min(k, n - 1)
            if WAVENET and rs[b] == OP_WAVENET:
                layer = rs[b + 6]
                q = kk // wn[layer, 2]
                v = frames[src + uint64(q * wn[layer, 1] + kk - q * wn[layer, 2])]
            else:
                v = frames[src + uint64(kk)]
            xs[u] = v if k < n else float32(0.0)
        for r in range(CPB):
            f = float32(0.0)
            gg = float32(0.0)
            for u in range(KPT):
                f += wf[r * KPT + u] * xs[u]
                gg += wg[r * KPT + u] * xs[u]
            f = warp_sum(f)
            gg = warp_sum(gg)
            if lane == 0:
                red[2 * r, warp] = f
                red[2 * r + 1, warp] = gg
        cuda.syncthreads()

    @cuda.jit(device=True, inline=True)
    def gate(red, r, bias_f, bias_g):
        """``tanh(f) * sigmoid(g)`` of the block's ``r``-th channel: its warps' sums in warp
        order, plus its biases."""
        f = red[2 * r, 0]
        gg = red[2 * r + 1, 0]
        for w in range(1, WARPS):
            f += red[2 * r, w]
            gg += red[2 * r + 1, w]
        f += bias_f
        gg += bias_g
        return math.tanh(f) / (float32(1.0) + math.exp(-gg))

    @cuda.jit(device=True, inline=True)
    def dense(w, bias, x, x0, width, outputs, g, lane, warp, dst, d0, dst2, e0, both):
        """Block ``g``'s share of ``bias + W relu(x[x0:x0 + width])`` (``w``: (outputs,
        width) rows): a warp per output, lanes along the input; output ``o`` into
        ``dst[d0 + o]`` (and ``dst2[e0 + o]`` if ``both``)."""
        per = (outputs + G - 1) // G
        for q0 in range(0, per, WARPS):
            q = q0 + warp
            o = min(g * per + q, outputs - 1)
            acc = float32(0.0)
            for j in range(lane, width, 32):
                acc += w[o * width + j] * max(x[x0 + j], float32(0.0))
            acc = warp_sum(acc) + bias[o]
            if lane == 0 and q < per and g * per + q < outputs:
                dst[d0 + o] = acc
                if both:
                    dst2[e0 + o] = acc

    @cuda.jit(device=True, inline=True)
    def wavenet_out(rs, b, pid, g, frames, weights, wn, scratch, lane, warp):
        """Block ``g``'s share of a WaveNet layer's outputs from its ``h`` (in ``scratch``):
        residual channels ``newest + W_r h + b_r`` into the next ring, then skip channels
        ``start + W_s h`` (``start``: the summed skip biases on the first layer, else the
        sum so far) kept in ``scratch``, or written as the head's input by the last layer. A
        warp per output, lanes along ``h``."""
        layer = rs[b + 6]
        r_ch, d_ch, s_ch, last = wn[layer, 2], wn[layer, 3], wn[layer, 4], wn[layer, 11]
        outputs = s_ch if last else r_ch + s_ch
        per = (outputs + G - 1) // G
        h0, s0 = pid * SCRATCH, pid * SCRATCH + DMAX
        dst = rs[b + 3] + pid * rs[b + 4]
        for q0 in range(0, per, WARPS):
            q = q0 + warp
            j = min(g * per + q, outputs - 1)
            residual = j < outputs - s_ch
            c = j - (outputs - s_ch)
            if residual:
                w, pitch, col = wn[layer, 5], wn[layer, 6], j
            else:
                w, pitch, col = wn[layer, 8], wn[layer, 9], c
            acc = float32(0.0)
            for o in range(lane, d_ch, 32):
                acc += scratch[h0 + o] * weights[w + o * pitch + col]
            acc = warp_sum(acc)
            if lane == 0 and q < per and g * per + q < outputs:
                if residual:
                    frames[dst + j] = (frames[rs[b + 9] + pid * rs[b + 2] + j] + acc
                                       + weights[wn[layer, 7] + j])
                else:
                    acc += weights[wn[layer, 10] + c] if wn[layer, 10] >= 0 else scratch[s0 + c]
                    if last:
                        frames[dst + c] = acc
                    else:
                        scratch[s0 + c] = acc

    # every thread of ``resident`` blocks must fit the multiprocessor's 64k registers (the
    # simulator takes no such option)
    @cuda.jit(**({} if simulating() else {"max_registers": min(255, 65536 // (T * resident))}))
    def run_grid(rows, starts, need, ahead, n_steps, t0, period,
                 frames, index, weights,
                 embed, embed_bias, embed_cols, embed_rows,
                 head_w, head_b, head_at, head_width,
                 hid_w, hid_b, hid_width, wn, scratch,
                 logits, glog, bar, classes,
                 xs, out_logits, out_samples,
                 noise, noise_at, mode, greedy, temperature, top_k, top_p):
        """``n_steps`` steps of stream ``blockIdx.x // G`` from clock ``t0``, this block
        taking share ``blockIdx.x % G`` of each op; the modes, ``logits``, ``xs``,
        ``out_samples`` and ``noise`` as ``cuda_kernels``' ``run_block``, ``out_logits``
        flat. ``glog`` (2 * B * classes): the heads' logits by step parity; ``bar``: the
        barrier's counter and flag; ``need``, ``ahead``: per row, ``grid_plan.barriers``
        and ``grid_plan.next_layer``; ``head_w`` (classes, C), or (C, classes) for a head
        computed whole; a WaveNet's head first layer ``hid_w`` (hidden, C), its layer table
        ``wn`` and ``scratch`` (B * SCRATCH)."""
        pid = cuda.blockIdx.x // G
        g = cuda.blockIdx.x % G
        blocks = cuda.gridDim.x
        t = cuda.threadIdx.x
        if CLUSTER and cluster_size() != G:  # the stream's blocks must share its barrier
            if t == 0:
                cuda.atomic.max(bar, GAVE_UP, NOT_CLUSTERED)
            return
        lane, warp = t % 32, t // 32
        rs = cuda.shared.array(ROWS, int64)
        sync = cuda.shared.array(max_rows, int32)
        nxt = cuda.shared.array(max_rows, int32)
        red = cuda.shared.array((SUMS, WARPS), float32)
        lg = cuda.shared.array(CP, float32)
        cs = cuda.shared.array(CP, float32)
        ce = cuda.shared.array(CP, float32)
        ci = cuda.shared.array(CP, int64)
        cn = cuda.shared.array(CP, float32)
        counts = cuda.shared.array((CS, 32), int64)
        sred = cuda.shared.array((4, 32), float32)
        sredi = cuda.shared.array((4, 32), int64)
        wf = cuda.local.array(W, float32)
        wg = cuda.local.array(W, float32)
        B = cuda.gridDim.x // G
        head_in = head_at + pid * head_width
        hid0 = pid * SCRATCH + DMAX + SMAX
        passed = 0  # grid barriers this block has passed
        for i in range(n_steps):
            phase = (t0 + i) % period
            lo, hi = starts[phase], starts[phase + 1]
            for j in range(t, (hi - lo) * NCOL, T):
                rs[j] = rows[lo * NCOL + j]
            for j in range(t, hi - lo, T):
                sync[j] = need[lo + j]
                nxt[j] = ahead[lo + j]
            # the pending logits: the last launch's, or the last head's (already in ``lg``
            # where this block computed the head whole)
            if mode == GENERATE and (i == 0 or not WHOLE_HEAD):
                for q in range(CS):
                    c = t + q * T
                    if c >= classes:
                        lg[c] = NEG
                    elif i == 0:
                        lg[c] = logits[pid, c]
                    else:
                        lg[c] = glog[((i - 1) % 2 * B + pid) * classes + c]
            cuda.syncthreads()
            if mode == GENERATE:
                x = sample(lg, noise, noise_at + i, pid, classes, temperature, top_k, top_p,
                           greedy, cs, ce, ci, cn, counts, sred, sredi, t, lane, warp)
                if t == 0 and g == 0:
                    out_samples[pid, i] = x
            else:
                x = xs[pid, i]
            loaded = -1  # the layer row whose weights wf, wg hold
            arrived = False  # at the barrier before the next row, not yet waited at
            for r in range(hi - lo):
                b = r * NCOL
                code = rs[b]
                if sync[r]:
                    if not arrived:
                        passed += 1
                        arrive(bar, passed, blocks, t)
                    wait(bar, passed, blocks, t)
                    arrived = False
                layer = code == OP_GATED or (WAVENET and code == OP_WAVENET)
                if layer:
                    if loaded != r:
                        load(rs, b, g, weights, wn, wf, wg, t)
                    n, e = shape(rs, b, wn)
                    per = (e + G - 1) // G
                    o = g * per + t
                    mine = t < per and o < e  # a thread per channel
                    # its biases and residual input asked for before the window's products
                    # (whose reductions would otherwise wait in front of these loads)
                    bias_f = bias_g = newest = float32(0.0)
                    if mine:
                        bias_f = weights[rs[b + 8] + o]
                        bias_g = weights[rs[b + 8] + e + o]
                        if code == OP_GATED:
                            newest = frames[rs[b + 9] + pid * rs[b + 2] + o]
                    window_sums(rs, b, pid, frames, wn, wf, wg, red, t, lane, warp)
                    if mine:
                        y = gate(red, t, bias_f, bias_g)
                        if code == OP_GATED:
                            y += newest
                            frames[rs[b + 3] + pid * rs[b + 4] + o] = y
                            if rs[b + 11] >= 0:
                                frames[rs[b + 11] + pid * rs[b + 12] + o] = y
                        else:
                            scratch[pid * SCRATCH + o] = y
                    if WAVENET and code == OP_WAVENET:  # every h before the outputs
                        passed += 1
                        arrive(bar, passed, blocks, t)
                        if prefetch and nxt[r] >= 0:
                            load(rs, nxt[r] * NCOL, g, weights, wn, wf, wg, t)
                            loaded = nxt[r]
                        wait(bar, passed, blocks, t)
                        wavenet_out(rs, b, pid, g, frames, weights, wn, scratch, lane, warp)
                elif code == OP_HEAD and WHOLE_HEAD:  # relu, 1x1: every class, a thread each
                    head(head_w, head_b, frames, head_in, head_width, lg, t)  # (C, classes)
                    if mode == FEED_OUT and g == 0:  # each thread its own classes' logits
                        for c in range(t, classes, T):
                            out_logits[(pid * n_steps + i) * classes + c] = lg[c]
                elif code == OP_HEAD:  # relu, 1x1 (a WaveNet's: relu, 1x1, relu, 1x1)
                    gl = (i % 2 * B + pid) * classes
                    if WAVENET:
                        dense(hid_w, hid_b, frames, head_in, head_width, hid_width, g, lane,
                              warp, scratch, hid0, scratch, hid0, False)
                        passed += 1
                        grid_barrier(bar, passed, blocks, t)
                        dense(head_w, head_b, scratch, hid0, hid_width, classes, g, lane, warp,
                              glog, gl, out_logits, (pid * n_steps + i) * classes,
                              mode == FEED_OUT)
                    else:
                        dense(head_w, head_b, frames, head_in, head_width, classes, g, lane,
                              warp, glog, gl, out_logits, (pid * n_steps + i) * classes,
                              mode == FEED_OUT)
                    passed += 1
                    grid_barrier(bar, passed, blocks, t)
                elif code == OP_EMBED:  # a share of the channels, or all of them
                    e = rs[b + 6]
                    per = e if WHOLE_EMBED else (e + G - 1) // G
                    c0 = 0 if WHOLE_EMBED else g * per
                    embed_op(rs, b, pid, c0 + t, min(e, c0 + per), T, frames, index,
                             embed, embed_bias, embed_cols, embed_rows)
                elif code == OP_INPUT:  # every block writes the same class
                    if t == 0:
                        index[rs[b + 3] + pid * rs[b + 4]] = x
                elif (code == OP_COPY or code == OP_ICOPY) and g == 0:  # copies are short
                    copy_op(rs, b, pid, code, frames, index, t, T)
                if r + 1 < hi - lo and sync[r + 1]:  # this block's writes are done
                    passed += 1
                    arrive(bar, passed, blocks, t)
                    arrived = True
                if prefetch and layer and loaded != nxt[r] and nxt[r] >= 0:
                    load(rs, nxt[r] * NCOL, g, weights, wn, wf, wg, t)  # while the others finish
                    loaded = nxt[r]
                cuda.syncthreads()
        if g == 0:
            for q in range(CS):
                c = t + q * T
                if c < classes:
                    logits[pid, c] = lg[c] if WHOLE_HEAD else glog[
                        ((n_steps - 1) % 2 * B + pid) * classes + c]

    return run_grid

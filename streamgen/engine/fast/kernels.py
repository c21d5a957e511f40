"""numba kernels for the Seq-U-Net step program (CPU, float32).

They run a whole block of steps in one native call over the same ring storage the torch
program uses (numpy views of its tensors), so capture, reset, prime and state save/restore
are shared with the plain engine. The layer graph arrives as integer tables; every ring is
one entry of a homogeneous tuple, its window length in ``wins`` and its newest index in ``pos``.
"""

from __future__ import annotations

import os

import numpy as np
from numba import njit

FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "reassoc"}


@njit(cache=True, inline="always")
def ring_slot(data, pos, r, window):
    """Index of ring ``r``'s next frame, rewinding the ring first when it is full."""
    p = pos[r]
    cap = data.shape[1]
    if p + 1 == cap:
        keep = window - 1
        for b in range(data.shape[0]):
            for i in range(keep):
                data[b, i, :] = data[b, cap - keep + i, :]
        pos[r] = keep - 1
    return pos[r] + 1


@njit(cache=True, fastmath=FASTMATH)
def gated(src, p, nframes, weight, bias, channels, dst, q, col, acc):
    """``dst[:, q, col:col+C] = src[:, p, :C] + tanh(f) * sigmoid(g)`` over the newest
    ``nframes`` frames of ``src``; ``weight`` is (2C, nframes * src_channels)."""
    cin = src.shape[2]
    lo = p - nframes + 1
    for b in range(src.shape[0]):
        for o in range(2 * channels):
            s = bias[o]
            for f in range(nframes):
                frame = src[b, lo + f]
                w = weight[o, f * cin : (f + 1) * cin]
                for i in range(cin):
                    s += w[i] * frame[i]
            acc[o] = s
        for o in range(channels):
            dst[b, q, col + o] = src[b, p, o] + np.tanh(acc[o]) / (1.0 + np.exp(-acc[channels + o]))


@njit(cache=True)
def chain(ids, rings, pos, wins, weights, biases, channels, dst, q, acc):
    """Run the layers ``ids`` in order, each into the first ``channels`` columns of the next
    one's slot, the last into ``dst[:, q, :channels]``."""
    n = ids.shape[0]
    for i in range(n):
        r = ids[i]
        pos[r] += 1
        if i + 1 < n:
            r2 = ids[i + 1]
            q2 = ring_slot(rings[r2], pos, r2, wins[r2])
            gated(rings[r], pos[r], wins[r], weights[r], biases[r], channels, rings[r2], q2, 0, acc)
        else:
            gated(rings[r], pos[r], wins[r], weights[r], biases[r], channels, dst, q, 0, acc)


@njit(cache=True)
def sequnet_step(
    x, phase, tops, in_ring, in_pos, table, in_bias, rings, pos, wins, weights, odds, biases,
    channels, enc_convs, enc_down, bott, dec_up, dec_convs, head_w, head_b, head_in, acc, logits,
):
    """One step for every stream: classes ``x`` (B,) in, ``logits`` (B, classes) out."""
    last = enc_down.shape[0]
    c = channels
    top = tops[phase]
    batch = x.shape[0]
    # input ring and input convolution (table lookup; index `classes` is the zero vector)
    k = table.shape[0] // (logits.shape[1] + 1)
    qi = ring_slot(in_ring, in_pos, 0, k)
    for b in range(batch):
        in_ring[b, qi, 0] = x[b]
    in_pos[0] = qi
    entry = enc_convs[0, 0] if last > 0 else bott[0]
    qe = ring_slot(rings[entry], pos, entry, wins[entry])
    dst = rings[entry]
    stride = logits.shape[1] + 1
    for b in range(batch):
        for o in range(c):
            dst[b, qe, o] = in_bias[o]
        for j in range(k):
            row = table[j * stride + in_ring[b, qi - k + 1 + j, 0]]
            for o in range(c):
                dst[b, qe, o] += row[o]
    # encoder upwards
    hi = min(top, last - 1)
    for l in range(hi + 1):
        down = enc_down[l]
        qd = ring_slot(rings[down], pos, down, wins[down])
        chain(enc_convs[l], rings, pos, wins, weights, biases, c, rings[down], qd, acc)
        d0 = dec_convs[l, 0]
        q0 = ring_slot(rings[d0], pos, d0, wins[d0])
        for b in range(batch):
            rings[d0][b, q0, :c] = rings[down][b, qd, :c]
        pos[down] += 1
        if l + 1 <= top:
            nxt = enc_convs[l + 1, 0] if l + 1 < last else bott[0]
            qn = ring_slot(rings[nxt], pos, nxt, wins[nxt])
            gated(rings[down], pos[down], wins[down], weights[down], biases[down], c,
                  rings[nxt], qn, 0, acc)
    # bottleneck
    if top == last:
        dst, q = head_in, 0
        if last > 0:
            up = dec_up[last - 1]
            dst, q = rings[up], ring_slot(rings[up], pos, up, wins[up])
        chain(bott, rings, pos, wins, weights, biases, c, dst, q, acc)
    # decoder, coarse to fine
    for l in range(hi, -1, -1):
        up = dec_up[l]
        convs = dec_convs[l]
        on_tick = l + 1 <= top
        if on_tick:
            pos[up] += 1
        d0 = convs[0]
        q0 = ring_slot(rings[d0], pos, d0, wins[d0])
        if on_tick:
            gated(rings[up], pos[up], wins[up], weights[up], biases[up], c, rings[d0], q0, c, acc)
        else:
            gated(rings[up], pos[up], wins[up] - 1, odds[up], biases[up], c, rings[d0], q0, c, acc)
        for j in range(1, convs.shape[0]):
            rj = convs[j]
            qj = ring_slot(rings[rj], pos, rj, wins[rj])
            for b in range(batch):
                rings[rj][b, qj, c:] = rings[d0][b, q0, c:]
        dst, q = head_in, 0
        if l > 0:
            nu = dec_up[l - 1]
            dst, q = rings[nu], ring_slot(rings[nu], pos, nu, wins[nu])
        chain(convs, rings, pos, wins, weights, biases, c, dst, q, acc)
    # head: relu, 1x1
    for b in range(batch):
        for o in range(head_w.shape[0]):
            s = head_b[o]
            w = head_w[o]
            for i in range(c):
                h = head_in[b, 0, i]
                if h > 0:
                    s += w[i] * h
            logits[b, o] = s


@njit(cache=True)
def sequnet_feed(xs, out, write, t0, period, logits, prog):
    """Teacher-forced block: ``xs`` (B, N); each step's logits into ``out`` if ``write``."""
    for i in range(xs.shape[1]):
        sequnet_step(xs[:, i], (t0 + i) % period, *prog, logits)
        if write:
            out[:, i, :] = logits


@njit(cache=True)
def sequnet_generate(n, out, t0, period, logits, prog, noise, noise_at, temperature, top_k,
                     top_p, greedy, scores, sorted_buf, x):
    """Free-running block of ``n`` steps consuming ``noise[noise_at:]`` (one row per step)."""
    for i in range(n):
        sample_into(logits, noise[noise_at + i], temperature, top_k, top_p, greedy, scores,
                    sorted_buf, x)
        out[:, i] = x
        sequnet_step(x, (t0 + i) % period, *prog, logits)


@njit(cache=True)
def apply_top_p(scores, top_p, buf):
    """Set to -inf every score outside the nucleus (the fewest top classes holding ``top_p``).

    Only candidates are sorted: classes below ``(1 - top_p) / classes`` of the total mass hold
    less than ``1 - top_p`` together, so the nucleus lies among the rest (usually a few dozen).
    """
    classes = scores.shape[0]
    m = scores.max()
    total = 0.0
    for i in range(classes):
        total += np.exp(scores[i] - m)
    # a hair below the bound, so rounding can only widen the candidate set
    floor = m + np.log(0.999 * (1.0 - top_p) * total / classes)
    # candidates in descending order by insertion (a few dozen: cheaper than a full sort)
    n = 0
    for i in range(classes):
        v = scores[i]
        if v >= floor:
            j = n
            while j > 0 and buf[j - 1] < v:
                buf[j] = buf[j - 1]
                j -= 1
            buf[j] = v
            n += 1
    cum = 0.0
    cutoff = buf[n - 1]  # the candidates always reach top_p: all of them is the widest nucleus
    for i in range(n):
        if cum >= top_p:
            cutoff = buf[i - 1]
            break
        cum += np.exp(buf[i] - m) / total
    for i in range(classes):
        if scores[i] < cutoff:
            scores[i] = -np.inf


@njit(cache=True)
def sample_into(logits, noise, temperature, top_k, top_p, greedy, scores, sorted_buf, out):
    """The torch ``Sampler``'s rule on one step's logits with its Gumbel noise (B, classes)."""
    batch, classes = logits.shape
    for b in range(batch):
        if greedy:
            out[b] = np.argmax(logits[b])
            continue
        for i in range(classes):
            scores[i] = logits[b, i] / temperature
        if top_k > 0:
            sorted_buf[:] = scores
            sorted_buf.sort()
            kth = sorted_buf[classes - top_k]
            for i in range(classes):
                if scores[i] < kth:
                    scores[i] = -np.inf
        if top_p < 1.0:
            apply_top_p(scores, top_p, sorted_buf)
        best = 0
        best_v = -np.inf
        for i in range(classes):
            v = scores[i] + noise[b, i]
            if v > best_v:
                best_v = v
                best = i
        out[b] = best


def kernels_cached() -> bool:
    """Whether numba's on-disk cache already holds the generation kernel. When it does not
    (first use after an install), the first block compiles it: about half a minute on one
    core. Reads numba's cache index path (internal API); if that cannot be read, says True."""
    try:
        index = sequnet_generate._cache._cache_file._index_path
    except AttributeError:
        return True
    return os.path.isfile(index)

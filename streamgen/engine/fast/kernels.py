"""numba kernels: an interpreter of step plans of gated layers (CPU, float32).

They run a whole block of steps in one native call over the same ring storage and ring
positions the torch executor uses (numpy views of its tensors), so capture, reset, prime and
state save/restore are shared with it. The plans arrive as integer tables (``Compiled``);
every float ring is one entry of a homogeneous tuple, its window length in ``wins`` and its
newest index in ``pos``.
"""

from __future__ import annotations

import os
from collections import namedtuple

import numpy as np
from numba import njit

from streamgen.engine.sampling import NUCLEUS_BOUND
from streamgen.engine.tables import (OP_ADVANCE, OP_COPY, OP_EMBED, OP_GATED, OP_HEAD,
                                     OP_INPUT, TAPS_ODD)

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



#: A program as the kernels see it: the plan tables, the shared ring positions and windows,
#: the float rings (one homogeneous tuple; the index ring's entry is a placeholder), the
#: index ring, per-ring weights, the input table and the head.
Compiled = namedtuple("Compiled", [
    "ops", "starts", "pos", "wins", "rings", "index", "index_ring", "weights", "odds", "biases",
    "table", "table_bias", "head_w", "head_b", "head_in", "acc",
])


@njit(cache=True, inline="always")
def _dst(rings, pos, wins, head_in, r):
    """The array and frame index that ring ``r``'s next frame goes to (-1: the head input)."""
    if r < 0:
        return head_in, 0
    return rings[r], ring_slot(rings[r], pos, r, wins[r])


@njit(cache=True)
def run_step(x, phase, prog, logits):
    """One step for every stream: classes ``x`` (B,) in, ``logits`` (B, classes) out, by
    interpreting the plan of clock ``phase``."""
    (ops, starts, pos, wins, rings, index, index_ring, weights, odds, biases, table, table_bias,
     head_w, head_b, head_in, acc) = prog
    batch = x.shape[0]
    for i in range(starts[phase], starts[phase + 1]):
        code, a, b, c, d, e = ops[i, 0], ops[i, 1], ops[i, 2], ops[i, 3], ops[i, 4], ops[i, 5]
        if code == OP_INPUT:
            q = ring_slot(index, pos, index_ring, wins[index_ring])
            for s in range(batch):
                index[s, q, 0] = x[s]
            pos[index_ring] = q
        elif code == OP_ADVANCE:
            pos[a] += 1
        elif code == OP_GATED:
            dst, q = _dst(rings, pos, wins, head_in, b)
            if d == TAPS_ODD:
                gated(rings[a], pos[a], wins[a] - 1, odds[a], biases[a], e, dst, q, c, acc)
            else:
                gated(rings[a], pos[a], wins[a], weights[a], biases[a], e, dst, q, c, acc)
        elif code == OP_COPY:
            src = rings[a]
            p = pos[a]
            dst, q = _dst(rings, pos, wins, head_in, b)
            for s in range(batch):
                for j in range(e):
                    dst[s, q, d + j] = src[s, p, c + j]
        elif code == OP_EMBED:
            # one-hot convolution as table lookups (index `classes` is the zero vector)
            dst, q = _dst(rings, pos, wins, head_in, b)
            k = wins[index_ring]
            p = pos[index_ring]
            rows = table.shape[0] // k
            for s in range(batch):
                for o in range(e):
                    dst[s, q, c + o] = table_bias[o]
                for j in range(k):
                    row = table[j * rows + index[s, p - k + 1 + j, 0]]
                    for o in range(e):
                        dst[s, q, c + o] += row[o]
        elif code == OP_HEAD:  # relu, 1x1
            for s in range(batch):
                for o in range(head_w.shape[0]):
                    total = head_b[o]
                    for j in range(head_w.shape[1]):
                        h = head_in[s, 0, j]
                        if h > 0:
                            total += head_w[o, j] * h
                    logits[s, o] = total


@njit(cache=True, nogil=True)
def feed(xs, out, write, t0, period, logits, prog):
    """Teacher-forced block: ``xs`` (B, N); each step's logits into ``out`` if ``write``."""
    for i in range(xs.shape[1]):
        run_step(xs[:, i], (t0 + i) % period, prog, logits)
        if write:
            out[:, i, :] = logits


@njit(cache=True, nogil=True)
def generate(n, out, t0, period, logits, prog, noise, noise_at, temperature, top_k,
             top_p, greedy, scores, sorted_buf, x):
    """Free-running block of ``n`` steps consuming ``noise[noise_at:]`` (one row per step;
    greedy steps read none, so a greedy block may be longer than the noise block)."""
    for i in range(n):
        row = noise[0] if greedy else noise[noise_at + i]
        sample_into(logits, row, temperature, top_k, top_p, greedy, scores, sorted_buf, x)
        out[:, i] = x
        run_step(x, (t0 + i) % period, prog, logits)


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
    floor = m + np.log(NUCLEUS_BOUND * (1.0 - top_p) * total / classes)
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
        index = generate._cache._cache_file._index_path
    except AttributeError:
        return True
    return os.path.isfile(index)

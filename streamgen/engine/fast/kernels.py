"""numba kernels: an interpreter of step plans of a Seq-U-Net's gated layers, a WaveNet's or a
TCN's (CPU, float32).

They run a whole block of steps in one native call over the same ring storage and ring
positions the torch executor uses (numpy views of its tensors), so capture, reset, prime and
state save/restore are shared with it. The plans arrive as integer tables (``Compiled``):
every float ring, and its layer's weights, is a row of ``views`` (addresses and shapes, so
one compiled kernel serves every model whatever its count of rings), its window length in
``wins``, its newest index in ``pos``, its kind of layer in ``specs``.
"""

from __future__ import annotations

import os
from collections import namedtuple

import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.core.cpu import CPUTargetOptions
from numba.extending import intrinsic
from numba.np.arrayobj import populate_array

from streamgen.engine.sampling import NUCLEUS_BOUND
from streamgen.engine.tables import (OP_ADVANCE, OP_COPY, OP_EMBED, OP_GATED, OP_HEAD,
                                     OP_INPUT, TAPS_ODD)

FASTMATH = {"nnan", "ninf", "nsz", "arcp", "contract", "reassoc"}


#: A ring's row of ``Compiled.views``, one (address, shape...) entry each: its frames (B,
#: capacity, channels), its layer's weights, odd-tap weights, bias, 1x1s and 1x1 bias (the
#: index ring's: placeholders).
VIEW_FRAMES, VIEW_WEIGHT, VIEW_ODD, VIEW_BIAS, VIEW_PROJ, VIEW_PROJ_BIAS = range(6)


def view_entry(array: np.ndarray) -> list[int]:
    """``array``'s entry in ``Compiled.views``: its address and shape (padded with ones to 3
    dimensions). Whoever makes the entry keeps ``array`` alive as long as the entry is used."""
    if array.dtype != np.float32 or not array.flags.c_contiguous or array.ndim > 3:
        raise ValueError("a kernel view needs a C-contiguous float32 array of at most 3 dimensions")
    return [array.ctypes.data, *array.shape, *[1] * (3 - array.ndim)]


@intrinsic
def _float32_array(typingctx, address, shape):
    """The C-contiguous float32 array of ``shape`` at ``address``: a view that owns nothing."""
    ndim = shape.count
    array_type = types.Array(types.float32, ndim, "C")

    def codegen(context, builder, signature, args):
        array = context.make_array(array_type)(context, builder)
        dims = cgutils.unpack_tuple(builder, args[1], ndim)
        itemsize = context.get_constant(types.intp, 4)
        strides, step = [], itemsize
        for dim in reversed(dims):
            strides.insert(0, step)
            step = builder.mul(step, dim)
        populate_array(array, data=builder.inttoptr(args[0], array.data.type), shape=dims,
                       strides=strides, itemsize=itemsize, meminfo=None)
        return array._getvalue()

    return array_type(address, shape), codegen


@njit(cache=True, inline="always")
def frames(views, r):
    """Ring ``r``'s frames (B, capacity, channels)."""
    v = views[r, VIEW_FRAMES]
    return _float32_array(v[0], (v[1], v[2], v[3]))


@njit(cache=True, inline="always")
def matrix(views, r, slot):
    """Ring ``r``'s matrix ``slot`` (``VIEW_WEIGHT``, ``VIEW_ODD``, ``VIEW_PROJ``)."""
    v = views[r, slot]
    return _float32_array(v[0], (v[1], v[2]))


@njit(cache=True, inline="always")
def vector(views, r, slot):
    """Ring ``r``'s vector ``slot`` (``VIEW_BIAS``, ``VIEW_PROJ_BIAS``)."""
    v = views[r, slot]
    return _float32_array(v[0], (v[1],))


@njit(cache=True, inline="always")
def ring_slot(data, pos, r, window):
    """Index of ring ``r``'s next frame, rewinding the ring first when it is full."""
    p = pos[r]
    cap = data.shape[1]
    if p + 1 == cap:
        keep = window - 1
        for b in range(data.shape[0]):
            for i in range(keep):
                for j in range(data.shape[2]):
                    data[b, i, j] = data[b, cap - keep + i, j]
        pos[r] = keep - 1
    return pos[r] + 1


@njit(cache=True, fastmath=FASTMATH, inline="always")
def tanh(x):
    """``tanh(x)`` in float32 as a rational function (Eigen's ``generic_fast_tanh_float``),
    within 4e-7 of the exact value everywhere: unlike libm's, it vectorizes."""
    x = min(max(x, np.float32(-7.90531110763549805)), np.float32(7.90531110763549805))
    x2 = x * x
    p = x2 * np.float32(-2.76076847742355e-16) + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    q = x2 * np.float32(1.19825839466702e-06) + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p * x / q


#: A ring's kind of layer, the first column of its row of ``Compiled.specs`` (kind, taps,
#: dilation, and two more by kind; zeros on the index ring): a Seq-U-Net's gated residual
#: layer; a WaveNet layer (first, last); a TCN convolution (source ring, residual mode).
LAYER_GATED, LAYER_WAVENET, LAYER_TCN = 0, 1, 2
#: A TCN convolution's residual: none (a block's first convolution), the source ring's newest
#: frame, or the row of the newest class index (the first block's, over the index ring).
RES_NONE, RES_FRAME, RES_LOOKUP = 0, 1, 2


@njit(cache=True, fastmath=FASTMATH, inline="always")
def affine(window, weight, bias, rows, acc):
    """``acc[:rows] = weight[:rows] @ window + bias[:rows]``, each output one dot product."""
    for o in range(rows):
        row = weight[o]
        s = np.float32(0.0)
        for i in range(window.shape[0]):
            s += row[i] * window[i]
        acc[o] = s + bias[o]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def gates(window, weight, bias, channels, acc):
    """``acc[:C] = tanh(f) * sigmoid(g)``, ``(f, g) = weight @ window + bias`` (``weight``:
    (2C, len(window))), the gates in one loop that vectorizes (``sigmoid(g) = (1 + tanh(g /
    2)) / 2``)."""
    half = np.float32(0.5)
    affine(window, weight, bias, 2 * channels, acc)
    for o in range(channels):
        acc[o] = tanh(acc[o]) * (half + half * tanh(half * acc[channels + o]))


@njit(cache=True, inline="always")
def gather(frames, p, taps, dilation, window):
    """``window`` = the ``taps`` frames ``p - (taps - 1 - t) * dilation`` of one stream's ring
    ``frames`` (oldest first), one after another."""
    r = frames.shape[1]
    for t in range(taps):
        for j in range(r):
            window[t * r + j] = frames[p - (taps - 1 - t) * dilation, j]


@njit(cache=True, fastmath=FASTMATH)
def gated(src, p, nframes, weight, bias, channels, dst, q, col, acc):
    """``dst[:, q, col:col+C] = src[:, p, :C] + tanh(f) * sigmoid(g)`` over the newest
    ``nframes`` frames of ``src``, which lie one after another in the ring; ``weight`` is
    (2C, nframes * src_channels)."""
    n = nframes * src.shape[2]
    lo = (p - nframes + 1) * src.shape[2]
    for b in range(src.shape[0]):
        gates(src[b].reshape(-1)[lo : lo + n], weight, bias, channels, acc)
        for o in range(channels):
            dst[b, q, col + o] = src[b, p, o] + acc[o]


@njit(cache=True, fastmath=FASTMATH)
def wavenet_layer(src, p, spec, conv, conv_bias, proj, proj_bias, skip, dst, q, col, acc, work):
    """One WaveNet layer for every stream: ``h = tanh(f) * sigmoid(g)`` over the dilated taps
    of ``src`` (``conv``: (2D, taps * R), oldest tap first), then ``h @ proj``: (D, R + S),
    the residual and skip 1x1s, or (D, S) on the last layer, plus ``proj_bias``. The residual
    ``newest + W_r h + b_r`` goes into ``dst``; ``W_s h`` adds to the skip sum ``skip`` (B, S),
    which the first layer starts from its bias (the summed skip biases), and which the last
    layer writes into ``dst`` (the head's input) instead. ``spec``: kind, taps, dilation,
    first, last; ``work`` (2, n) scratch for the gathered taps and the 1x1s' sums."""
    taps, dilation, first, last = spec[1], spec[2], spec[3] > 0, spec[4] > 0
    r = src.shape[2]
    d = conv.shape[0] // 2
    width = proj.shape[1]
    s_ch = skip.shape[1]
    window, sums = work[0, : taps * r], work[1]
    for b in range(src.shape[0]):
        gather(src[b], p, taps, dilation, window)
        gates(window, conv, conv_bias, d, acc)
        for j in range(width):
            sums[j] = proj_bias[j]
        for o in range(d):
            h = acc[o]
            row = proj[o]
            for j in range(width):
                sums[j] += row[j] * h
        for j in range(s_ch):
            total = sums[width - s_ch + j] + (np.float32(0.0) if first else skip[b, j])
            if last:
                dst[b, q, col + j] = total
            else:
                skip[b, j] = total
        if not last:
            for j in range(r):
                dst[b, q, col + j] = src[b, p, j] + sums[j]


@njit(cache=True, fastmath=FASTMATH)
def tcn_layer(src, p, spec, conv, bias, project, project_bias, source, source_p, index,
              index_p, dst, q, col, acc, work):
    """One TCN convolution for every stream: ``relu(conv @ taps + bias)`` over the dilated taps
    of ``src`` (``conv``: (out, taps * in), oldest tap first). On a block's second convolution
    (``spec``: kind, taps, dilation, source ring, residual mode) it adds the residual, then
    applies the ReLU again: the newest frame ``source[:, source_p]`` of the block input, or
    ``project``'s row of the newest class index ``index[:, index_p]`` plus ``project_bias``
    (the first block's 1x1 over one-hot classes). ``work`` (2, n) scratch for the gathered
    taps and the residual."""
    taps, dilation, mode = spec[1], spec[2], spec[4]
    zero = np.float32(0.0)
    n_out = conv.shape[0]
    window, res = work[0, : taps * src.shape[2]], work[1]
    for b in range(src.shape[0]):
        gather(src[b], p, taps, dilation, window)
        affine(window, conv, bias, n_out, acc)
        if mode == RES_NONE:
            for o in range(n_out):
                dst[b, q, col + o] = max(acc[o], zero)
            continue
        if mode == RES_FRAME:
            for o in range(n_out):
                res[o] = source[b, source_p, o]
        else:
            row = project[index[b, index_p, 0]]
            for o in range(n_out):
                res[o] = row[o] + project_bias[o]
        for o in range(n_out):
            dst[b, q, col + o] = max(max(acc[o], zero) + res[o], zero)


@njit(cache=True, fastmath=FASTMATH)
def dense(x, w, bias, out, relu):
    """``out = bias + relu(x[:, 0]) @ w`` for every stream: ``x`` (B, 1, n), ``w`` (n, m), so
    each input adds a contiguous row of weights to every output; ``relu`` (n) scratch."""
    for s in range(out.shape[0]):
        for j in range(relu.shape[0]):
            relu[j] = max(x[s, 0, j], np.float32(0.0))
        row_out = out[s]
        for o in range(row_out.shape[0]):
            row_out[o] = bias[o]
        for j in range(relu.shape[0]):
            h = relu[j]
            row = w[j]
            for o in range(row_out.shape[0]):
                row_out[o] += row[o] * h


#: A program as the kernels see it: the plan tables, the shared ring positions and windows,
#: each float ring's frames and its layer's weights (``views``, (R, 6, 4): ``VIEW_*``; a
#: WaveNet layer's 1x1s or a TCN block's residual projection as its 1x1s), the index ring,
#: the input table (through a ReLU: ``embed_relu``) and the head; each ring's kind of layer
#: (``specs``, one row per ring: ``LAYER_GATED`` ...), a WaveNet's skip sum and its head's
#: first 1x1 (``hid_w`` with no columns where the head has one layer). Every field's type is
#: the same for every model, so the kernels compile once.
Compiled = namedtuple("Compiled", [
    "ops", "starts", "pos", "wins", "views", "index", "index_ring",
    "table", "table_bias", "embed_relu", "head_w", "head_b", "head_in", "acc",
    "specs", "skip", "hid_w", "hid_b", "hidden", "work",
])


@njit(cache=True, inline="always")
def _dst(views, pos, wins, head_in, r):
    """The array and frame index that ring ``r``'s next frame goes to (-1: the head input)."""
    if r < 0:
        return head_in, 0
    ring = frames(views, r)
    return ring, ring_slot(ring, pos, r, wins[r])


#: Compile the step interpreter, and what it calls, without the runtime's reference counts
#: (numba's ``_nrt`` option, which callees inherit): every array comes from the caller and
#: nothing is allocated, while the atomic increments and decrements on each array taken from
#: the plan took 90% of a step of the default's shape at width 1 (15.3 of 16.5 us, when the
#: plan held its arrays in tuples).
#: A numba without the option compiles with them.
NO_REFCOUNTS = {"_nrt": False} if hasattr(CPUTargetOptions, "_nrt") else {}


@njit(cache=True, **NO_REFCOUNTS)
def run_step(x, phase, prog, logits):
    """One step for every stream: classes ``x`` (B,) in, ``logits`` (B, classes) out, by
    interpreting the plan of clock ``phase``. Allocates nothing (``NO_REFCOUNTS``)."""
    (ops, starts, pos, wins, views, index, index_ring, table, table_bias, embed_relu, head_w,
     head_b, head_in, acc, specs, skip, hid_w, hid_b, hidden, work) = prog
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
            dst, q = _dst(views, pos, wins, head_in, b)
            kind = specs[a, 0]
            ring, bias = frames(views, a), vector(views, a, VIEW_BIAS)
            if kind == LAYER_WAVENET:
                wavenet_layer(ring, pos[a], specs[a], matrix(views, a, VIEW_WEIGHT), bias,
                              matrix(views, a, VIEW_PROJ), vector(views, a, VIEW_PROJ_BIAS),
                              skip, dst, q, c, acc, work)
            elif kind == LAYER_TCN:
                src = specs[a, 3]
                tcn_layer(ring, pos[a], specs[a], matrix(views, a, VIEW_WEIGHT), bias,
                          matrix(views, a, VIEW_PROJ), vector(views, a, VIEW_PROJ_BIAS),
                          frames(views, src), pos[src], index, pos[index_ring], dst, q, c, acc,
                          work)
            elif d == TAPS_ODD:
                gated(ring, pos[a], wins[a] - 1, matrix(views, a, VIEW_ODD), bias, e, dst, q, c,
                      acc)
            else:
                gated(ring, pos[a], wins[a], matrix(views, a, VIEW_WEIGHT), bias, e, dst, q, c,
                      acc)
        elif code == OP_COPY:
            src = frames(views, a)
            p = pos[a]
            dst, q = _dst(views, pos, wins, head_in, b)
            for s in range(batch):
                for j in range(e):
                    dst[s, q, d + j] = src[s, p, c + j]
        elif code == OP_EMBED:
            # one-hot convolution as table lookups (index `classes` is the zero vector)
            dst, q = _dst(views, pos, wins, head_in, b)
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
                if embed_relu:
                    for o in range(e):
                        dst[s, q, c + o] = max(dst[s, q, c + o], np.float32(0.0))
        elif code == OP_HEAD and hid_w.shape[1] == 0:  # relu, 1x1 (a TCN's reads a relu's output)
            dense(head_in, head_w, head_b, logits, acc[: head_w.shape[0]])
        elif code == OP_HEAD:  # a WaveNet's: relu, 1x1, relu, 1x1
            dense(head_in, hid_w, hid_b, hidden[:, 0], acc[: hid_w.shape[0]])
            dense(hidden, head_w, head_b, logits, acc[: head_w.shape[0]])


@njit(cache=True, nogil=True)
def feed(xs, out, write, t0, period, logits, prog):
    """Teacher-forced block: ``xs`` (B, N); each step's logits into ``out`` if ``write``."""
    x = np.empty(xs.shape[0], xs.dtype)  # a step's classes, contiguous as ``generate``'s
    for i in range(xs.shape[1]):
        x[:] = xs[:, i]
        run_step(x, (t0 + i) % period, prog, logits)
        if write:
            out[:, i, :] = logits


@njit(cache=True, nogil=True)
def generate(n, out, out_at, t0, period, logits, prog, noise, noise_at, temperature, top_k,
             top_p, greedy, work, bits, at, x):
    """Free-running block of ``n`` steps, samples into ``out[:, out_at:]``, consuming
    ``noise[noise_at:]`` (one row per step; greedy steps read none, so a greedy block may be
    longer than the noise block)."""
    for i in range(n):
        row = noise[0] if greedy else noise[noise_at + i]
        sample_into(logits, row, temperature, top_k, top_p, greedy, work, bits, at, x)
        out[:, out_at + i] = x
        run_step(x, (t0 + i) % period, prog, logits)


#: The samplers' flags: scores may be -inf (outside the top k), which FASTMATH assumes away.
MAYBE_INFINITE = {"nsz", "arcp", "contract", "reassoc"}


@njit(cache=True, fastmath=MAYBE_INFINITE)
def exp_below(x, m, out, bits):
    """``out = exp(x - m)`` for ``x <= m`` (Cephes' ``expf``: ``2^n exp(r)``, within 2e-7
    relative; ``exp(-87)`` below ``m - 87``) in loops that vectorize, unlike libm's; returns
    the sum. ``bits`` (int32, as long as ``x``) builds the powers of two."""
    twos = bits.view(np.float32)
    for i in range(x.shape[0]):
        y = max(x[i] - m, np.float32(-87.0))
        n = np.floor(y * np.float32(1.44269504088896341) + np.float32(0.5))
        r = y - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * r + np.float32(1.3981999507e-3)
        p = p * r + np.float32(8.3334519073e-3)
        p = p * r + np.float32(4.1665795894e-2)
        p = p * r + np.float32(1.6666665459e-1)
        p = p * r + np.float32(5.0000001201e-1)
        out[i] = p * r * r + r + np.float32(1.0)
        bits[i] = (np.int32(n) + np.int32(127)) << np.int32(23)
    total = np.float32(0.0)
    for i in range(x.shape[0]):
        out[i] *= twos[i]
        total += out[i]
    return total


@njit(cache=True, fastmath=MAYBE_INFINITE)
def apply_top_p(scores, top_p, work, bits, at):
    """Set to -inf every score outside the nucleus: the torch ``Sampler``'s rule, a class
    dropped when the classes ranked above it hold ``top_p`` of the mass.

    Only candidates are ranked: classes below ``(1 - top_p) / classes`` of the total mass hold
    less than ``1 - top_p`` together, so the nucleus lies among the rest (a few dozen from a
    trained model). Each candidate sums the mass of those above it (pairwise, in loops that
    vectorize: cheaper than sorting a few dozen; on nearly flat logits every class is one,
    and the 256^2 pairs take about 4 us). ``work`` (3, classes) and ``bits`` and ``at``
    (classes) are scratch.
    """
    classes = scores.shape[0]
    mass, cand, cand_mass = work[0], work[1], work[2]
    total = exp_below(scores, scores.max(), mass, bits)
    floor = NUCLEUS_BOUND * (np.float32(1.0) - top_p) * total / classes
    n = 0
    for i in range(classes):
        if mass[i] >= floor:
            cand[n] = scores[i]
            cand_mass[n] = mass[i]
            at[n] = i
            n += 1
    scores[:] = -np.inf
    target = top_p * total
    for j in range(n):
        v = cand[j]
        above = np.float32(0.0)
        for i in range(n):
            above += cand_mass[i] if cand[i] > v else np.float32(0.0)
        if above < target:
            scores[at[j]] = v


@njit(cache=True)
def sample_into(logits, noise, temperature, top_k, top_p, greedy, work, bits, at, out):
    """The torch ``Sampler``'s rule on one step's logits with its Gumbel noise (B, classes);
    ``work`` (4, classes) float32, ``bits`` int32 and ``at`` int64 (classes) are scratch."""
    batch, classes = logits.shape
    scores = work[0]
    for b in range(batch):
        if greedy:
            out[b] = np.argmax(logits[b])
            continue
        for i in range(classes):
            scores[i] = logits[b, i] / temperature
        if top_k > 0:
            ranked = work[1]
            ranked[:] = scores
            ranked.sort()
            kth = ranked[classes - top_k]
            for i in range(classes):
                if scores[i] < kth:
                    scores[i] = -np.inf
        if top_p < 1.0:
            apply_top_p(scores, top_p, work[1:], bits, at)
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
    (first use after an install), the first block compiles it: about 10 s on one core, once
    for every model. Reads numba's cache index path (internal API); if that cannot be read,
    says True."""
    try:
        index = generate._cache._cache_file._index_path
    except AttributeError:
        return True
    return os.path.isfile(index)

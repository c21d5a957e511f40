"""The sampler's Gumbel noise as a pure function of (seed, step, stream, class).

Each number is one word of Philox4x32-10 (Random123's counter-based generator, the one cuRAND
and Triton's ``tl.philox`` compute): key = the low and high 32 bits of ``seed + stream``
(modulo 2^64); counter = (class // 4, the step's low and high 32 bits, 0); word = class % 4.
Its top 23 bits give a uniform ``U = (w >> 9 + 1/2) / 2^23``, strictly inside (0, 1), and the
noise is the Gumbel(0, 1) variate ``-log(-log U)``.

So any stretch of steps and streams is drawn by itself, on any thread or device, with the
same bits, and a sampler's whole state is its seed and its step. Stream ``b`` of a batch
seeded ``s`` draws what a single stream seeded ``s + b`` draws, whatever the chunks of steps:
any stream of a batch can be made again alone. On the CPU numba draws the uniforms (about
0.3 ns a number, seven times torch's serial Mersenne twister) and numpy takes the logs;
``uniforms_reference`` is the same in plain numpy (the fallback without numba, and the tests'
reference).
"""

from __future__ import annotations

import numpy as np

from streamgen.engine.fast import numba_available

#: Philox4x32's round multipliers and key increments (Salmon et al., SC 2011).
ROUND_A, ROUND_B = 0xD2511F53, 0xCD9E8D57
KEY_A, KEY_B = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
#: Uniforms take a word's top ``UNIFORM_BITS`` bits, centred in their interval.
UNIFORM_BITS = 23
_SHIFT = 32 - UNIFORM_BITS
_SCALE = 2.0 ** -UNIFORM_BITS
_MASK = 0xFFFFFFFF


def philox_reference(c0: np.ndarray, c1: np.ndarray, c2: np.ndarray, c3: np.ndarray,
                     k0: np.ndarray, k1: np.ndarray) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of uint32 counter words under key words ``(k0, k1)`` (arrays or ints
    that broadcast), in plain numpy: the four output words."""
    c0, c1, c2, c3, k0, k1 = (np.asarray(v, dtype=np.uint64) for v in (c0, c1, c2, c3, k0, k1))
    mask = np.uint64(_MASK)
    for _ in range(ROUNDS):
        p0, p1 = c0 * np.uint64(ROUND_A), c2 * np.uint64(ROUND_B)
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ k0, p1 & mask,
                          (p0 >> np.uint64(32)) ^ c3 ^ k1, p0 & mask)
        k0, k1 = (k0 + np.uint64(KEY_A)) & mask, (k1 + np.uint64(KEY_B)) & mask
    return tuple(c.astype(np.uint32) for c in (c0, c1, c2, c3))


def uniforms_reference(seed: int, step: int, stream: int, shape: tuple[int, int, int]
                       ) -> np.ndarray:
    """The uniforms of steps ``step...`` and streams ``stream...``: float32 of ``shape``
    (steps, streams, classes), in plain numpy."""
    steps, streams, classes = shape
    s = np.arange(step, step + steps, dtype=np.uint64)[:, None, None]
    keys = np.array([(seed + stream + b) % (1 << 64) for b in range(streams)],
                    dtype=np.uint64)[None, :, None]
    c = np.arange(classes, dtype=np.uint64)[None, None, :]
    words = philox_reference(c // np.uint64(4), s & np.uint64(_MASK), s >> np.uint64(32), 0,
                             keys & np.uint64(_MASK), keys >> np.uint64(32))
    word = np.choose((c % np.uint64(4)).astype(np.intp), words)
    return ((word >> np.uint32(_SHIFT)).astype(np.float32) + np.float32(0.5)) * np.float32(_SCALE)


if numba_available():
    from numba import njit

    _A, _B = np.uint64(ROUND_A), np.uint64(ROUND_B)
    _KA, _KB = np.uint32(KEY_A), np.uint32(KEY_B)
    _LOW, _S32 = np.uint64(_MASK), np.uint64(32)

    @njit(inline="always")
    def _philox(c0, c1, c2, c3, k0, k1):
        for _ in range(ROUNDS):
            p0, p1 = np.uint64(c0) * _A, np.uint64(c2) * _B
            c0, c1, c2, c3 = (np.uint32(np.uint32(p1 >> _S32) ^ c1 ^ k0), np.uint32(p1 & _LOW),
                              np.uint32(np.uint32(p0 >> _S32) ^ c3 ^ k1), np.uint32(p0 & _LOW))
            k0, k1 = np.uint32(k0 + _KA), np.uint32(k1 + _KB)
        return c0, c1, c2, c3

    @njit(inline="always")
    def _uniform(word):
        return (np.float32(word >> np.uint32(_SHIFT)) + np.float32(0.5)) * np.float32(_SCALE)

    @njit(cache=True, nogil=True)
    def _fill_uniforms(seed, step, stream, out):
        """``uniforms_reference`` into ``out`` (steps, streams, classes) float32; ``seed`` in
        0..2^64-1."""
        steps, streams, classes = out.shape
        quads, zero = classes // 4, np.uint32(0)
        for i in range(steps):
            s = np.uint64(step + i)
            c1, c2 = np.uint32(s & _LOW), np.uint32(s >> _S32)
            for b in range(streams):
                key = np.uint64(seed) + np.uint64(stream + b)  # modulo 2^64
                k0, k1 = np.uint32(key & _LOW), np.uint32(key >> _S32)
                row = out[i, b]
                for q in range(quads):
                    w0, w1, w2, w3 = _philox(np.uint32(q), c1, c2, zero, k0, k1)
                    row[4 * q] = _uniform(w0)
                    row[4 * q + 1] = _uniform(w1)
                    row[4 * q + 2] = _uniform(w2)
                    row[4 * q + 3] = _uniform(w3)
                left = classes - 4 * quads
                if left:  # the last, partial quad
                    w0, w1, w2, _ = _philox(np.uint32(quads), c1, c2, zero, k0, k1)
                    row[4 * quads] = _uniform(w0)
                    if left > 1:
                        row[4 * quads + 1] = _uniform(w1)
                    if left > 2:
                        row[4 * quads + 2] = _uniform(w2)
else:
    _fill_uniforms = None


def gumbel_into(seed: int, step: int, stream: int, out: np.ndarray) -> np.ndarray:
    """Fill ``out`` (steps, streams, classes), a C-contiguous float32 array, with the noise of
    steps ``step...`` and streams ``stream...``; returns ``out``. Releases the GIL throughout
    (numba's fill, numpy's logs), so threads draw their own streams side by side."""
    if _fill_uniforms is None:
        out[...] = uniforms_reference(seed, step, stream, out.shape)
    else:
        _fill_uniforms(np.uint64(seed % (1 << 64)), step, stream, out)
    np.log(out, out=out)
    np.log(np.negative(out, out=out), out=out)
    return np.negative(out, out=out)

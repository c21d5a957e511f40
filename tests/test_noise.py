"""The sampler's noise: Philox4x32-10 against Random123's known answers, numba's draw against
numpy's, its distribution, and what addressable noise promises the engine (a stream's samples
do not depend on its batch, its chunks, its thread or its backend)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from streamgen.engine import StreamingEngine, noise
from streamgen.engine.fast import groups, numba_available
from streamgen.engine.sampling import NOISE_BLOCK, Sampler
from streamgen.sampling import SamplingConfig
from test_engine import CLASSES, model_of_kind

needs_numba = pytest.mark.skipif(not numba_available(), reason="numba is not installed")

#: Random123's known-answer tests for Philox4x32-10 (kat_vectors): counter, key, output.
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter, key, want", KNOWN_ANSWERS)
def test_philox_gives_random123s_known_answers(counter, key, want) -> None:
    assert tuple(int(w) for w in noise.philox_reference(*counter, *key)) == want


def test_uniforms_follow_the_stated_layout() -> None:
    """Class c of step s and stream b is word c % 4 of Philox at counter (c // 4, s's low and
    high words, 0) under the words of seed + b (modulo 2^64), its top 23 bits centred:
    computed here by hand, for a seed that wraps."""
    seed, step = 2**64 - 2, (7 << 32) + 11
    got = noise.uniforms_reference(seed, step, 1, (1, 3, 6))[0]
    for b, (k0, k1) in enumerate([(0xFFFFFFFF, 0xFFFFFFFF), (0, 0), (1, 0)]):
        for c in range(6):
            word = noise.philox_reference(c // 4, 11, 7, 0, k0, k1)[c % 4]
            assert got[b, c] == np.float32((int(word) >> 9) + 0.5) * np.float32(2.0**-23)


@needs_numba
@pytest.mark.parametrize("shape", [(3, 2, 256), (5, 3, 7), (1, 1, 1), (2, 4, 10), (4, 1, 3)])
def test_numba_draws_the_reference_uniforms(shape) -> None:
    """Bit for bit, at random seeds (negative, past 32 bits), steps (across 2^32) and streams;
    inside (0, 1)."""
    rnd = random.Random(str(shape))
    for seed, step in [(rnd.randrange(-2**40, 2**64), rnd.randrange(2**40)), (7, 2**32 - 2)]:
        stream = rnd.randrange(100)
        want = noise.uniforms_reference(seed, step, stream, shape)
        got = np.empty(shape, np.float32)
        noise._fill_uniforms(np.uint64(seed % 2**64), step, stream, got)
        assert np.array_equal(got, want)
        assert 0 < want.min() and want.max() < 1


def test_noise_is_gumbel_of_the_uniforms_and_so_distributed(monkeypatch) -> None:
    """-log(-log U) within float32 rounding of the float64 value, on both draws (numba's and
    numpy's fallback); a million numbers with Gumbel(0, 1)'s mean, spread and quantiles, and no
    correlation between neighbouring classes, steps or streams."""
    seed = random.randrange(2**63)
    shape = (8, 3, 37)
    u = noise.uniforms_reference(seed, 5, 2, shape).astype(np.float64)
    want = -np.log(-np.log(u))
    draws = [noise.gumbel_into(seed, 5, 2, np.empty(shape, np.float32))]
    monkeypatch.setattr(noise, "_fill_uniforms", None)  # numba missing
    draws.append(noise.gumbel_into(seed, 5, 2, np.empty(shape, np.float32)))
    eps = np.finfo(np.float32).eps
    for got in draws:
        assert (np.abs(got - want) <= 4 * eps * np.maximum(np.abs(want), 1)).all()
    monkeypatch.undo()
    g = noise.gumbel_into(seed, 0, 0, np.empty((1024, 4, 256), np.float32)).astype(np.float64)
    # every bound at least six standard errors of its estimate over these n numbers
    n = g.size
    assert abs(g.mean() - np.euler_gamma) < 0.01 and abs(g.std() - np.pi / 6**0.5) < 0.01
    for q in (0.01, 0.5, 0.99):  # Gumbel's quantiles x = -log(-log q), density exp(-x - e^-x)
        x = -np.log(-np.log(q))
        error = (q * (1 - q) / n) ** 0.5 / np.exp(-x - np.exp(-x))
        assert abs(np.quantile(g, q) - x) < 6 * error
    for a, b in [(g[:, :, :-1], g[:, :, 1:]), (g[:-1], g[1:]), (g[:, :-1], g[:, 1:])]:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.01


def _taken(sampler: Sampler, n: int) -> np.ndarray:
    """The next ``n`` steps of the sampler's noise, taken as ``sample`` takes them."""
    rows = []
    while n:
        noise, start, count = sampler.take(n)
        rows.append(noise[start : start + count].numpy().copy())
        n -= count
    return np.concatenate(rows)


def test_sampler_noise_is_the_function_of_step_and_stream() -> None:
    """Whatever the chunks it is taken in, a sampler's noise is the addressed noise of its
    steps and streams; a saved state is its seed and step, and continues in another sampler."""
    seed = random.randrange(2**31)
    sampler = Sampler(SamplingConfig(), 3, 5, seed=seed)
    taken = []
    for n in (1, NOISE_BLOCK - 1, 3, NOISE_BLOCK, 2 * NOISE_BLOCK + 5):
        taken.append(_taken(sampler, n))
    total = sum(len(t) for t in taken)
    want = noise.gumbel_into(seed, 0, 0, np.empty((total + 600, 3, 5), np.float32))
    assert np.array_equal(np.concatenate(taken), want[:total])
    assert sampler.state_dict() == {"seed": seed, "step": total}
    later = Sampler(SamplingConfig(), 3, 5, seed=seed + 1)
    later.load_state_dict(sampler.state_dict())
    assert np.array_equal(_taken(later, 600), want[total:])
    claimed = Sampler(SamplingConfig(), 3, 5, seed=seed)
    assert (claimed.claim(10), claimed.claim(4), claimed.state_dict()["step"]) == (0, 10, 14)
    greedy = Sampler(SamplingConfig(greedy=True), 3, 5, seed=seed)
    assert (greedy.claim(10), greedy.claim(4)) == (0, 0)  # greedy draws none


BACKENDS = ["torch"] + (["numba"] if numba_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", ["sequnet", "wavenet"])
def test_a_streams_samples_do_not_depend_on_its_batch(backend: str, kind: str, rng,
                                                      monkeypatch) -> None:
    """From the same history, stream b of a batch seeded s plays what one stream seeded
    s + b plays, and the first streams of a batch what a smaller batch plays; on numba with
    streams split over threads or not, and with runs of noise a few steps long."""
    monkeypatch.setattr(groups, "NOISE_NUMBERS", 3 * CLASSES * 5)  # 5 steps of 3 streams
    model = model_of_kind(kind, rng, (5, 3, 2, 6, 3))[0]
    history = torch.randint(0, CLASSES, (5, 40), generator=rng)
    sampling = SamplingConfig(temperature=1.1, top_p=0.9)
    options = [dict(threads=t) for t in (1, 3)] if backend == "numba" else [{}]

    def run(rows: slice, seed: int = 11, **opts) -> torch.Tensor:
        engine = StreamingEngine(model, rows.stop - rows.start, backend=backend, **opts)
        engine.feed(history[rows])
        sampler = engine.sampler(sampling, seed=seed)
        return torch.cat([engine.generate(k, sampler) for k in (1, 13, 300)], 1)

    whole = run(slice(0, 5), **options[0])
    for opts in options:
        assert torch.equal(run(slice(0, 5), **opts), whole)
    assert torch.equal(run(slice(0, 2)), whole[:2])
    assert torch.equal(run(slice(0, 1)), whole[:1])
    assert torch.equal(run(slice(3, 4), seed=11 + 3), whole[3:4])
    assert not torch.equal(whole[0], whole[1])

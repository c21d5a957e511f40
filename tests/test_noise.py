"""The sampler's noise: Philox4x32-10 against Random123's known answers, numba's draw against
numpy's, its distribution, and what addressable noise promises the engine (a stream's samples
do not depend on its batch, its chunks, its thread or its backend)."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
import textwrap
from pathlib import Path

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


DRAW = textwrap.dedent("""
    import sys
    if sys.argv[2] == "without":  # what a Python numba does not support yet sees: ImportError
        sys.modules["numba"] = None
    import numpy as np
    import torch
    from streamgen.engine import StreamingEngine, noise
    from streamgen.engine.fast import numba_available
    from streamgen.nn import SeqUNet, SeqUNetConfig
    from streamgen.sampling import SamplingConfig

    assert numba_available() == (noise._fill_uniforms is not None) == (sys.argv[2] == "with")
    out = np.empty((9, 3, 37), np.float32)
    noise.gumbel_into(2**64 - 3, 2**32 - 4, 1, out)
    torch.manual_seed(0)
    engine = StreamingEngine(SeqUNet(SeqUNetConfig(4, 3, 1, 3, classes=37)).eval(), 2)
    samples = engine.generate(70, engine.sampler(SamplingConfig(top_p=0.9), seed=5))
    np.savez(sys.argv[1], noise=out, samples=samples.numpy(), backend=engine.backend)
""")


@needs_numba
def test_without_numba_streamgen_draws_the_same_noise_and_samples(tmp_path: Path) -> None:
    """In a process that cannot import numba, streamgen imports, streams on torch and draws
    the noise (numpy's reference) and samples of a process with numba, bit for bit."""
    runs = {}
    for numba in ("with", "without"):
        saved = tmp_path / f"{numba}.npz"
        run = subprocess.run([sys.executable, "-c", DRAW, str(saved), numba],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        runs[numba] = np.load(saved)
    assert str(runs["with"]["backend"]) == "numba" and str(runs["without"]["backend"]) == "torch"
    for key in ("noise", "samples"):
        assert np.array_equal(runs["with"][key], runs["without"][key])


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


@pytest.mark.parametrize("classes", [1, 2, 3, 5, 6, 7, 9, 10])
def test_numba_fill_never_writes_past_its_output(classes: int, np_rng) -> None:
    """The last, partial quad of a row writes only its own classes: ``out`` is a view whose
    next elements are a sentinel (past the last row they would be another array's)."""
    if noise._fill_uniforms is None:
        pytest.skip("numba is not installed")
    steps, streams = int(np_rng.integers(1, 4)), int(np_rng.integers(1, 4))
    n = steps * streams * classes
    buf = np.full(n + 4, -7.0, np.float32)
    out = buf[:n].reshape(steps, streams, classes)
    seed, step = int(np_rng.integers(0, 2**63)), int(np_rng.integers(0, 2**40))
    stream = int(np_rng.integers(100))
    noise._fill_uniforms(np.uint64(seed), step, stream, out)
    assert np.array_equal(out, noise.uniforms_reference(seed, step, stream, out.shape))
    assert np.all(buf[n:] == -7.0), "wrote past the end of out"


def test_noise_wraps_negative_and_huge_seeds_as_the_reference_does(np_rng) -> None:
    """Any Python int is a seed, taken modulo 2**64 (what every Sampler passes on)."""
    shape = (2, 3, int(np_rng.integers(1, 20)))
    step, stream = int(np_rng.integers(0, 2**40)), int(np_rng.integers(0, 50))
    for seed in (-int(np_rng.integers(1, 2**62)), 2**63 + int(np_rng.integers(0, 2**62)),
                 2**64 + int(np_rng.integers(0, 2**62)), 2**64 - 1 - stream):
        got = noise.gumbel_into(seed, step, stream, np.empty(shape, np.float32))
        u = noise.uniforms_reference(seed, step, stream, shape).astype(np.float64)
        np.testing.assert_allclose(got, -np.log(-np.log(u)), rtol=1e-5, atol=1e-6)


def reference_choices(logits: np.ndarray, config: SamplingConfig, gumbel: np.ndarray,
                      margin: float = 1e-4) -> np.ndarray:
    """The sampling rule written out in float64 from its definition: scores are logits over
    the temperature; top-k keeps the k highest; the nucleus drops a class once the classes
    ranked above it hold top_p of the (top-k) mass; the sample is the argmax of the kept
    scores plus the Gumbel noise. -1 where a row lies within ``margin`` of a decision (a
    float32 rounding could go either way)."""
    if config.greedy:
        return logits.argmax(-1)
    scores = logits.astype(np.float64) / config.temperature
    keep = np.ones(scores.shape, bool)
    close = np.zeros(len(scores), bool)
    ranked = -np.sort(-scores, axis=-1)
    if config.top_k:
        keep &= scores >= ranked[:, config.top_k - 1 : config.top_k]
    if config.top_p < 1.0:
        kept = np.where(keep, scores, -np.inf)
        order = np.argsort(-kept, axis=-1, kind="stable")
        probs = np.exp(np.take_along_axis(kept, order, -1) - kept.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        above = np.cumsum(probs, -1) - probs
        close |= (np.abs(above - config.top_p) < margin).any(-1)
        np.put_along_axis(keep, order, np.take_along_axis(keep, order, -1) & (above < config.top_p), -1)
    total = np.where(keep, scores + gumbel, -np.inf)
    best = -np.sort(-total, axis=-1)
    close |= best[:, 0] - best[:, 1] < margin  # (-inf behind a single kept class)
    return np.where(close, -1, total.argmax(-1))


@pytest.mark.parametrize("config", [
    SamplingConfig(), SamplingConfig(temperature=0.6), SamplingConfig(temperature=1.4, top_k=1),
    SamplingConfig(top_k=3), SamplingConfig(top_k=9), SamplingConfig(top_p=0.5),
    SamplingConfig(temperature=0.8, top_p=0.9), SamplingConfig(top_k=4, top_p=0.7),
    SamplingConfig(greedy=True)], ids=lambda c: c.describe())
def test_torchs_sampler_follows_the_rule_written_out(config: SamplingConfig, np_rng) -> None:
    """torch's sampler (the rule every kernel is compared with) against ``reference_choices``
    over the noise the sampler's seed addresses: logits from nearly flat to peaked, 9 classes
    (top_k 9 keeps all), many steps and streams, where the rule changes some samples."""
    batch, classes, steps = 16, 9, 40
    seed = int(np_rng.integers(1 << 40))
    sampler = Sampler(config, batch, classes, seed=seed, fused=False)
    gumbel = noise.gumbel_into(seed, 0, 0, np.empty((steps, batch, classes), np.float32))
    plain = SamplingConfig(temperature=config.temperature)
    spread = np.logspace(-1, 0.7, batch)[:, None]  # a scale per stream
    out, decided, changed = torch.empty(batch, dtype=torch.int64), 0, 0
    for step in range(steps):
        logits = (np_rng.standard_normal((batch, classes)) * spread).astype(np.float32)
        sampler.sample(torch.from_numpy(logits), out)
        want = reference_choices(logits, config, gumbel[step])
        sure = want >= 0
        assert np.array_equal(out.numpy()[sure], want[sure]), (step, out, want)
        decided += int(sure.sum())
        changed += int((want != reference_choices(logits, plain, gumbel[step])).sum())
    assert decided >= 0.95 * steps * batch
    rule = config.greedy or config.top_p < 1 or 0 < config.top_k < classes
    assert (changed > 0) == rule, changed  # the filters were exercised
    assert sampler.step == (0 if config.greedy else steps)


def test_sampler_refuses_top_k_beyond_the_classes_when_made(np_rng) -> None:
    """At construction, not at the first sample (where only torch's path would notice);
    top_k equal to the classes keeps them all."""
    classes = int(np_rng.integers(2, 300))
    with pytest.raises(ValueError, match="exceeds the"):
        Sampler(SamplingConfig(top_k=classes + int(np_rng.integers(1, 5))), 2, classes, fused=False)
    sampler = Sampler(SamplingConfig(top_k=classes), 2, classes, fused=False)
    out = torch.empty(2, dtype=torch.int64)
    sampler.sample(torch.randn(2, classes), out)
    assert 0 <= int(out.min()) and int(out.max()) < classes


def test_nucleus_boundary_is_inclusive_at_an_exact_mass(np_rng) -> None:
    """A class is dropped once the classes ranked above it hold top_p of the mass: with equal
    logits (probabilities exactly 1/classes) and top_p = keep/classes, exactly ``keep``
    classes are ever drawn."""
    classes = int(np_rng.choice([4, 8, 16]))
    keep = int(np_rng.integers(1, classes))
    sampler = Sampler(SamplingConfig(top_p=keep / classes), 1, classes,
                      seed=int(np_rng.integers(1 << 30)), fused=False)
    logits, out = torch.zeros(1, classes), torch.empty(1, dtype=torch.int64)
    seen = set()
    for _ in range(60 * classes):
        sampler.sample(logits, out)
        seen.add(int(out))
    assert len(seen) == keep, (keep, sorted(seen))


def test_sampler_runs_cover_exactly_n_steps_then_end(np_rng) -> None:
    """``runs(n)`` (the GPU kernels' noise) yields runs within one block each, in order, the
    noise of n single steps, and then stops."""
    seed, classes = int(np_rng.integers(1 << 40)), int(np_rng.integers(2, 40))
    a = Sampler(SamplingConfig(), 2, classes, seed=seed, fused=False)
    b = Sampler(SamplingConfig(), 2, classes, seed=seed, fused=False)
    a.step = b.step = int(np_rng.integers(0, 2 * NOISE_BLOCK))
    first, n = a.step, int(np_rng.integers(1, 3 * NOISE_BLOCK))
    runs, counts = a.runs(n), []
    for block, start, count in itertools.islice(runs, n + 5):  # checked as yielded: reused
        assert count > 0 and start + count <= NOISE_BLOCK
        for i in range(count):
            assert torch.equal(block[start + i], b._next_noise())
        counts.append(count)
    assert next(runs, None) is None, "runs() did not end"
    assert sum(counts) == n and a.step == first + n
    greedy = Sampler(SamplingConfig(greedy=True), 2, classes, seed=seed, fused=False)
    greedy.step = first  # reads no noise: one run of n, nothing drawn, its step unmoved
    assert [(start, count) for _, start, count in greedy.runs(n)] == [(0, n)]
    assert greedy.step == first and greedy._noise_at is None


def test_sampler_draws_one_noise_block_per_block_of_steps(monkeypatch, np_rng) -> None:
    """torch's path draws a block of ``NOISE_BLOCK`` steps and reads it row by row."""
    classes = int(np_rng.integers(2, 30))
    sampler = Sampler(SamplingConfig(), 1, classes, seed=int(np_rng.integers(1 << 30)),
                      fused=False)
    draws, draw = [], Sampler.draw
    monkeypatch.setattr(Sampler, "draw", lambda self, step, out, stream=0: (
        draws.append(step), draw(self, step, out, stream))[1])
    out = torch.empty(1, dtype=torch.int64)
    for _ in range(2 * NOISE_BLOCK + 1):
        sampler.sample(torch.randn(1, classes), out)
    assert draws == [0, NOISE_BLOCK, 2 * NOISE_BLOCK]


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

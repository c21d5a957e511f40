"""Streaming correctness: the engine equals one offline forward pass at every step."""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import randomize_, triton_interpreter_refusal
from engine_reference import reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.engine import NUMBA_MAX_BATCH, numba_available
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig

CLASSES = 32
TOL = 1e-4

# (kernel, levels, depth, channels, batch): every kernel, level count 1..6, depth 1..3,
# several widths and batch sizes 1..4
SEQUNET_GRID = [
    (3, 2, 1, 4, 1),
    (5, 2, 3, 8, 2),
    (3, 3, 2, 6, 3),
    (5, 3, 1, 12, 4),
    (3, 4, 3, 5, 2),
    (5, 4, 2, 8, 1),
    (3, 5, 1, 8, 2),
    (5, 5, 2, 4, 3),
    (3, 6, 2, 6, 1),
    (5, 6, 1, 10, 2),
    (5, 1, 2, 6, 2),
    # widths equal to the class count, kernels 7 and 9, up to 8 levels
    (7, 3, 2, CLASSES, 2),
    (9, 2, 1, 6, 1),
    (7, 7, 1, 4, 1),
    (9, 8, 1, 3, 1),
]


def chunked_feed(engine: StreamingEngine, x: torch.Tensor, chunks: str, seed: int) -> torch.Tensor:
    """Feed ``x`` in chunks of 1, 7, 64 or random sizes; collect every step's logits."""
    n = x.shape[1]
    out = torch.empty(x.shape[0], n, engine.classes, dtype=engine.dtype)
    rnd = random.Random(seed)
    i = 0
    while i < n:
        size = {"1": 1, "7": 7, "64": 64}.get(chunks) or rnd.randint(1, 40)
        view = out[:, i : i + size]
        assert engine.feed(x[:, i : i + size], view) is view
        i += size
    return out


def fresh_sequnet(cfg: tuple, gen: torch.Generator) -> tuple[SeqUNet, int]:
    k, levels, depth, channels, batch = cfg
    model = SeqUNet(SeqUNetConfig(channels, levels, depth, k, classes=CLASSES))
    randomize_(model, gen)
    return model.eval(), batch


BACKENDS = ["torch", "numba"] if numba_available() else ["torch"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("chunks", ["1", "7", "64", "random"])
@pytest.mark.parametrize("cfg", SEQUNET_GRID, ids=lambda c: "k{}L{}D{}C{}B{}".format(*c))
def test_sequnet_engine_equals_offline(cfg, chunks, backend, rng: torch.Generator) -> None:
    model, batch = fresh_sequnet(cfg, rng)
    n = 3 * model.period + 21  # several top periods, not a multiple of one
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend=backend)
    assert engine.backend == backend
    got = chunked_feed(engine, x, chunks, seed=int(x.sum()))
    want = reference_logits(model, x)
    assert (got.double() - want).abs().max().item() < TOL


def small_wavenet(gen: torch.Generator, kernel: int = 2, residual: int = 6) -> WaveNet:
    # 12 skip channels: with 7, about 1% of draws leave every head ReLU dead (constant output)
    model = WaveNet(WaveNetConfig(2, 4, kernel, residual, 5, 12, classes=CLASSES))
    randomize_(model, gen)
    return model.eval()


def small_tcn(gen: torch.Generator, kernel: int = 3, channels: int = 6) -> TCN:
    model = TCN(TCNConfig(channels=channels, levels=3, kernel_size=kernel, classes=CLASSES))
    randomize_(model, gen)
    return model.eval()


# (kind, kernel, width, batch): even and odd kernels; widths equal to the class count (the
# TCN's first block then has no 1x1 projection: its residual is the one-hot input itself)
BASELINE_GRID = [("wavenet", 2, 6, 1), ("wavenet", 3, 6, 3), ("wavenet", 4, CLASSES, 2),
                 ("tcn", 2, 6, 2), ("tcn", 3, 6, 4), ("tcn", 4, 6, 1), ("tcn", 2, CLASSES, 2),
                 ("tcn", 3, CLASSES, 1)]


# ... each on every CPU backend (numba runs both)
BASELINE_RUNS = [(*row, backend) for row in BASELINE_GRID for backend in BACKENDS]


@pytest.mark.parametrize("chunks", ["1", "7", "random"])
@pytest.mark.parametrize("kind,kernel,width,batch,backend", BASELINE_RUNS,
                         ids=lambda v: str(v))
def test_baselines_engine_equals_offline(kind, kernel, width, batch, backend, chunks,
                                         rng) -> None:
    if kind == "wavenet":
        model = small_wavenet(rng, kernel, residual=width)
    else:
        model = small_tcn(rng, kernel, channels=width)
    n = 2 * model.receptive_field + 5
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend=backend)
    assert engine.backend == backend
    got = chunked_feed(engine, x, chunks, seed=3)
    assert (got.double() - reference_logits(model, x)).abs().max().item() < TOL


# dtype -> bound on |engine - float64 pass| (logits of magnitude about 1; half precision
# rounds every layer's output)
DTYPE_BOUNDS = {torch.float64: 1e-12, torch.float16: 1e-2, torch.bfloat16: 5e-2}


@pytest.mark.parametrize("dtype", list(DTYPE_BOUNDS), ids=str)
@pytest.mark.parametrize("kind,cfg", [("sequnet", (3, 3, 2, 6, 2)), ("sequnet", (5, 2, 1, CLASSES, 1)),
                                      ("wavenet", None), ("tcn", None)])
def test_engine_in_other_dtypes_equals_offline(kind: str, cfg, dtype: torch.dtype, rng) -> None:
    """The torch backend in float64 (on a float64 model: the weights' own values) equals the
    float64 pass to rounding; in float16 and bfloat16 within their bounds."""
    model = (fresh_sequnet(cfg, rng)[0] if kind == "sequnet" else
             small_wavenet(rng, 3) if kind == "wavenet" else small_tcn(rng, 2))
    if dtype == torch.float64:
        model = model.double()
    batch, n = 2, 2 * model.receptive_field + 7
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, dtype=dtype)
    assert engine.backend == "torch" and engine.logits.dtype == dtype
    got = chunked_feed(engine, x, "random", seed=5)
    err = (got.double() - reference_logits(model, x)).abs().max().item()
    assert err < DTYPE_BOUNDS[dtype]


KINDS = ["sequnet", "wavenet", "tcn"] + (["sequnet-numba", "wavenet-numba", "tcn-numba"]
                                         if numba_available() else [])


def model_of_kind(kind: str, gen: torch.Generator, sequnet_cfg: tuple) -> tuple[torch.nn.Module, str]:
    """A fresh random model and the backend to stream it with."""
    backend = "numba" if kind.endswith("numba") else "torch"
    if kind.startswith("sequnet"):
        return fresh_sequnet(sequnet_cfg, gen)[0], backend
    return (small_wavenet(gen) if kind.startswith("wavenet") else small_tcn(gen)), backend


@pytest.mark.parametrize("kind", KINDS)
def test_reset_mid_stream(kind: str, rng: torch.Generator) -> None:
    """Resetting some streams mid-run equals zero vectors for their earlier inputs."""
    model, backend = model_of_kind(kind, rng, (5, 4, 2, 6, 3))
    batch, n = 3, 90
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend=backend)
    got = torch.empty(batch, n, CLASSES)
    engine.feed(x[:, :37], got[:, :37])
    before = engine.logits.clone()
    engine.reset([0, 2])  # mid-period for the Seq-U-Net
    assert torch.equal(engine.logits[1], before[1])  # the other stream's prediction stands
    assert not torch.equal(engine.logits[[0, 2]], before[[0, 2]])
    engine.feed(x[:, 37:61], got[:, 37:61])
    engine.reset(torch.tensor([1]))
    engine.feed(x[:, 61:], got[:, 61:])
    # before its reset a stream sees its real history; from the reset on, zero vectors before
    want = reference_logits(model, x)
    after = reference_logits(model, x, starts=[37, 61, 37])
    for b, start in enumerate([37, 61, 37]):
        want[b, start:] = after[b, start:]
    assert (got.double() - want).abs().max().item() < TOL
    assert (got[0, 37:].double() - reference_logits(model, x)[0, 37:]).abs().max() > 1e-3
    # a full reset restarts the clock
    engine.reset()
    assert engine.t == 0
    again = torch.empty(batch, 20, CLASSES)
    engine.feed(x[:, :20], again)
    assert (again.double() - reference_logits(model, x[:, :20])).abs().max().item() < TOL


@pytest.mark.parametrize("backend", BACKENDS)
def test_state_save_restore(backend: str, rng: torch.Generator) -> None:
    model, batch = fresh_sequnet((3, 4, 2, 6, 2), rng)
    x = torch.randint(0, CLASSES, (batch, 70), generator=rng)
    engine = StreamingEngine(model, batch, backend=backend)
    assert engine.feed(x[:, :29]) is None  # logits kept only where asked for
    saved = engine.state_dict()
    first = torch.empty(batch, 41, CLASSES)
    engine.feed(x[:, 29:], first)
    other = torch.randint(0, CLASSES, (batch, 13), generator=rng)
    engine.feed(other)  # move on, then go back
    engine.load_state_dict(saved)
    second = torch.empty(batch, 41, CLASSES)
    engine.feed(x[:, 29:], second)
    assert torch.equal(first, second)
    # restoring into a fresh engine works as well
    fresh = StreamingEngine(model, batch, backend=backend)
    fresh.load_state_dict(saved)
    third = torch.empty(batch, 41, CLASSES)
    fresh.feed(x[:, 29:], third)
    assert torch.equal(first, third)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("kind", ["sequnet", "wavenet", "tcn"])
@pytest.mark.parametrize("direction", ["torch->numba", "numba->torch"])
def test_state_moves_between_backends(direction: str, kind: str, rng: torch.Generator) -> None:
    """Both executors run the same plans over the same rings: a state saved by one continues
    in the other, and a state saved with its sampler continues the same free-running stream."""
    model, batch = model_of_kind(kind, rng, (5, 4, 2, 6, 2))[0], 2
    first, second = direction.split("->")
    sampling = SamplingConfig(temperature=1.2, top_p=0.95)
    prompt = torch.randint(0, CLASSES, (batch, 50), generator=rng)
    source = StreamingEngine(model, batch, backend=first)
    source.feed(prompt)
    sampler = source.sampler(sampling, seed=3)
    before = source.generate(37, sampler)  # the clock, the rings and the noise block mid-way
    saved = source.state_dict(sampler)
    continued = source.generate(300, sampler)
    target = StreamingEngine(model, batch, backend=second)
    other = target.sampler(sampling, seed=99)
    target.load_state_dict(saved, other)
    assert torch.equal(target.generate(300, other), continued)
    # teacher-forced after the move: the offline pass over everything the stream received
    target.load_state_dict(saved)
    x = torch.randint(0, CLASSES, (batch, 27), generator=rng)
    out = torch.empty(batch, 27, CLASSES)
    target.feed(x, out)
    want = reference_logits(model, torch.cat([prompt, before, x], 1))[:, -27:]
    assert (out.double() - want).abs().max().item() < TOL


def test_state_without_sampler_is_refused_for_a_sampler(rng: torch.Generator) -> None:
    model, _ = fresh_sequnet((3, 2, 1, 4, 1), rng)
    engine = StreamingEngine(model, 1)
    with pytest.raises(ValueError, match="holds no sampler"):
        engine.load_state_dict(engine.state_dict(), engine.sampler())
    wavenet = StreamingEngine(small_wavenet(rng), 1)
    with pytest.raises(ValueError, match="another network"):
        wavenet.load_state_dict(engine.state_dict())


@pytest.mark.parametrize("kind", ["sequnet", "wavenet", "tcn"])
def test_batch_streams_are_independent(kind: str, rng: torch.Generator) -> None:
    if kind == "sequnet":
        model, _ = fresh_sequnet((5, 3, 1, 8, 1), rng)
    else:
        model = small_wavenet(rng) if kind == "wavenet" else small_tcn(rng)
    x = torch.randint(0, CLASSES, (4, 50), generator=rng)
    batched = torch.empty(4, 50, CLASSES)
    StreamingEngine(model, 4).feed(x, batched)
    for b in range(4):
        single = torch.empty(1, 50, CLASSES)
        StreamingEngine(model, 1).feed(x[b : b + 1], single)
        assert (single[0] - batched[b]).abs().max().item() < 1e-5
    # changing one stream's input changes that stream only
    y = x.clone()
    y[2, 10:] = (y[2, 10:] + 1) % CLASSES
    other = torch.empty(4, 50, CLASSES)
    StreamingEngine(model, 4).feed(y, other)
    assert torch.equal(other[[0, 1, 3]], batched[[0, 1, 3]])
    assert not torch.allclose(other[2, 10:], batched[2, 10:])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n_prompt", [0, 1, 5, 40, 200])
@pytest.mark.parametrize("cfg", [(5, 4, 2, 6, 2), (5, 4, 1, 1, 1)], ids=["C6", "C1"])
def test_prime_equals_feed(cfg: tuple, n_prompt: int, backend: str, rng: torch.Generator) -> None:
    """Priming in one offline pass (any length, shorter than the receptive field too, none at
    all) restarts every stream whatever it had been fed; width 1 too, where the decoder's
    conditioning input is a single channel."""
    model, batch = fresh_sequnet(cfg, rng)
    assert model.receptive_field > 40
    x = torch.randint(0, CLASSES, (batch, n_prompt + 30), generator=rng)
    stepped = StreamingEngine(model, batch, backend="torch")
    stepped.feed(x[:, :n_prompt])
    primed = StreamingEngine(model, batch, backend=backend)
    primed.feed(torch.randint(0, CLASSES, (batch, 23), generator=rng))  # forgotten by prime
    assert primed.prime(x[:, :n_prompt]) is primed.logits  # what predicts the next sample
    assert primed.t == stepped.t == n_prompt
    assert (primed.logits - stepped.logits).abs().max().item() < TOL
    want = reference_logits(model, x)
    if n_prompt:
        assert (primed.logits.double() - want[:, n_prompt - 1]).abs().max().item() < TOL
    a, b = torch.empty(batch, 30, CLASSES), torch.empty(batch, 30, CLASSES)
    stepped.feed(x[:, n_prompt:], a)
    primed.feed(x[:, n_prompt:], b)
    assert (a - b).abs().max().item() < TOL
    if n_prompt:
        assert (a.double() - want[:, n_prompt:]).abs().max().item() < TOL


def test_priming_a_model_left_in_training_mode_is_the_eval_result(rng: torch.Generator,
                                                                  np_rng) -> None:
    """An engine on a model straight from a training loop (dropout on) primes and steps as in
    eval mode (the offline capture switches dropout off), and leaves the model's mode as it was."""
    model = TCN(TCNConfig(channels=8, levels=3, kernel_size=3, dropout=0.5, classes=CLASSES))
    randomize_(model, rng)
    prompt = torch.randint(0, CLASSES, (2, int(np_rng.integers(5, 60))), generator=rng)
    x = torch.randint(0, CLASSES, (2, 5), generator=rng)
    engines = {}
    for training in (False, True):
        model.train(training)
        engines[training] = StreamingEngine(model, 2, backend="torch")
        engines[training].prime(prompt)
        assert model.training == training
    model.eval()
    assert torch.equal(engines[True].logits, engines[False].logits)
    for engine in engines.values():
        engine.feed(x)
    assert torch.equal(engines[True].logits, engines[False].logits)


def test_capture_refuses_times_outside_its_range(rng: torch.Generator, np_rng) -> None:
    """A capture answers for ``[t_first, t_end - period]`` only, and its logits for the span
    ``[t_first, t_last]`` (the float64 pass's): outside them it would hand out another time's."""
    from streamgen.engine.capture import Capture
    from streamgen.engine.program import build_program

    model, _ = fresh_sequnet((5, 3, 1, 3, 1), rng)
    program = build_program(model, 1)
    n, span = int(np_rng.integers(1, 40)), int(np_rng.integers(1, 5))
    history = torch.randint(0, CLASSES, (1, n), generator=rng)
    capture = Capture(program, history, n - 1, span)
    want = reference_logits(model, history)
    for t in range(max(n - span, 0), n):
        assert (capture.logits_at(t).double() - want[:, t]).abs().max().item() < TOL
    for t in (n - span - 1, n, n + 7):
        with pytest.raises(ValueError, match="outside the captured range"):
            capture.logits_at(t)
    for name in program.rings:
        for t in range(capture.t_first, capture.t_end - program.period + 1):
            assert capture.window(name, t).shape[1] == program.rings[name].window_size
        for t in (capture.t_first - 1, capture.t_end - program.period + 1, capture.t_end + 5):
            with pytest.raises(ValueError, match="outside the captured range"):
                capture.window(name, t)


SAMPLINGS = [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=5),
             SamplingConfig(top_p=0.8), SamplingConfig(temperature=1.3, top_k=9, top_p=0.9),
             SamplingConfig(greedy=True)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_free_running_is_reproducible(kind, sampling, rng) -> None:
    model, backend = model_of_kind(kind, rng, (3, 3, 1, 6, 1))
    runs = []
    for chunks in [(120,), (1,) * 17 + (103,), (50, 7, 63)]:
        engine = StreamingEngine(model, 2, backend=backend)
        sampler = engine.sampler(sampling, seed=1234)
        runs.append(torch.cat([engine.generate(c, sampler) for c in chunks], 1))
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert runs[0].shape == (2, 120)
    if not sampling.greedy:
        other = StreamingEngine(model, 2, backend=backend)
        assert not torch.equal(other.generate(120, other.sampler(sampling, seed=99)), runs[0])


@pytest.mark.parametrize("backend", ["numba", "triton"])
def test_greedy_draws_no_noise_on_any_backend(backend: str, rng: torch.Generator) -> None:
    """Greedy sampling reads no noise: a block longer than a noise block gives the torch
    backend's samples on the compiled backends, and leaves the sampler as torch leaves it."""
    from streamgen.engine.sampling import NOISE_BLOCK

    if backend == "numba" and not numba_available():
        pytest.skip("numba is not installed")
    if backend == "triton" and triton_interpreter_refusal():
        pytest.skip(triton_interpreter_refusal())
    model = SeqUNet(SeqUNetConfig(6, 2, 1, 3, classes=CLASSES))
    randomize_(model, rng)
    runs, states = {}, {}
    for b in ("torch", backend):
        engine = StreamingEngine(model.eval(), 2, backend=b, capacity="period")
        sampler = engine.sampler(SamplingConfig(greedy=True), seed=3)
        runs[b] = torch.cat([engine.generate(n, sampler) for n in (NOISE_BLOCK + 44, 5)], 1)
        states[b] = sampler.state_dict()
    assert torch.equal(runs["torch"], runs[backend])
    assert states[backend] == states["torch"] == {"seed": 3, "step": 0}  # none drawn


def test_generate_feeds_back_what_it_samples(rng: torch.Generator) -> None:
    """Free-running output replayed teacher-forced gives the same logits at every step."""
    model, _ = fresh_sequnet((5, 3, 2, 6, 1), rng)
    engine = StreamingEngine(model, 2)
    sampler = engine.sampler(SamplingConfig(temperature=1.5), seed=5)
    samples = engine.generate(80, sampler)
    assert samples[:, 0].eq(CLASSES // 2).all()  # a fresh stream starts from silence
    want = reference_logits(model, samples)
    replay = torch.empty(2, 80, CLASSES)
    StreamingEngine(model, 2).feed(samples, replay)
    assert (replay.double() - want).abs().max().item() < TOL
    assert len(torch.unique(samples)) > 5  # actually sampled, not stuck


@pytest.mark.parametrize("kind", ["sequnet", "wavenet", "tcn"])
def test_no_allocation_or_history_copy_per_step(kind: str, rng, monkeypatch) -> None:
    """Stepping never calls tensor factories, cat/stack/roll or clone, nor resizes an ``out=``
    buffer (torch warns when it does)."""
    model, _ = model_of_kind(kind, rng, (5, 4, 2, 6, 2))
    batch = 2
    engine = StreamingEngine(model, batch, backend="torch")
    x = torch.randint(0, CLASSES, (batch, 40), generator=rng)
    out = torch.empty(batch, 40, CLASSES)

    def forbidden(name):
        def fail(*args, **kwargs):
            raise AssertionError(f"{name} called inside the step loop")
        return fail

    for name in ["cat", "stack", "roll", "empty", "zeros", "ones", "full", "clone", "tensor",
                 "empty_like", "zeros_like"]:
        monkeypatch.setattr(torch, name, forbidden(name))
    monkeypatch.setattr(torch.Tensor, "clone", forbidden("Tensor.clone"))
    before = engine_buffers(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        engine.feed(x, out)
    monkeypatch.undo()
    # torch resizes an empty out= buffer without a warning: every buffer must keep its storage
    after = engine_buffers(engine)
    assert {path: after[path] for path in before} == before
    assert sum(path.endswith(".data") for path in before) == len(engine.program.rings)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


def engine_buffers(engine: StreamingEngine) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Every tensor the engine, its program and its executor hold (not the model's), by
    attribute path: its storage address and shape."""
    found: dict[str, tuple[int, tuple[int, ...]]] = {}
    seen: set[int] = set()

    def walk(obj: object, path: str) -> None:
        if isinstance(obj, torch.Tensor):
            found[path] = (obj.data_ptr(), tuple(obj.shape))
            return
        if isinstance(obj, torch.nn.Module) or id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, dict):
            items = list(obj.items())
        elif isinstance(obj, (list, tuple)):
            items = list(enumerate(obj))
        elif type(obj).__module__.startswith("streamgen.") and hasattr(obj, "__dict__"):
            items = list(vars(obj).items())
        else:
            return
        for key, value in items:
            walk(value, f"{path}.{key}")

    walk(engine, "engine")
    return found


def test_bad_inputs_are_rejected(rng: torch.Generator) -> None:
    model, _ = fresh_sequnet((3, 2, 1, 4, 1), rng)
    engine = StreamingEngine(model, 2)
    with pytest.raises(ValueError, match="classes must be in"):
        engine.feed(torch.full((2, 3), CLASSES))
    with pytest.raises(ValueError, match="expected"):
        engine.feed(torch.zeros(3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=0)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_wrong_arguments_are_refused_before_any_kernel_runs(backend: str, rng) -> None:
    """What a kernel would trust is checked first: an ``out`` of another shape, type or
    device (the numba kernels wrote past it: a segfault), audio instead of classes, counts
    and stream numbers out of range, a sampler for other streams; the engine is left as it
    was (the next good call gives the float64 pass's logits)."""
    if backend == "numba" and not numba_available():
        pytest.skip("numba is not installed")
    model, _ = fresh_sequnet((3, 2, 1, 4, 1), rng)
    engine = StreamingEngine(model, 2, backend=backend)
    x = torch.randint(0, CLASSES, (2, 40), generator=rng)
    for out in (torch.empty(2, 10, CLASSES), torch.empty(1, 40, CLASSES),
                torch.empty(2, 40, CLASSES, dtype=torch.float64), x,
                torch.empty(2, 40, CLASSES, device="meta")):
        with pytest.raises(ValueError, match=r"^out must be torch.float32 \(2, 40, 32\) on cpu"):
            engine.feed(x, out)
    for out in (torch.empty(1, 3, dtype=torch.int64), torch.empty(2, 9),
                torch.empty(2, 9, dtype=torch.int64, device="meta")):
        with pytest.raises(ValueError, match=r"^out must be torch.int64 \(2, 9\) on cpu"):
            engine.generate(9, engine.sampler(), out)
    with pytest.raises(ValueError, match=r"^out must be .* on cpu, got ndarray$"):
        engine.feed(x, np.empty((2, 40, CLASSES), np.float32))  # a tensor, not an array
    for audio in (torch.rand(2, 40) - 0.5, torch.ones(2, 40, dtype=torch.bool)):
        with pytest.raises(ValueError, match="expected integer classes .*mulaw_encode"):
            engine.feed(audio)
        with pytest.raises(ValueError, match="expected integer classes .*mulaw_encode"):
            engine.prime(audio)
    with pytest.raises(ValueError, match="classes must be in 0..31"):
        engine.prime(x + CLASSES)
    for n in (-5, 2.5, True):
        with pytest.raises(ValueError, match="n must be a whole number of samples >= 0"):
            engine.generate(n, engine.sampler())
    with pytest.raises(ValueError, match="sampler draws 3 streams of 32 classes"):
        engine.generate(5, StreamingEngine(model, 3, backend="torch").sampler())
    for streams in ([2], [-1]):
        with pytest.raises(ValueError, match=r"streams must be in 0..1"):
            engine.reset(streams)
    assert engine.t == 0
    got = torch.empty(2, 40, CLASSES)
    engine.feed(x.numpy().astype(np.uint8), got)  # any integer array of classes
    assert (got.double() - reference_logits(model, x)).abs().max().item() < TOL


@pytest.mark.parametrize("a, b, same", [
    ("cpu", "cpu", True), ("cuda", "cuda:1", True), ("cuda:0", "cuda", True),
    ("cuda:0", "cuda:0", True), ("cuda:0", "cuda:1", False), ("cpu", "meta", False),
    ("cuda:0", "cpu", False),
])
def test_same_device_reads_cuda_without_an_index_as_the_current_one(a: str, b: str,
                                                                    same: bool) -> None:
    """How ``out`` and a sampler are matched to the engine's device (no GPU needed)."""
    from streamgen.engine.engine import _same_device

    assert _same_device(torch.device(a), torch.device(b)) == same
    assert _same_device(torch.device(b), torch.device(a)) == same


def test_audio_generator_refuses_audio_it_would_misread(rng: torch.Generator) -> None:
    """Stereo frames (flattened they interleave: half speed), integer PCM (clipped to +-1) and
    NaNs are refused; a mono float prime equals priming the engine with its classes, and the
    generator's blocks are the engine's samples decoded, however they are cut."""
    from streamgen.audio.mulaw import mulaw_decode, mulaw_encode
    from streamgen.generation import AudioGenerator

    model = SeqUNet(SeqUNetConfig(4, 2, 1, 3))  # 256 classes: mu-law audio
    randomize_(model, rng)
    wave = (0.4 * np.sin(np.arange(300) * 0.2)).astype(np.float32)
    for prime, message in ((np.stack([wave, wave], 1), r"mono audio of shape \(N,\), got \(300, 2\)"),
                           ((wave * 32767).astype(np.int16), "float audio in \\[-1, 1\\], got int16"),
                           (np.full(5, np.nan, np.float32), "NaN or infinite")):
        with pytest.raises(ValueError, match=message):
            AudioGenerator(model, prime=prime)
    gen = AudioGenerator(model, batch=2, prime=wave / 8, seed=3)
    engine = StreamingEngine(model, 2)
    engine.prime(mulaw_encode(torch.from_numpy(wave / 8)).view(1, -1).expand(2, -1).contiguous())
    want = mulaw_decode(engine.generate(40, engine.sampler(seed=3)).numpy())
    assert np.array_equal(np.concatenate([gen(0), gen(13), gen(27)], axis=1), want)
    assert gen.generated == 40 and want.dtype == np.float32
    assert not np.array_equal(AudioGenerator(model, batch=2, seed=3)(40), want)  # the prime counts
    blocks = list(AudioGenerator(model, batch=2, prime=wave / 8, seed=3).blocks(40, block=13))
    assert [b.shape for b in blocks] == [(2, 13)] * 3 + [(2, 1)]
    assert np.array_equal(np.concatenate(blocks, axis=1), want)
    assert [b.shape for b in AudioGenerator(model).blocks(2, block=1)] == [(1, 1), (1, 1)]  # one stream
    with pytest.raises(ValueError, match="block must be at least 1"):
        next(gen.blocks(10, block=0))


def test_the_readmes_python_example_runs() -> None:
    """The README's "From Python" block, as written, on the shipped default model."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme[readme.index("From Python:\n\n```python\n"):].split("```")[1]
    scope: dict = {}
    exec(compile(block.removeprefix("python\n"), "README.md", "exec"), scope)
    assert scope["classes"].shape == (2, 16000) and scope["audio"].abs().max() <= 1
    assert torch.isfinite(scope["logits"]).all() and scope["state"]["t"] == 4000 + 16000 + 100


@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=2.5), "batch_size must be a whole number >= 1, got 2.5"),
    (dict(batch_size="2"), "batch_size must be a whole number >= 1, got '2'"),
    (dict(batch_size=0), "batch_size must be a whole number >= 1, got 0"),
    (dict(threads=0), "threads must be a whole number >= 1, got 0"),
    (dict(start="noise"), "unknown start 'noise'; choose one of ('zeros', 'silence')"),
    (dict(capacity="triple"), "unknown ring capacity 'triple'; choose one of"),
    (dict(dtype=torch.int64), "dtype must be a floating torch.dtype"),
    (dict(dtype="float16"), "dtype must be a floating torch.dtype"),
    (dict(device="mps"), "device 'mps' is not supported"),
    (dict(device="tpu"), "unknown device 'tpu'"),
])
def test_wrong_engine_settings_are_one_line_errors(kwargs: dict, message: str, rng) -> None:
    model, _ = fresh_sequnet((3, 2, 1, 4, 1), rng)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        StreamingEngine(model, **kwargs)


@pytest.mark.parametrize("kind", ["sequnet", "wavenet"])
def test_recompute_baseline_equals_engine(kind: str, rng: torch.Generator) -> None:
    from streamgen.engine.recompute import RecomputeEngine

    if kind == "sequnet":
        model, _ = fresh_sequnet((5, 3, 2, 6, 2), rng)
    else:
        model = small_wavenet(rng)
    x = torch.randint(0, CLASSES, (2, 45), generator=rng)
    got = torch.empty(2, 45, CLASSES)
    RecomputeEngine(model, 2).feed(x, got)
    assert (got.double() - reference_logits(model, x)).abs().max().item() < TOL


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("kind", ["sequnet", "wavenet", "tcn"])
@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_numba_generates_the_same_samples_as_torch(sampling, kind, rng) -> None:
    """Same seed, same samples: both backends consume the sampler's noise identically."""
    model = model_of_kind(kind, rng, (5, 4, 2, 8, 1))[0]
    runs = []
    for backend in ["torch", "numba"]:
        engine = StreamingEngine(model, 3, backend=backend)
        engine.prime(torch.randint(0, CLASSES, (3, 50), generator=torch.Generator().manual_seed(1)))
        sampler = engine.sampler(sampling, seed=42)
        runs.append(torch.cat([engine.generate(n, sampler) for n in (1, 255, 300)], 1))
    assert torch.equal(runs[0], runs[1])


def _grouped_run(model: torch.nn.Module, x: torch.Tensor, groups: int) -> tuple:
    """Teacher-forced logits (a reset of stream 1 mid-way), sampled and greedy samples, the
    samples after a saved state and again after restoring it, and the final state of a numba
    engine whose streams run as ``groups`` groups on threads."""
    batch, n = x.shape
    engine = StreamingEngine(model, batch, backend="numba", threads=groups)
    assert len(engine.executor.groups) == groups
    logits = torch.empty(batch, n, CLASSES)
    engine.feed(x[:, :61], logits[:, :61])
    engine.reset([1])
    engine.feed(x[:, 61:], logits[:, 61:])
    sampler = engine.sampler(SamplingConfig(temperature=1.1, top_p=0.9), seed=5)
    samples = torch.cat([engine.generate(k, sampler) for k in (1, 37, 700)], 1)
    greedy = engine.generate(50, engine.sampler(SamplingConfig(greedy=True)))
    saved = engine.state_dict(sampler)
    after = engine.generate(300, sampler)
    engine.load_state_dict(saved, sampler)  # the positions move back
    again = engine.generate(300, sampler)
    return logits, samples, greedy, after, again, engine.state_dict(sampler)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("kind", ["sequnet", "wavenet", "tcn"])
@pytest.mark.parametrize("groups", [2, 3, 5])
def test_numba_stream_groups_give_the_same_numbers(kind: str, groups: int, rng) -> None:
    """Streams split into groups on threads: the same logits, samples and state as one
    group, bit for bit (ring positions move alike in every group)."""
    model = model_of_kind(kind, rng, (5, 3, 2, 6, 5))[0]
    x = torch.randint(0, CLASSES, (5, 150), generator=rng)
    (*single, state), (*grouped, grouped_state) = (_grouped_run(model, x, 1),
                                                   _grouped_run(model, x, groups))
    assert all(torch.equal(a, b) for a, b in zip(single, grouped))
    assert torch.equal(grouped[3], grouped[4])  # restored, the same stream again
    logits = single[0]
    assert state["t"] == grouped_state["t"]
    for name, (data, pos) in state["rings"].items():
        assert torch.equal(data, grouped_state["rings"][name][0])
        assert pos == grouped_state["rings"][name][1]
    want = reference_logits(model, x)
    want[1, 61:] = reference_logits(model, x, starts=[0, 61, 0, 0, 0])[1, 61:]
    assert (logits.double() - want).abs().max().item() < TOL


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_numba_kernels_compile_once_for_every_model(rng: torch.Generator) -> None:
    """Every model, whatever its count of rings, kind of layer or batch, runs the same one
    compilation of each kernel (a new model compiles nothing)."""
    from streamgen.engine.fast import kernels

    models = [fresh_sequnet((3, 2, 1, 4, 1), rng)[0], fresh_sequnet((5, 5, 2, 8, 1), rng)[0],
              small_wavenet(rng), small_tcn(rng)]
    for model, batch in zip(models, (1, 3, 4, 2)):
        engine = StreamingEngine(model, batch, backend="numba", threads=2)
        engine.feed(torch.randint(0, CLASSES, (batch, 5), generator=rng))
        engine.generate(300, engine.sampler(SamplingConfig(), seed=1))
        out = torch.empty(batch, 20, 9, CLASSES).select(2, 4)  # a caller's strided buffers
        engine.feed(torch.randint(0, CLASSES, (batch, 20), generator=rng), out)
        sampler = engine.sampler(SamplingConfig(), seed=2)
        saved = engine.state_dict(sampler)
        strided = engine.generate(7, sampler, torch.empty(batch, 7, 2, dtype=torch.int64)[..., 0])
        engine.load_state_dict(saved, sampler)
        assert torch.equal(strided, engine.generate(7, sampler))
    assert len(kernels.feed.signatures) == len(kernels.generate.signatures) == 1
    with pytest.raises(ValueError, match="C-contiguous float32"):
        kernels.view_entry(np.zeros((4, 3), dtype=np.float32)[:, 1:])


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("kind", ["sequnet", "wavenet"])
def test_numba_draws_noise_on_a_spare_thread(kind: str, rng) -> None:
    """One stream on two threads: the stream runs on one while the other draws the next run's
    noise; the same samples, and states, as on one thread, and every run's noise drawn once
    (the run finds what was drawn ahead)."""
    model = model_of_kind(kind, rng, (5, 3, 2, 6, 1))[0]
    runs, draws = [], []
    for threads in (1, 2):
        engine = StreamingEngine(model, 1, backend="numba", threads=threads)
        assert engine.executor.groups.spare == (threads == 2)
        sampler = engine.sampler(SamplingConfig(temperature=1.1, top_p=0.9), seed=5)
        drawn, draw = [], sampler.draw
        sampler.draw = lambda step, out, stream=0: (drawn.append((step, len(out))),
                                                    draw(step, out, stream))
        samples = torch.cat([engine.generate(k, sampler) for k in (1, 600, 255, 1000)], 1)
        draws.append(sorted(drawn))
        saved = engine.state_dict(sampler)
        after = engine.generate(700, sampler)
        engine.load_state_dict(saved, sampler)
        assert torch.equal(engine.generate(700, sampler), after)
        runs.append((samples, after))
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert draws[0] == draws[1] and len(set(draws[0])) == len(draws[0]) > 4


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("spare", [True, False])
def test_ctrl_c_waits_for_the_groups_on_the_pool(spare: bool, rng) -> None:
    """Ctrl-C while the calling thread waits for the pool: the interrupt goes on only once
    every group is done (their kernels write into arrays that the unwinding frees)."""
    import signal
    import threading
    import time

    model = fresh_sequnet((5, 3, 2, 6, 1), rng)[0]
    engine = StreamingEngine(model, 1 if spare else 2, backend="numba", threads=2)
    groups = engine.executor.groups
    assert groups.spare == spare
    done, main = [], threading.get_ident()

    def step(group) -> None:
        if group is groups.groups[-1]:
            time.sleep(0.1)  # the caller is waiting by then
            signal.pthread_kill(main, signal.SIGINT)
            time.sleep(0.3)
        done.append(group)

    with pytest.raises(KeyboardInterrupt):
        groups.run(step, lambda: None)
        time.sleep(5)  # not reached: the interrupt comes first
    assert len(done) == len(groups.groups)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_ctrl_c_right_after_a_submit_still_waits_for_that_group(rng, monkeypatch) -> None:
    """Ctrl-C in the instant after the pool takes a group, before the run has noted it: the
    run still waits for that group before the interrupt goes on, and runs on after it."""
    import signal
    import time

    model = fresh_sequnet((5, 3, 2, 6, 1), rng)[0]
    groups = StreamingEngine(model, 2, backend="numba", threads=2).executor.groups
    submit, submitted, done = groups.pool.submit, [], []

    def interrupted_submit(step, group):
        future = submit(step, group)
        submitted.append(group)
        signal.raise_signal(signal.SIGINT)  # handled before the run has the future
        return future

    def step(group) -> None:
        if group is not groups.groups[0]:
            time.sleep(0.3)
        done.append(group)

    monkeypatch.setattr(groups.pool, "submit", interrupted_submit)
    with pytest.raises(KeyboardInterrupt):
        groups.run(step)
    assert [g.streams for g in done] == [g.streams for g in submitted] != []
    groups.run(step)
    assert len(done) == len(submitted) + len(groups.groups)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("batch", [2, 7])
def test_numba_runs_streams_on_threads(batch: int, rng) -> None:
    """``threads`` streams' groups at most one per stream; by default numba's thread count."""
    import numba

    model, _ = fresh_sequnet((5, 3, 2, 6, 1), rng)
    engine = StreamingEngine(model, batch, backend="numba", threads=3)
    assert len(engine.executor.groups) == min(3, batch)
    x = torch.randint(0, CLASSES, (batch, 90), generator=rng)
    got = torch.empty(batch, 90, CLASSES)
    engine.feed(x, got)
    assert (got.double() - reference_logits(model, x)).abs().max().item() < TOL
    default = StreamingEngine(model, batch, backend="numba").executor.groups
    assert len(default) == min(numba.config.NUMBA_NUM_THREADS, batch)
    with pytest.raises(ValueError, match="threads must be a whole number >= 1"):
        StreamingEngine(model, batch, backend="numba", threads=0)


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_kernels_cached_tells_a_cold_numba_cache_from_a_warm_one(tmp_path, rng) -> None:
    """Warm once the kernels have run here (numba wrote its cache); cold in a process whose
    cache folder is empty, where the first block would compile them."""
    import subprocess
    import sys

    from streamgen.engine.fast.kernels import kernels_cached

    model, _ = fresh_sequnet((5, 3, 1, 4, 1), rng)
    engine = StreamingEngine(model, 1, backend="numba")
    engine.feed(torch.randint(0, CLASSES, (1, 4)))
    engine.generate(4, engine.sampler(SamplingConfig(), seed=0))
    assert kernels_cached()
    probe = "from streamgen.engine.fast.kernels import kernels_cached as k; print(k())"
    cold = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert cold.stdout.strip() == "False", cold.stderr


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("top_p", [0.5, 0.9, 0.99])
def test_numba_nucleus_equals_the_torch_rule(top_p: float, rng: torch.Generator) -> None:
    """The kernel's candidate-only nucleus keeps exactly the classes the torch sampler keeps,
    over 256 classes from nearly one-hot to nearly flat."""
    import numpy as np

    from streamgen.engine.fast.kernels import apply_top_p
    from streamgen.engine.sampling import Sampler

    sharpness = torch.logspace(-1, 1.5, 400).double()[:, None]
    logits = (torch.randn(400, 256, generator=rng, dtype=torch.float64) * sharpness).float()
    sampler = Sampler(SamplingConfig(top_p=top_p), 400, 256)
    # no noise: the argmax is irrelevant, only the mask matters
    sampler.sample(logits, torch.empty(400, dtype=torch.int64), noise=torch.zeros(400, 256))
    want = torch.isinf(sampler.scores)
    got = logits.numpy().copy()
    work = np.empty((3, 256), np.float32)
    bits, at = np.empty(256, np.int32), np.empty(256, np.int64)
    for row in got:
        apply_top_p(row, np.float32(top_p), work, bits, at)
    assert torch.equal(torch.from_numpy(np.isinf(got)), want)
    kept = (~want).sum(-1)
    assert kept.min() == 1 and kept.max() > 100  # both extremes were exercised


def test_backend_selection() -> None:
    sequnet = SeqUNet(SeqUNetConfig(4, 2, 1, 3, classes=CLASSES))
    expected = "numba" if numba_available() else "torch"
    engine = StreamingEngine(sequnet)  # the defaults: one stream, seed 0
    assert engine.backend == expected and engine.batch_size == 1 and engine.sampler().seed == 0
    assert StreamingEngine(sequnet, NUMBA_MAX_BATCH, threads=1).backend == expected
    # on one thread batched matmuls win, on more numba's streams on threads
    assert StreamingEngine(sequnet, NUMBA_MAX_BATCH + 1, threads=1).backend == "torch"
    assert StreamingEngine(sequnet, NUMBA_MAX_BATCH + 1, threads=2).backend == expected
    wavenet = WaveNet(WaveNetConfig(1, 2, 2, 4, 4, 4, classes=CLASSES))
    assert StreamingEngine(wavenet).backend == expected
    tcn = TCN(TCNConfig(channels=4, levels=2, kernel_size=2, classes=CLASSES))
    assert StreamingEngine(tcn).backend == expected
    assert StreamingEngine(tcn, inputs="frames").backend == "torch"
    with pytest.raises(ValueError, match="numba backend runs plans fed class inputs, not frames"):
        StreamingEngine(tcn, inputs="frames", backend="numba")
    with pytest.raises(ValueError, match="unknown backend"):
        StreamingEngine(sequnet, backend="cuda-graphs")
    # what runs each kind on the CPU, fed its own inputs (a plain Seq-U-Net streams frames)
    from streamgen.engine.engine import available_backends
    from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig

    cpu = ["torch", "numba"] if numba_available() else ["torch"]
    for model in (sequnet, wavenet, tcn):
        assert available_backends(model) == cpu
    assert available_backends(PlainSeqUNet(PlainSeqUNetConfig(4, 2, 3, classes=6))) == ["torch"]


def test_without_numba_auto_streams_on_torch_and_numba_is_a_one_line_error(monkeypatch,
                                                                          rng) -> None:
    """Where numba cannot be imported (a Python it does not support yet), ``auto`` takes torch,
    the listing names torch alone and asking for numba says how to get it."""
    import streamgen.engine.engine as engine_module
    from streamgen.engine.tables import BackendError

    monkeypatch.setattr(engine_module, "numba_available", lambda: False)
    model, batch = fresh_sequnet((3, 4, 2, 5, 2), rng)
    engine = StreamingEngine(model, batch)
    assert engine.backend == "torch"
    x = torch.randint(0, CLASSES, (batch, 30), generator=rng)
    got = torch.empty(batch, 30, CLASSES)
    engine.feed(x, got)
    assert (got.double() - reference_logits(model, x)).abs().max().item() < TOL
    assert engine_module.available_backends(model) == ["torch"]
    with pytest.raises(BackendError, match="^the numba backend needs numba: pip install numba$"):
        StreamingEngine(model, batch, backend="numba")


def test_unsupported_layers_names_the_first_layer_an_interpreter_cannot_run() -> None:
    """The compiled executors' common refusal (``tables.unsupported_layers``): Seq-U-Nets run
    everywhere, WaveNets and TCNs only where the executor asks for them, frames nowhere, and a
    program's head must be its layers' kind too."""
    from streamgen.engine.program import build_program
    from streamgen.engine.tables import plan_tables, unsupported_layers

    sequnet = build_program(SeqUNet(SeqUNetConfig(4, 2, 1, 3, classes=CLASSES)), 1)
    wavenet = build_program(WaveNet(WaveNetConfig(1, 2, 2, 4, 4, 4, classes=CLASSES)), 1)
    tcn_net = TCN(TCNConfig(channels=4, levels=2, kernel_size=2, classes=CLASSES))
    tcn = build_program(tcn_net, 1)
    for wavenet_too in (False, True):
        for tcn_too in (False, True):
            assert unsupported_layers(sequnet, wavenet_too, tcn_too) is None
    assert unsupported_layers(wavenet, wavenet=True) is None
    assert unsupported_layers(tcn, tcn=True) is None
    assert unsupported_layers(wavenet) == (
        "plans of gated layers (Seq-U-Nets), not a wavenet (OneHotDense at ring 'input')")
    assert unsupported_layers(wavenet, tcn=True) == ("plans of the layers (Seq-U-Nets, TCNs), "
                                                     "not a wavenet (OneHotDense at ring 'input')")
    assert unsupported_layers(tcn, wavenet=True) == (
        "plans of gated layers (Seq-U-Nets, WaveNets), not a tcn (Rectified at ring 'input')")
    frames = build_program(tcn_net, 1, inputs="frames")
    assert unsupported_layers(frames, True, True) == "plans fed class inputs, not frames"
    with pytest.raises(ValueError, match="^the compiled backends run plans fed class inputs"):
        plan_tables(frames)  # which every executor asks for, after its own check
    sequnet.head = tcn.head  # a TCN's head on Seq-U-Net layers
    assert unsupported_layers(sequnet) == (
        "plans of gated layers (Seq-U-Nets) with their heads, not the sequnet head")
    assert unsupported_layers(sequnet, tcn=True) is None


@pytest.mark.parametrize("kind", KINDS)
def test_silence_start_equals_offline_with_silence_history(kind: str, rng: torch.Generator) -> None:
    """``start="silence"``: before its start (and after a reset) a stream has received the
    silence class; priming and resets of some streams keep to that definition too."""
    model, backend = model_of_kind(kind, rng, (5, 3, 2, CLASSES, 3))
    batch, n = 3, 70
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend=backend, start="silence")
    first = engine.logits.clone()
    got = torch.empty(batch, n, CLASSES)
    engine.feed(x[:, :29], got[:, :29])
    engine.reset([1])
    engine.feed(x[:, 29:], got[:, 29:])
    want = reference_logits(model, x, before="silence")
    want[1, 29:] = reference_logits(model, x, starts=[0, 29, 0], before="silence")[1, 29:]
    assert (got.double() - want).abs().max().item() < TOL
    assert (got.double() - reference_logits(model, x)).abs().max().item() > 1e-3  # not zeros
    # the first prediction is the model's own after silence (time -1 has the clock phase of
    # time period - 1, with the same all-silence history), not a forced silence class
    silent = torch.full((batch, model.period), CLASSES // 2)
    after_silence = reference_logits(model, silent, before="silence")[:, -1]
    assert (first.double() - after_silence).abs().max().item() < TOL
    primed = StreamingEngine(model, batch, backend=backend, start="silence")
    primed.prime(x[:, :11])
    assert (primed.logits.double() - want[:, 10]).abs().max().item() < TOL


def random_frames(batch: int, n: int, keys: int, gen: torch.Generator) -> torch.Tensor:
    """Piano-roll-like frames: each key on with probability 0.2."""
    return (torch.rand(batch, n, keys, generator=gen) < 0.2).float()


# (kind, kernel, width, levels): even and odd kernels, widths equal to the 12 keys, 1-4 levels
FRAME_MODELS = [("tcn", 2, 6, 3), ("tcn", 3, 12, 3), ("tcn", 4, 5, 2), ("plain_sequnet", 3, 8, 2),
                ("plain_sequnet", 5, 12, 3), ("plain_sequnet", 3, 6, 4), ("plain_sequnet", 5, 7, 1)]


def frame_model(kind: str, kernel: int, width: int, levels: int, keys: int,
                gen: torch.Generator) -> torch.nn.Module:
    """A fresh random network of frames over ``keys`` keys, in eval mode."""
    from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig

    if kind == "tcn":
        model = TCN(TCNConfig(channels=width, levels=levels, kernel_size=kernel, dropout=0.2,
                              classes=keys))
    else:
        model = PlainSeqUNet(PlainSeqUNetConfig(width, levels, kernel, dropout=0.2, classes=keys))
    randomize_(model, gen)
    return model.eval()


@pytest.mark.parametrize("chunks", ["1", "7", "random"])
@pytest.mark.parametrize("kind,kernel,width,levels", FRAME_MODELS, ids=str)
def test_frames_engine_equals_offline(kind, kernel, width, levels, chunks, rng) -> None:
    """Fed float frames (piano rolls), teacher-forced logits equal the offline pass with zero
    frames before the start, across chunkings and a reset of some streams (the mid-run reset
    falls off the coarse grid for the Seq-U-Nets)."""
    from engine_reference import reference_frame_logits

    keys, batch = 12, 3
    model = frame_model(kind, kernel, width, levels, keys, rng)
    n = max(2 * model.receptive_field, 3 * model.period) + 9
    x = random_frames(batch, n, keys, rng)
    engine = StreamingEngine(model, batch, inputs="frames")
    assert engine.backend == "torch"
    got = torch.empty(batch, n, keys)
    half = n // 2
    rnd = random.Random(int(x.sum()))
    for lo, hi in ((0, half), (half, n)):
        if lo:
            engine.reset([0, 2])
        i = lo
        while i < hi:
            size = min({"1": 1, "7": 7}.get(chunks) or rnd.randint(1, 20), hi - i)
            engine.feed(x[:, i : i + size], got[:, i : i + size])
            i += size
    want = reference_frame_logits(model, x)
    want[[0, 2], half:] = reference_frame_logits(model, x, starts=[half, 0, half])[[0, 2], half:]
    assert (got.double() - want).abs().max().item() < TOL
    primed = StreamingEngine(model, batch, inputs="frames")
    primed.prime(x[:, :half])
    assert (primed.logits.double() - reference_frame_logits(model, x)[:, half - 1]).abs().max() < TOL
    with pytest.raises(ValueError, match="teacher-forced"):
        primed.generate(3, primed.sampler())
    with pytest.raises(ValueError, match="frames"):
        primed.feed(torch.zeros(batch, 2, dtype=torch.int64))


@pytest.mark.parametrize("dtype", list(DTYPE_BOUNDS), ids=str)
@pytest.mark.parametrize("kind,kernel,width,levels", [FRAME_MODELS[1], FRAME_MODELS[4]], ids=str)
def test_frames_engine_in_other_dtypes_equals_offline(kind, kernel, width, levels, dtype,
                                                      rng) -> None:
    """Fed frames, the torch backend in float64 (on a float64 model) equals the float64 pass to
    rounding, in float16 and bfloat16 within their bounds: every kernel converts its weights."""
    from engine_reference import reference_frame_logits

    keys, batch = 12, 2
    model = frame_model(kind, kernel, width, levels, keys, rng)
    if dtype == torch.float64:
        model = model.double()
    n = 2 * model.receptive_field + 7
    x = random_frames(batch, n, keys, rng)
    engine = StreamingEngine(model, batch, dtype=dtype, inputs="frames")
    assert engine.backend == "torch" and engine.logits.dtype == dtype
    got = torch.empty(batch, n, keys, dtype=dtype)
    engine.feed(x, got)
    err = (got.double() - reference_frame_logits(model, x)).abs().max().item()
    assert err < DTYPE_BOUNDS[dtype]

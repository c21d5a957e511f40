"""The fused sampler (``streamgen.engine.gpu.sample_kernel``) through Triton's interpreter:
torch's sampler's samples from the same random logits and seeds over every rule, steps read
from the device buffer, strided and half-precision logits, hand-computed nuclei, and the
graphs executor replaying it. The interpreter's sort is slow (about 0.5 s per stream-step at
256 classes), so most cases use few classes."""

from __future__ import annotations

import pytest
import torch

from streamgen.engine import StreamingEngine
from streamgen.engine.gpu import interpreting, triton_available
from streamgen.engine.sampling import Sampler, fused_runs_on
from streamgen.engine.tables import BackendError
from streamgen.sampling import SamplingConfig
from test_graphs import model_of, replays

needs_interpreter = pytest.mark.skipif(
    not (triton_available() and interpreting()),
    reason="needs triton through its interpreter (conftest sets it without a GPU)")

RULES = [SamplingConfig(), SamplingConfig(top_p=0.9), SamplingConfig(temperature=0.7, top_k=5),
         SamplingConfig(top_k=3, top_p=0.5), SamplingConfig(temperature=1.3, top_p=0.6)]


def pair(config: SamplingConfig, batch: int, classes: int, seed: int,
         step: int = 0) -> tuple[Sampler, Sampler]:
    """Torch's sampler and the fused one, both at ``step``."""
    torch_s, fused = (Sampler(config, batch, classes, seed=seed, fused=f) for f in (False, True))
    torch_s.step = fused.step = step
    return torch_s, fused


@needs_interpreter
@pytest.mark.parametrize("config", RULES, ids=lambda c: c.describe())
@pytest.mark.parametrize("classes, seed, step", [(7, -3, 2**32 - 2), (16, 2**63 + 9, 5)])
def test_fused_sampler_draws_torchs_samples(config: SamplingConfig, classes: int, seed: int,
                                            step: int, rng: torch.Generator) -> None:
    """Random logits of a wide spread, three streams, steps across 2^32, a seed past 63 bits
    and a negative one, a class count that fills no quad of Philox words."""
    torch_s, fused = pair(config, 3, classes, seed, step)
    want, got = torch.empty(3, dtype=torch.int64), torch.empty(3, dtype=torch.int64)
    for _ in range(4):
        logits = torch.randn(3, classes, generator=rng) * 3
        torch_s.sample(logits, want)
        fused.sample(logits, got)
        assert torch.equal(got, want)
    assert fused.step == torch_s.step == step + 4
    assert not {"noise", "scores", "mask"} & set(vars(fused))  # torch's rule's buffers never made


@needs_interpreter
@pytest.mark.parametrize("config", [SamplingConfig(), SamplingConfig(top_p=0.94)],
                         ids=lambda c: c.describe())
def test_fused_sampler_at_256_classes(config: SamplingConfig, rng: torch.Generator) -> None:
    torch_s, fused = pair(config, 2, 256, seed=11)
    want, got = torch.empty(2, dtype=torch.int64), torch.empty(2, dtype=torch.int64)
    for _ in range(2):
        logits = torch.randn(2, 256, generator=rng) * 2
        torch_s.sample(logits, want)
        fused.sample(logits, got)
        assert torch.equal(got, want)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_strided_rows_and_half_precision_logits(dtype: torch.dtype,
                                                rng: torch.Generator) -> None:
    """Each stream's classes a slice of a wider row, the samples into every other element;
    half-precision logits scored in float32 as torch's sampler scores them."""
    config = SamplingConfig(top_p=0.8)
    torch_s, fused = pair(config, 4, 9, seed=4)
    for _ in range(3):
        rows = (torch.randn(4, 15, generator=rng) * 3).to(dtype)
        logits = rows[:, 5:14]
        want = torch.empty(4, dtype=torch.int64)
        slots = torch.full((8,), -1, dtype=torch.int64)
        torch_s.sample(logits, want)
        fused.sample(logits, slots[::2])
        assert torch.equal(slots[::2], want) and (slots[1::2] == -1).all()


@needs_interpreter
def test_the_step_is_the_device_buffers_plus_the_offset(rng: torch.Generator) -> None:
    """``sample_at`` draws the noise of step ``step[0] + offset``, past 2^32, and leaves the
    sampler's own step alone."""
    torch_s, fused = pair(SamplingConfig(), 3, 10, seed=2)
    base = torch.tensor([2**32 - 2], dtype=torch.int64)
    for offset in range(4):
        logits = torch.randn(3, 10, generator=rng) * 3
        want, got = torch.empty(3, dtype=torch.int64), torch.empty(3, dtype=torch.int64)
        torch_s.step = 2**32 - 2 + offset
        torch_s.sample(logits, want)
        fused.sample_at(logits, got, base, offset)
        assert torch.equal(got, want)
    assert fused.step == 0


@needs_interpreter
def test_hand_computed_nuclei_and_greedy() -> None:
    """Probabilities (0.5, 0.3, 0.15, 0.05): top-p 0.75 keeps the first two classes (the
    classes above them hold 0 and 0.5; above the third, 0.8), top-k 1 the first; two classes
    tied at the nucleus' floor are kept together; greedy takes the first of two maxima."""
    step = torch.zeros(1, dtype=torch.int64)
    out = torch.empty(1, dtype=torch.int64)
    probs = torch.tensor([[0.15, 0.5, 0.05, 0.3]])
    cases = [(SamplingConfig(top_p=0.75), probs.log(), {1, 3}),
             (SamplingConfig(top_k=1), probs.log(), {1}),
             (SamplingConfig(top_p=0.3), torch.tensor([[0.0, 4.0, 0.0, 4.0, 0.0, 0.0]]), {1, 3})]
    for config, logits, kept in cases:
        sampler = Sampler(config, 1, logits.shape[1], seed=1, fused=True)
        seen = {sampler.sample_at(logits, out, step, i).item() for i in range(40)}
        assert seen == kept, config
    greedy = Sampler(SamplingConfig(greedy=True), 1, 4, fused=True)
    assert greedy.sample_at(torch.tensor([[1.0, 3.0, 3.0, 0.0]]), out, step).item() == 1


@needs_interpreter
@pytest.mark.parametrize("config", [SamplingConfig(), SamplingConfig(greedy=True)],
                         ids=lambda c: c.describe())
def test_graphs_replay_the_fused_sampler(config: SamplingConfig, rng: torch.Generator) -> None:
    """The graphs executor with a fused sampler (each recorded segment reads its first step
    from the device buffer) gives the torch executor's samples with torch's sampler, whatever
    the chunks, and holds no noise."""
    from test_graphs import CLASSES

    model = model_of("sequnet-k3", rng)
    prompt = torch.randint(0, CLASSES, (2, 37), generator=rng)  # start mid-segment
    runs, states = {}, {}
    for backend, fused in (("torch", False), ("graphs", True)):
        engine = StreamingEngine(model, 2, backend=backend)
        engine.prime(prompt)
        sampler = Sampler(config, 2, CLASSES, seed=9, fused=fused)
        runs[backend] = torch.cat([engine.generate(n, sampler) for n in (91, 64, 75)], 1)
        states[backend] = sampler.state_dict()
        if fused:
            assert replays(engine) > 0
            assert "noise" not in vars(engine.executor)
            assert not {"noise", "scores", "mask"} & set(vars(sampler))
    assert torch.equal(runs["torch"], runs["graphs"])
    assert states["torch"] == states["graphs"]


def test_a_fused_sampler_where_triton_cannot_run_is_a_one_line_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streamgen.engine.gpu.interpreting", lambda: False)
    with pytest.raises(BackendError, match="^a fused sampler runs a Triton kernel: .*"):
        Sampler(SamplingConfig(), 1, 4, fused=True)
    assert not Sampler(SamplingConfig(), 1, 4).fused  # not by default on the CPU


def test_the_fused_sampler_is_the_default_on_cuda_devices_with_triton(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert fused_runs_on(cuda) == triton_available() and not fused_runs_on(cpu)
    monkeypatch.setattr("streamgen.engine.sampling.triton_available", lambda: False)
    assert not fused_runs_on(cuda)

"""The graphs executor (streamgen.engine.gpu.graphs) on the CPU, where recorded calls stand in
for CUDA graphs: segmenting, ring alignment, static buffers, noise, position bookkeeping,
mid-period starts, resets, prime and restored states all run here (tests/test_cuda.py
replays real graphs)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest
import torch

from conftest import randomize_
from engine_reference import reference_frame_logits, reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.engine import available_backends
from streamgen.engine.gpu.graphs import SEGMENT, CallRecorder, GraphExecutor
from streamgen.engine.program import build_program
from streamgen.engine.ring import RingPositions
from streamgen.engine.schedule import align_rings
from test_schedule import move_off_schedule
from streamgen.nn import SeqUNet, SeqUNetConfig
from test_capacity import model_of as capacity_model_of

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = 16
TOL = 1e-4


def model_of(kind: str, gen: torch.Generator) -> torch.nn.Module:
    """Seq-U-Nets of 8 levels (a graph period of two segments) as wide as the class count;
    the WaveNet and TCN of tests/test_capacity.py."""
    if not kind.startswith("sequnet"):
        return capacity_model_of(kind, gen, CLASSES)
    model = SeqUNet(SeqUNetConfig(CLASSES, 8, 1, int(kind[-1]), classes=CLASSES))
    randomize_(model, gen)
    return model.eval()


KINDS = ["sequnet-k3", "sequnet-k5", "sequnet-k7", "wavenet", "tcn"]


def replays(engine: StreamingEngine) -> int:
    return sum(r.replays for r in engine.executor.recorded.values())


def feed_in_chunks(engine: StreamingEngine, x: torch.Tensor, out: torch.Tensor, at: int,
                   chunk: int) -> None:
    """Feed ``x[:, at:]`` chunk by chunk, logits into ``out``; ``engine.logits`` after each
    chunk are its last step's."""
    for i in range(at, x.shape[1], chunk):
        end = min(i + chunk, x.shape[1])
        engine.feed(x[:, i:end], out[:, i:end])
        assert torch.equal(engine.logits, out[:, end - 1])


def fed_with_a_break(engine: StreamingEngine, between: Callable[[], None],
                     rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Random inputs over four graph periods fed in chunks of 131, ``between()`` called
    mid-period after the first: the inputs, the logits and the step of the break."""
    g = engine.program.graph_period
    n, cut = 4 * g + 45, g + 21
    x = torch.randint(0, CLASSES, (engine.batch_size, n), generator=rng)
    out = torch.empty(engine.batch_size, n, CLASSES)
    feed_in_chunks(engine, x[:, :cut], out, 0, 131)
    between()
    feed_in_chunks(engine, x, out, cut, 131)
    return x, out, cut


def on_schedule(engine: StreamingEngine) -> bool:
    return not align_rings(engine.program, engine.schedule, engine.t)


@pytest.mark.parametrize("start", [0, 37], ids=["from-0", "mid-period"])
@pytest.mark.parametrize("chunk", [1, 7, 64, 131])
@pytest.mark.parametrize("kind", KINDS)
def test_graphs_equal_offline(kind: str, chunk: int, start: int, rng: torch.Generator) -> None:
    """Within 1e-4 of the offline pass, and (on the CPU, the same kernels on the same values)
    exactly the torch executor's logits, which a ring read at a wrong position changes even
    where the network damps it below the tolerance."""
    model = model_of(kind, rng)
    n = 4 * max(model.period, SEGMENT) + 45  # every segment recorded, then replayed
    x = torch.randint(0, CLASSES, (2, n), generator=rng)
    outs = {}
    for backend in ("torch", "graphs"):
        engine = StreamingEngine(model, 2, backend=backend)
        out = outs[backend] = torch.full((2, n, CLASSES), float("nan"))
        engine.feed(x[:, :start], out[:, :start])
        feed_in_chunks(engine, x, out, start, chunk)
    assert engine.backend == "graphs" and engine.program.capacity == "period"
    assert (outs["graphs"].double() - reference_logits(model, x)).abs().max().item() < TOL
    assert torch.equal(outs["graphs"], outs["torch"])
    if chunk == 131 or (chunk == 64 and start == 0):
        assert replays(engine) > 0


@pytest.mark.parametrize("kind", ["sequnet-k5", "wavenet"])
def test_reset_of_some_streams_and_prime_in_between(kind: str, rng: torch.Generator) -> None:
    model = model_of(kind, rng)
    engine = StreamingEngine(model, 3, backend="graphs")
    # mid-period, streams 0 and 2 restart on the shared clock
    x, out, cut = fed_with_a_break(engine, lambda: engine.reset([0, 2]), rng)
    want = reference_logits(model, x)
    want[[0, 2], cut:] = reference_logits(model, x, starts=[cut, 0, cut])[[0, 2], cut:]
    assert (out.double() - want).abs().max().item() < TOL
    replayed = replays(engine)
    assert replayed > 0
    # prime an odd-length prompt, then continue past segment boundaries
    prompt = torch.randint(0, CLASSES, (3, 77), generator=rng)
    engine.prime(prompt)
    y = torch.randint(0, CLASSES, (3, 2 * engine.program.graph_period + 70), generator=rng)
    got = torch.empty(3, y.shape[1], CLASSES)
    feed_in_chunks(engine, y, got, 0, 131)
    want = reference_logits(model, torch.cat([prompt, y], 1))[:, prompt.shape[1]:]
    assert (got.double() - want).abs().max().item() < TOL
    assert replays(engine) > replayed


@pytest.mark.parametrize("backend", ["torch", "graphs"])
def test_reset_and_prime_leave_the_rings_on_the_schedule(backend: str,
                                                         rng: torch.Generator) -> None:
    engine = StreamingEngine(model_of("sequnet-k3", rng), 2, backend=backend, capacity="period")
    x = torch.randint(0, CLASSES, (2, 150), generator=rng)
    engine.feed(x[:, :75])
    engine.reset()
    assert engine.t == 0 and on_schedule(engine)
    engine.feed(x[:, :75])
    engine.reset([1])
    assert engine.t == 75 and on_schedule(engine)
    engine.prime(x[:, :101])
    assert engine.t == 101 and on_schedule(engine)


@pytest.mark.parametrize("kind", ["sequnet-k7", "tcn"])
@pytest.mark.parametrize("direction", ["double-to-graphs", "graphs-to-double"])
def test_a_state_from_another_capacity_is_restored_onto_the_schedule(
        kind: str, direction: str, rng: torch.Generator) -> None:
    model = model_of(kind, rng)
    double = StreamingEngine(model, 2, backend="torch", capacity="double")
    graphs = StreamingEngine(model, 2, backend="graphs")
    src, dst = (double, graphs) if direction == "double-to-graphs" else (graphs, double)
    g = graphs.program.graph_period
    cut = 2 * g + 29
    n = cut + 3 * g + 45
    x = torch.randint(0, CLASSES, (2, n), generator=rng)
    out = torch.empty(2, n, CLASSES)
    feed_in_chunks(src, x[:, :cut], out, 0, 131)
    dst.load_state_dict(src.state_dict())
    if dst is graphs:
        assert on_schedule(dst)
    feed_in_chunks(dst, x, out, cut, 131)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL
    assert replays(graphs) > 0


def test_rings_moved_off_the_schedule_are_aligned_by_the_next_block(rng: torch.Generator) -> None:
    model = model_of("sequnet-k5", rng)
    engine = StreamingEngine(model, 2, backend="graphs")
    x, out, _ = fed_with_a_break(engine, lambda: move_off_schedule(engine.program), rng)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL
    assert replays(engine) > 0


def test_a_state_of_another_batch_is_refused(rng: torch.Generator) -> None:
    model = model_of("tcn", rng)
    state = StreamingEngine(model, 2, backend="torch").state_dict()
    with pytest.raises(ValueError, match="another network or batch size"):
        StreamingEngine(model, 3, backend="graphs").load_state_dict(state)


SAMPLINGS = [SamplingConfig(top_p=0.9), SamplingConfig(temperature=0.8, top_k=5),
             SamplingConfig(greedy=True)]


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: s.describe())
def test_generate_draws_the_torch_executors_samples(sampling: SamplingConfig,
                                                    rng: torch.Generator) -> None:
    """Same seed, same samples, whatever the chunks; a second sampler gets its own graphs."""
    model = model_of("sequnet-k5", rng)
    engines = {b: StreamingEngine(model, 3, backend=b) for b in ("torch", "graphs")}
    prompt = torch.randint(0, CLASSES, (3, 37), generator=rng)  # start mid-period
    runs, states = {}, {}
    for backend, engine in engines.items():
        engine.prime(prompt)
        first = engine.sampler(sampling, seed=11)
        second = engine.sampler(SamplingConfig(temperature=0.5), seed=12)  # other graphs
        runs[backend] = [engine.generate(n, first) for n in (100, 64, 300)]
        if backend == "graphs":
            assert replays(engine) > 0
        runs[backend] += [engine.generate(150, second), engine.generate(70, first)]
        states[backend] = first.state_dict()
    assert torch.equal(torch.cat(runs["torch"], 1), torch.cat(runs["graphs"], 1))
    assert states["torch"] == states["graphs"]
    graphs = engines["graphs"].executor
    assert graphs._sampler[0] is first  # only the sampler in use keeps graphs
    segments = graphs.program.graph_period // SEGMENT
    assert len([k for k in graphs.recorded if k[0] == "generate"]) <= segments


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_half_precision_replays_the_torch_executors_steps(dtype: torch.dtype,
                                                         rng: torch.Generator) -> None:
    """The same kernels in the same order: the torch executor's logits and samples exactly."""
    model = model_of("sequnet-k5", rng)
    engines = {b: StreamingEngine(model, 2, backend=b, dtype=dtype) for b in ("torch", "graphs")}
    g = engines["graphs"].program.graph_period
    x = torch.randint(0, CLASSES, (2, 2 * g + 45), generator=rng)
    outs, samples = {}, {}
    for backend, engine in engines.items():
        outs[backend] = torch.empty(2, x.shape[1], CLASSES, dtype=dtype)
        engine.feed(x[:, :37], outs[backend][:, :37])
        feed_in_chunks(engine, x, outs[backend], 37, 131)
        sampler = engine.sampler(SamplingConfig(top_p=0.9), seed=2)
        samples[backend] = torch.cat([engine.generate(n, sampler) for n in (100, 200)], 1)
    assert outs["graphs"].dtype == dtype and torch.equal(outs["torch"], outs["graphs"])
    assert torch.equal(samples["torch"], samples["graphs"])
    assert replays(engines["graphs"]) > 0
    bound = 1e-2 if dtype == torch.float16 else 5e-2
    assert (outs["graphs"].double() - reference_logits(model, x)).abs().max().item() < bound


def test_frames_inputs(rng: torch.Generator) -> None:
    from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig

    model = PlainSeqUNet(PlainSeqUNetConfig(12, 3, 3, dropout=0.2, classes=10))
    randomize_(model, rng)
    model.eval()
    engine = StreamingEngine(model, 2, backend="graphs", inputs="frames")
    n = 4 * engine.program.graph_period + 45
    x = torch.rand(2, n, 10, generator=rng)
    out = torch.empty(2, n, 10)
    engine.feed(x[:, :37], out[:, :37])
    for i in range(37, n, 131):
        engine.feed(x[:, i : i + 131], out[:, i : i + 131])
    assert (out.double() - reference_frame_logits(model, x)).abs().max().item() < TOL
    assert replays(engine) > 0


def test_capacity_auto_and_the_graphs_backends_rule(rng: torch.Generator) -> None:
    model = model_of("tcn", rng)
    assert StreamingEngine(model, 1).program.capacity == "double"  # the CPU default
    assert StreamingEngine(model, 1, backend="graphs").program.capacity == "period"
    with pytest.raises(ValueError, match="capacity='period'"):
        StreamingEngine(model, 1, backend="graphs", capacity="double")
    with pytest.raises(ValueError, match="capacity='period'"):
        GraphExecutor(build_program(model, 1, capacity="double"))
    with pytest.raises(ValueError, match="unknown ring capacity 'triple'"):
        StreamingEngine(model, 1, capacity="triple")
    assert "graphs" not in available_backends(model)  # CUDA only; the CPU runs a stand-in


def test_positions_follow_the_schedule_through_replays(rng: torch.Generator) -> None:
    """The host's ring positions after every block are the schedule's (a replay moves none
    by itself), and no block has to move a ring."""
    engine = StreamingEngine(model_of("sequnet-k3", rng), 1, backend="graphs")
    g = engine.program.graph_period
    x = torch.randint(0, CLASSES, (1, 3 * g), generator=rng)
    for i in range(0, x.shape[1], 99):
        engine.feed(x[:, i : i + 99])
        assert np.array_equal(engine.program.positions.array, engine.schedule.positions[engine.t % g])
    assert replays(engine) > 0


def test_the_cpu_stand_in_replays_at_the_recorded_positions_like_a_graph() -> None:
    """A graph's kernels hold the addresses of their recording and move no host counter."""
    positions = RingPositions()
    positions.add(3), positions.add(5)
    seen = []

    def advance() -> None:
        seen.append(positions.array.tolist())
        positions.array += 1

    recording = CallRecorder(positions).record(advance)
    assert seen == []  # recording runs nothing
    positions.array[:] = [7, 9]
    recording.replay()
    assert seen == [[3, 5]] and positions.array.tolist() == [7, 9]

"""Ring capacities: the ``period`` rule repeats every ring's slot pattern with the graph
period (what replaying one recorded period of steps needs), stays exact, and holds fewer
spare frames than two windows where windows are long."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import randomize_
from engine_reference import reference_logits
from streamgen.engine import StreamingEngine
from streamgen.engine.engine import numba_available
from streamgen.engine.program import build_program, ring_capacity
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig, build_network

CLASSES = 32


def model_of(kind: str, gen: torch.Generator, classes: int = CLASSES) -> torch.nn.Module:
    if kind == "sequnet-L4":
        model = SeqUNet(SeqUNetConfig(6, 4, 2, 5, classes=classes))
    elif kind == "sequnet-L3-k7":
        model = SeqUNet(SeqUNetConfig(4, 3, 1, 7, classes=classes))
    elif kind == "wavenet":
        model = WaveNet(WaveNetConfig(2, 4, 2, 6, 5, 12, classes=classes))
    else:
        model = TCN(TCNConfig(channels=6, levels=3, kernel_size=3, classes=classes))
    randomize_(model, gen)
    return model.eval()


KINDS = ["sequnet-L4", "sequnet-L3-k7", "wavenet", "tcn"]


def positions_per_step(engine: StreamingEngine, x: torch.Tensor) -> np.ndarray:
    """Every ring's newest index after each step, (steps, rings)."""
    rows = []
    for i in range(x.shape[1]):
        engine.feed(x[:, i : i + 1])
        rows.append(engine.program.positions.array.copy())
    return np.stack(rows)


@pytest.mark.parametrize("kind", KINDS)
def test_period_capacity_repeats_the_slot_pattern_every_graph_period(kind, rng) -> None:
    model = model_of(kind, rng)
    engine = StreamingEngine(model, 1, backend="torch", capacity="period")
    g = engine.program.graph_period
    assert g % engine.period == 0
    x = torch.randint(0, CLASSES, (1, 3 * g), generator=rng)
    pos = positions_per_step(engine, x)
    assert np.array_equal(pos[:g], pos[g : 2 * g]) and np.array_equal(pos[:g], pos[2 * g :])
    # every ring that moves rewinds within the run (else nothing would have been checked)
    moved = (pos != pos[0]).any(axis=0)
    assert moved.any() and (pos[1:] < pos[:-1]).any(axis=0)[moved].all()


def test_double_capacity_does_not_repeat_with_the_period(rng) -> None:
    """The check above can fail: two windows per ring drift against the clock period."""
    engine = StreamingEngine(model_of("sequnet-L4", rng), 1, backend="torch")
    g = engine.program.graph_period
    pos = positions_per_step(engine, torch.randint(0, CLASSES, (1, 2 * g), generator=rng))
    assert not np.array_equal(pos[:g], pos[g:])


def test_ring_capacity_rule() -> None:
    # level 0 of a 64-step graph period: the power of two holding the window
    assert ring_capacity(5, 0, 64, "period") == 5 - 1 + 8
    assert ring_capacity(4, 0, 64, "period") == 4 - 1 + 4  # a window that is a power of two
    assert ring_capacity(1, 0, 64, "period") == 1  # a 1x1 layer's ring: one frame, no shift
    # a coarse level written twice per graph period: a cycle of two writes
    assert ring_capacity(5, 5, 64, "period") == 5 - 1 + 2
    # written once per period: a shift register of exactly the window
    assert ring_capacity(5, 6, 64, "period") == 5
    assert ring_capacity(5, 0, 64, "double") == 10
    with pytest.raises(ValueError, match="unknown ring capacity 'triple'"):
        ring_capacity(5, 0, 64, "triple")


BACKENDS = ["torch"] + (["numba"] if numba_available() else [])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", KINDS)
def test_period_capacity_is_exact(kind: str, backend: str, rng) -> None:
    model = model_of(kind, rng)
    engine = StreamingEngine(model, 2, backend=backend, capacity="period")
    n = 2 * max(engine.program.graph_period, model.receptive_field) + 7
    x = torch.randint(0, CLASSES, (2, n), generator=rng)
    out = torch.empty(2, n, CLASSES)
    for i in range(0, n, 13):
        engine.feed(x[:, i : i + 13], out[:, i : i + 13])
    assert (out.double() - reference_logits(model, x)).abs().max().item() < 1e-4


def test_paper_wavenet_rings_at_batch_4096_fit_in_80_gb() -> None:
    """Sized on the meta device (nothing allocated): two windows per ring need 128 GiB."""
    model = build_network("wavenet", {"blocks": 4, "layers": 13})

    def ring_gib(capacity: str) -> float:
        program = build_program(model, 4096, "meta", torch.float32, capacity=capacity)
        return sum(r.data.numel() * r.data.element_size() for r in program.rings.values()) / 2**30

    assert ring_gib("double") > 80
    assert ring_gib("period") < 70


def test_frame_ring_refuses_an_empty_window_or_a_capacity_below_it(np_rng) -> None:
    from streamgen.engine.ring import FrameRing

    window = int(np_rng.integers(2, 40))
    with pytest.raises(ValueError, match="window must be >= 1"):
        FrameRing(1, 0, 3, dtype=torch.float32, device="cpu", capacity=3)
    with pytest.raises(ValueError, match="cannot hold a window"):
        FrameRing(1, window, 3, dtype=torch.float32, device="cpu", capacity=window - 1)
    ring = FrameRing(1, window, 3, dtype=torch.float32, device="cpu", capacity=window)
    assert ring.window().shape == (1, window, 3)  # the smallest capacity that holds it


@pytest.mark.parametrize("window,capacity", [(7, 9), (7, 8), (13, 16), (5, 10), (1, 3)],
                         ids=["overlap-2", "overlap-1", "overlap-3", "apart", "window-1"])
def test_a_rewind_keeps_the_newest_frames_without_a_temporary(
        window: int, capacity: int, monkeypatch: pytest.MonkeyPatch,
        rng: torch.Generator) -> None:
    """A short ring (capacity under two windows) overlaps itself when rewound: the newest
    ``window - 1`` frames still arrive at the front in order, with no copy of the ring made
    (a clone of the paper WaveNet's longest ring is 8 GiB at batch 4,096)."""
    from streamgen.engine.ring import FrameRing

    ring = FrameRing(2, window, 3, dtype=torch.float64, device="cpu", capacity=capacity)
    frames = torch.randn(2, 3 * capacity, 3, generator=rng, dtype=torch.float64)
    monkeypatch.setattr(torch.Tensor, "clone", lambda *a, **k: pytest.fail("cloned"))
    for t in range(frames.shape[1]):
        ring.slot().copy_(frames[:, t])
        ring.advance()
        assert torch.equal(ring.window(), frames[:, t - window + 1 : t + 1] if t >= window - 1
                           else torch.cat([torch.zeros(2, window - 1 - t, 3, dtype=torch.float64),
                                           frames[:, : t + 1]], 1))

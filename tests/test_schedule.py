"""The ring schedule: one graph period of plans with every position resolved
(streamgen.engine.schedule), checked against the rings' own moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine_reference import reference_logits
from streamgen.engine import StreamingEngine
from streamgen.engine.gpu import placed
from streamgen.engine.gpu.flat import flatten
from streamgen.engine.plan import HEAD, Advance, Copy, Input, Layer
from streamgen.engine.program import StepProgram, build_program
from streamgen.engine.schedule import align_rings, ring_schedule
from test_capacity import CLASSES, KINDS, model_of

COL = {name: i for i, name in enumerate(placed.COLUMNS)}  # a placed row's columns by name


@pytest.mark.parametrize("kind", KINDS)
def test_schedule_positions_are_the_rings_positions(kind: str, rng: torch.Generator) -> None:
    """Positions before every step over two graph periods of the torch executor (which moves
    the rings itself)."""
    engine = StreamingEngine(model_of(kind, rng), 2, backend="torch", capacity="period")
    program = engine.program
    schedule = ring_schedule(program)
    g = schedule.period
    assert g == program.graph_period
    assert schedule.positions.shape == (g + 1, len(program.rings))  # every phase, and the next
    x = torch.randint(0, CLASSES, (2, 2 * g), generator=rng)
    for t in range(2 * g):
        assert np.array_equal(program.positions.array, schedule.positions[t % g]), t
        engine.feed(x[:, t : t + 1])
    assert np.array_equal(program.positions.array, schedule.positions[0])


@pytest.mark.parametrize("kind", KINDS)
def test_placed_frames_are_the_rings_frames(kind: str, rng: torch.Generator) -> None:
    """Walking the schedule with the rings' own methods: each op reads the newest frame and
    writes the slot that FrameRing says, and the rewinds happen where it rewinds, copying the
    frames it copies (what the GPU kernels' op tables are compiled from)."""
    program = build_program(model_of(kind, rng), 1, capacity="period")
    schedule = ring_schedule(program)
    rings = program.rings
    names = list(rings)
    for ring in rings.values():  # a distinct value in every frame: a wrong source shows
        ring.data.copy_(torch.randint(0, 1 << 20, ring.data.shape, generator=rng))
    rewinds = 0
    for p in (q for step in schedule.steps for q in step):  # each op where the schedule puts it
        op = p.op
        if isinstance(op, Advance):
            rings[op.ring].advance()
            continue
        if isinstance(op, (Layer, Copy)):
            assert p.newest == rings[op.ring if isinstance(op, Layer) else op.src].pos
        dst = program.input_ring if isinstance(op, Input) else getattr(op, "dst", HEAD)
        if dst == HEAD:
            assert p.slot is None and p.rewind is None
            continue
        ring = rings[dst]
        rewound = ring.pos + 1 == ring.capacity
        before = ring.data.clone()
        assert ring.slot().data_ptr() == ring.data[:, p.slot].data_ptr()
        assert (p.rewind is not None) == (rewound and ring.window_size > 1)
        if p.rewind is not None:
            rewinds += 1
            rw = p.rewind
            assert names[rw.ring] == dst
            assert rw.frames == ring.window_size - 1
            assert torch.equal(ring.data[:, : rw.frames], before[:, rw.src : rw.src + rw.frames])
        if isinstance(op, Input):
            ring.advance()
    assert rewinds > 0
    assert np.array_equal(program.positions.array, schedule.positions[0])


@pytest.mark.parametrize("kind", KINDS[:3])
def test_placed_layers_read_their_window_in_their_ring(kind: str, rng: torch.Generator) -> None:
    """Each placed layer row (``placed.placed_rows``) reads its ring's window: the last
    ``window`` frames (odd taps: ``window - 1``) up to its newest, inside the ring's buffer,
    and writes outside it (the kernels' simulators check this slowly, the WaveNet rows in
    minutes)."""
    program = build_program(model_of(kind, rng), 2, capacity="period")
    flat = flatten(program)
    layout, rows = flat.layout, flat.rows.numpy()
    spans = {name: (layout.at[name], layout.at[name] + layout.stride[name])  # stream 0's
             for name in program.rings if name != program.input_ring}
    wavenet = program.kind == "wavenet"
    checked = 0
    for row in rows[np.isin(rows[:, 0], (placed.OP_GATED, placed.OP_WAVENET))]:
        src, newest, dst = row[COL["src"]], row[COL["newest"]], row[COL["dst"]]
        (name, (lo, hi)), = [(n, s) for n, s in spans.items() if s[0] <= src < s[1]]
        ch, window = layout.channels[name], program.rings[name].window_size
        frames = window if row[0] == placed.OP_WAVENET else row[COL["n"]] // ch
        assert frames in ((window,) if wavenet else (window, window - 1)), name
        assert newest - src == (frames - 1) * ch and lo <= src and newest + ch <= hi, name
        assert not lo <= dst < hi, name
        checked += 1
    assert checked >= len(spans)


@pytest.mark.parametrize("kind", ["sequnet-L4", "sequnet-L3-k7"])
def test_copies_of_what_a_layer_just_wrote_become_its_second_destination(
        kind: str, rng: torch.Generator) -> None:
    """``placed.placed_rows`` fuses a copy of exactly the columns the layer row before it
    wrote into that row (``dst2``: one op less per step): some do fuse, no such copy is left
    as a row of its own."""
    program = build_program(model_of(kind, rng), 2, capacity="period")
    flat = flatten(program)
    rows, starts = flat.rows.numpy(), flat.starts.numpy()
    layers = np.isin(rows[:, 0], (placed.OP_EMBED, placed.OP_GATED))
    assert (rows[layers, COL["dst2"]] >= 0).sum() >= program.model.config.levels
    assert (rows[~layers, COL["dst2"]] == -1).all()
    for p in range(len(starts) - 1):
        for j in range(starts[p] + 1, starts[p + 1]):
            last, row = rows[j - 1], rows[j]
            if row[0] == placed.OP_COPY and last[0] in (placed.OP_EMBED, placed.OP_GATED):
                same = (last[COL["dst"]], last[COL["dst_stride"]], last[COL["width"]]) == (
                    row[COL["src"]], row[COL["stride"]], row[COL["n"]])
                assert not same, (p, j)


@pytest.mark.parametrize("kind", ["sequnet-L4", "wavenet"])
def test_a_plan_that_leaves_a_slot_unadvanced_has_no_schedule(kind: str, rng: torch.Generator,
                                                             np_rng) -> None:
    """A step that writes a ring's slot and never advances it is refused for that reason
    (``align_rings`` is exact only because no step leaves one pending)."""
    program = build_program(model_of(kind, rng), 1, capacity="period")
    phase = int(np_rng.integers(program.period))
    plan = list(program.plan[phase])
    advances = [i for i, op in enumerate(plan) if isinstance(op, Advance)]
    del plan[advances[int(np_rng.integers(len(advances)))]]
    program.plan = [plan if p == phase else ops for p, ops in enumerate(program.plan)]
    with pytest.raises(ValueError, match="written but not advanced"):
        ring_schedule(program)


def test_double_capacity_has_no_schedule(rng: torch.Generator) -> None:
    program = build_program(model_of("sequnet-L4", rng), 1, capacity="double")
    with pytest.raises(ValueError, match="capacity='period'"):
        ring_schedule(program)


def move_off_schedule(program: StepProgram) -> None:
    """Move every ring's window to the front of its buffer (a valid state off the schedule),
    poisoning the rest."""
    for ring in program.rings.values():
        w, pos = ring.window_size, ring.pos
        ring.data[:, :w] = ring.data[:, pos - w + 1 : pos + 1].clone()
        ring.data[:, w:] = float("nan") if ring.data.is_floating_point() else -1
        ring.pos = w - 1


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("split", [1, 37])
def test_align_rings_keeps_the_stream(kind: str, split: int, rng: torch.Generator) -> None:
    """Rings moved off the schedule (windows copied elsewhere) and aligned back: the stream
    continues exactly like the offline pass."""
    model = model_of(kind, rng)
    engine = StreamingEngine(model, 2, backend="torch", capacity="period")
    schedule = ring_schedule(engine.program)
    x = torch.randint(0, CLASSES, (2, split + 40), generator=rng)
    out = torch.empty(2, split + 40, CLASSES)
    engine.feed(x[:, :split], out[:, :split])
    move_off_schedule(engine.program)
    assert align_rings(engine.program, schedule, engine.t)
    assert not align_rings(engine.program, schedule, engine.t)
    engine.feed(x[:, split:], out[:, split:])
    want = reference_logits(model, x)
    assert (out.double() - want).abs().max().item() < 1e-4

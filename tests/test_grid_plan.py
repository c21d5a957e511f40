"""Where the grid kernel's blocks wait for each other (``streamgen.engine.gpu.grid_plan``):
handmade rows for each hazard, and whole programs against the rule stated pairwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_sequnet
from streamgen.engine import StreamingEngine
from streamgen.engine.gpu import placed
from streamgen.engine.gpu.flat import flatten
from streamgen.engine.gpu.grid_plan import Span, accesses, barriers, next_layer

HEAD = Span("frames", 900, 910)


def row(code: int, src: int = 0, dst: int = 0, n: int = 0, e: int = 0, newest: int = 0,
        dst2: int = -1) -> list[int]:
    """A placed row (``placed.COLUMNS``) with the fields the plan reads."""
    r = [0] * len(placed.COLUMNS)
    r[0], r[1], r[3], r[5], r[6], r[9], r[11] = code, src, dst, n, e, newest, dst2
    return r


def plan(*rows: list[int]) -> np.ndarray:
    """``barriers`` of one phase of ``rows`` and the head."""
    table = np.array(list(rows) + [row(placed.OP_HEAD)], dtype=np.int64)
    return barriers(table, np.array([0, len(table)]), HEAD)


GATED, COPY, EMBED, INPUT = placed.OP_GATED, placed.OP_COPY, placed.OP_EMBED, placed.OP_INPUT


def test_a_row_reading_what_another_block_wrote_waits() -> None:
    a = row(GATED, src=0, n=40, dst=100, e=8, newest=32)
    reads_a = row(GATED, src=96, n=12, dst=200, e=8, newest=104)
    elsewhere = row(GATED, src=0, n=40, dst=300, e=8, newest=32)
    assert plan(a, reads_a).tolist() == [0, 1, 0]
    assert plan(a, elsewhere).tolist() == [0, 0, 0]  # both only read what both read
    # the newest frame, the second destination and the head input are reads and writes too
    assert plan(a, row(GATED, src=0, n=8, dst=200, e=8, newest=100)).tolist() == [0, 1, 0]
    assert plan(row(GATED, src=0, n=8, dst=100, e=8, dst2=500),
                row(GATED, src=504, n=4, dst=200, e=8)).tolist() == [0, 1, 0]
    assert plan(row(GATED, src=0, n=8, dst=905, e=4)).tolist() == [0, 1]


def test_overwriting_what_another_block_reads_or_writes_waits() -> None:
    a = row(GATED, src=0, n=40, dst=100, e=8, newest=32)
    assert plan(a, row(COPY, src=500, dst=36, n=4)).tolist() == [0, 1, 0]  # over a's reads
    assert plan(a, row(COPY, src=500, dst=104, n=2)).tolist() == [0, 1, 0]  # over a's writes
    assert plan(a, row(COPY, src=500, dst=600, n=40)).tolist() == [0, 0, 0]


def test_every_block_writes_the_input_itself_but_not_over_a_pending_read() -> None:
    embed = row(EMBED, src=3, n=4, dst=100, e=8)
    assert plan(row(INPUT, dst=6), embed).tolist() == [0, 0, 0]
    assert plan(embed, row(INPUT, dst=6)).tolist() == [0, 1, 0]
    assert plan(embed, row(INPUT, dst=7)).tolist() == [0, 0, 0]
    # the index and the frames are different buffers
    assert plan(row(INPUT, dst=100), row(GATED, src=100, n=8, dst=300, e=8)).tolist() == [0, 0, 0]


def test_a_barrier_clears_what_is_pending() -> None:
    a = row(GATED, src=0, n=40, dst=100, e=8, newest=32)
    b = row(GATED, src=100, n=8, dst=200, e=8, newest=100)
    c = row(GATED, src=0, n=40, dst=300, e=8, newest=32)  # after b's barrier: a is done
    d = row(GATED, src=200, n=8, dst=400, e=8, newest=200)
    assert plan(a, b, c, d).tolist() == [0, 1, 0, 1, 0]


def test_phases_must_end_with_the_head_and_rows_not_read_their_output() -> None:
    with pytest.raises(ValueError, match="phase 0's rows do not end with the head"):
        barriers(np.array([row(GATED, n=8, dst=100, e=8)]), np.array([0, 1]), HEAD)
    twice = np.array([row(GATED, n=8, dst=100, e=8), row(placed.OP_HEAD), row(placed.OP_HEAD)])
    with pytest.raises(ValueError, match="phase 0's rows do not end with the head, and only"):
        barriers(twice, np.array([0, 3]), HEAD)
    with pytest.raises(ValueError, match="row 0 reads what it writes"):
        plan(row(GATED, src=0, n=8, dst=4, e=8))
    with pytest.raises(ValueError, match="runs no op 9"):
        accesses(np.array(row(9)), HEAD)


def test_what_every_block_computes_whole_is_read_without_waiting() -> None:
    embed = row(EMBED, src=3, n=4, dst=100, e=8)
    reads_embed = row(GATED, src=96, n=12, dst=200, e=8, newest=104)
    table = np.array([embed, reads_embed, row(placed.OP_HEAD)], dtype=np.int64)
    assert barriers(table, np.array([0, 3]), HEAD).tolist() == [0, 1, 0]
    assert barriers(table, np.array([0, 3]), HEAD, whole=(INPUT, EMBED)).tolist() == [0, 0, 0]
    # but not written over what another block may still read
    over = row(EMBED, src=3, n=4, dst=200, e=8)
    table = np.array([reads_embed, over, row(placed.OP_HEAD)], dtype=np.int64)
    assert barriers(table, np.array([0, 3]), HEAD, whole=(INPUT, EMBED)).tolist() == [0, 1, 0]


def test_without_a_wait_after_the_head_what_is_pending_carries_into_the_next_phase() -> None:
    """Phase 0 writes what phase 1 reads, phase 1 what phase 0 reads: with the kernel
    waiting after each head neither waits, without it both do (the last phase's pending
    accesses reach the first)."""
    head = row(placed.OP_HEAD)
    rows = np.array([row(GATED, src=0, n=8, dst=100, e=8), head,
                     row(GATED, src=100, n=8, dst=0, e=8, newest=100), head], dtype=np.int64)
    starts = np.array([0, 2, 4])
    assert barriers(rows, starts, HEAD).tolist() == [0, 0, 0, 0]
    assert barriers(rows, starts, HEAD, wait_after_head=False).tolist() == [1, 0, 1, 0]
    # a phase's own barrier clears what the phase before left pending (row 4 reads row 0's
    # output without waiting again), and the first row waits for row 4's read of what it
    # overwrites
    rows = np.array([row(GATED, src=0, n=8, dst=100, e=8), head,
                     row(GATED, src=300, n=8, dst=400, e=8, newest=300),
                     row(GATED, src=400, n=8, dst=500, e=8, newest=400),
                     row(GATED, src=100, n=8, dst=600, e=8, newest=100), head], dtype=np.int64)
    need = barriers(rows, np.array([0, 2, 6]), HEAD, wait_after_head=False)
    assert need.tolist() == [1, 0, 0, 1, 0, 0]


def test_wavenet_layers_wait_for_everything_before_them() -> None:
    wavenet = row(placed.OP_WAVENET, src=0, n=2, dst=100, e=0)
    assert plan(row(INPUT, dst=3), wavenet, wavenet).tolist() == [0, 0, 1, 1]
    assert plan(row(EMBED, src=3, n=4, dst=500, e=8), wavenet).tolist() == [0, 1, 1]


def test_next_layer_names_the_rows_to_load_ahead() -> None:
    """Positions count from each phase's first row; no layer ahead in a phase is -1."""
    rows = np.array([row(INPUT), row(EMBED), row(GATED), row(COPY), row(placed.OP_WAVENET),
                     row(placed.OP_HEAD), row(GATED), row(placed.OP_HEAD),
                     row(INPUT), row(COPY), row(GATED), row(placed.OP_HEAD)])
    assert next_layer(rows, np.array([0, 6, 8, 12])).tolist() == [
        2, 2, 4, 4, -1, -1, -1, -1, 2, 2, -1, -1]


def test_accesses_of_each_op_by_hand() -> None:
    """What each op reads and writes, element ranges written out: the programs' tests below
    state the rule through ``accesses`` itself, so it is checked here on its own."""
    def spans(*args: tuple) -> list[Span]:
        return [Span(*a) for a in args]

    def of(r: list[int]) -> tuple[list[Span], list[Span]]:
        return accesses(np.array(r, dtype=np.int64), HEAD)

    assert of(row(INPUT, src=9, dst=6, n=3, e=5)) == ([], spans(("index", 6, 7)))
    assert of(row(EMBED, src=3, n=4, dst=100, e=8, dst2=0)) == (
        spans(("index", 3, 7)), spans(("frames", 100, 108), ("frames", 0, 8)))
    assert of(row(GATED, src=10, n=40, dst=100, e=6, newest=46)) == (
        spans(("frames", 10, 50), ("frames", 46, 52)), spans(("frames", 100, 106)))
    assert of(row(GATED, src=10, n=40, dst=100, e=6, newest=46, dst2=300))[1] == spans(
        ("frames", 100, 106), ("frames", 300, 306))
    assert of(row(COPY, src=500, dst=36, n=4, e=2)) == (spans(("frames", 500, 504)),
                                                       spans(("frames", 36, 40)))
    assert of(row(placed.OP_ICOPY, src=12, dst=0, n=5)) == (spans(("index", 12, 17)),
                                                           spans(("index", 0, 5)))
    assert of(row(placed.OP_HEAD, src=1, dst=2, n=3, e=4)) == ([HEAD], [])
    every = Span("frames", 0, 1 << 62)
    assert of(row(placed.OP_WAVENET, src=0, n=2, dst=100, e=3)) == ([every], [every])


def test_spans_overlap_only_where_they_share_an_element() -> None:
    a = Span("frames", 10, 14)
    assert a.overlaps(Span("frames", 13, 20)) and Span("frames", 13, 20).overlaps(a)
    assert a.overlaps(Span("frames", 0, 11)) and a.overlaps(Span("frames", 11, 12))
    assert not a.overlaps(Span("frames", 14, 20)) and not Span("frames", 14, 20).overlaps(a)
    assert not a.overlaps(Span("frames", 0, 10)) and not a.overlaps(Span("index", 10, 14))


def _conflict(a: np.ndarray, b: np.ndarray, head: Span,
              whole: tuple[int, ...] = (INPUT,)) -> bool:
    """Whether row ``b`` after row ``a`` needs a barrier between them, stated pairwise
    (``whole``: the ops every block performs whole)."""
    (ra, wa), (rb, wb) = accesses(a, head), accesses(b, head)
    raw = a[0] not in whole and any(w.overlaps(r) for w in wa for r in rb)
    return raw or any(w.overlaps(x) for w in wb for x in ra + wa)


@pytest.mark.parametrize("cfg", [(4, 2, 1, 3), (6, 3, 2, 5), (5, 4, 1, 7)],
                         ids=lambda c: "C{}-L{}-D{}-k{}".format(*c))
def test_programs_wait_exactly_where_two_rows_conflict(cfg: tuple, rng: torch.Generator) -> None:
    """Every conflicting pair of rows of a phase has a barrier between them, and every
    barrier separates its row from a conflicting one since the barrier before."""
    engine = StreamingEngine(random_sequnet(cfg, 16, rng), 2, backend="torch",
                             capacity="period")
    flat = flatten(engine.program)
    rows, starts = flat.rows.numpy(), flat.starts.numpy()
    head = Span("frames", flat.head_at, flat.head_at + flat.head_width)
    need = barriers(rows, starts, head)
    assert need.sum() > 0
    for p in range(len(starts) - 1):
        lo, hi = starts[p], starts[p + 1]
        for j in range(lo, hi):
            for i in range(lo, j):
                if _conflict(rows[i], rows[j], head):
                    assert need[i + 1 : j + 1].any(), (p, i, j)
            if need[j]:
                last = max([lo] + [k for k in range(lo, j) if need[k]])
                assert any(_conflict(rows[i], rows[j], head) for i in range(last, j)), (p, j)


@pytest.mark.parametrize("cfg", [(4, 2, 1, 3), (6, 3, 2, 5)],
                         ids=lambda c: "C{}-L{}-D{}-k{}".format(*c))
def test_programs_without_head_waits_separate_every_conflict_across_phases(
        cfg: tuple, rng: torch.Generator) -> None:
    """Every block computing the embedding and the head whole: over two periods of rows
    one after another, every conflicting pair has a barrier between them."""
    engine = StreamingEngine(random_sequnet(cfg, 16, rng), 2, backend="torch",
                             capacity="period")
    flat = flatten(engine.program)
    rows, starts = flat.rows.numpy(), flat.starts.numpy()
    head = Span("frames", flat.head_at, flat.head_at + flat.head_width)
    whole = (INPUT, EMBED)
    need = barriers(rows, starts, head, whole=whole, wait_after_head=False)
    assert 0 < need.sum() < barriers(rows, starts, head).sum() + len(starts) - 1
    order = np.concatenate([rows, rows])
    waits = np.concatenate([need, need])
    for j in range(len(rows), len(order)):
        i = j - 1
        while i >= 0 and not waits[i + 1 : j + 1].any():
            assert not _conflict(order[i], order[j], head, whole), (i, j)
            i -= 1

"""Streams split into groups that the numba kernels run on threads of their own.

Every stream's step reads and writes only that stream's rows of the rings and buffers, so
contiguous groups of streams run side by side (the kernels release the GIL) and give the same
numbers as one group. Ring positions are the one thing the streams share: every group moves
them alike during a block, so each keeps its own copy, and the first group's is the
program's own (what capture, reset, prime and state save/restore read and write). With a
thread to spare (fewer streams than threads: one stream on a multi-core machine), every
group runs on the pool and the calling thread does other work meanwhile (the numba executor
draws the groups' next noise). Each group draws its own streams' noise otherwise, on its own
thread.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable

import numpy as np

from streamgen.engine.fast import kernels
from streamgen.engine.fast.kernels import Compiled
from streamgen.engine.sampling import NOISE_BLOCK, Sampler

#: ``Compiled`` fields with a row per stream (and ``views``: each ring that has one).
PER_STREAM = ("index", "head_in", "skip", "hidden")
#: ``Compiled`` fields each group needs its own of: positions and scratch.
PER_GROUP = ("pos", "acc", "work")
#: The most noise a group holds in each of its two buffers, in numbers (1 MB: it stays in
#: cache beside the weights); at most ``NOISE_BLOCK`` steps.
NOISE_NUMBERS = 1 << 18


def noise_steps(streams: int, classes: int) -> int:
    """Steps of noise a group of ``streams`` holds at once."""
    return max(1, min(NOISE_BLOCK, NOISE_NUMBERS // (streams * classes)))


@dataclass
class StreamGroup:
    """Streams ``streams`` of a program: the kernels' view of it over their rows, the
    sampler's scratch (``kernels.sample_into``'s ``work``, ``bits``, ``at``), and two noise
    buffers ``(StreamGroups.noise_steps, streams, classes)`` with the (step, steps) each
    holds: runs of steps take them in turn, so one is drawn while the other is read."""

    streams: slice
    compiled: Compiled
    sampler_scratch: tuple[np.ndarray, np.ndarray, np.ndarray]
    noise: tuple[np.ndarray, np.ndarray]
    noise_held: list[tuple[int, int] | None]

    def noise_rows(self, sampler: Sampler, step: int, count: int, buffer: int) -> np.ndarray:
        """This group's noise of steps ``step...step + count`` in buffer ``buffer``: drawn
        there ahead (``draw``), or now."""
        if self.noise_held[buffer] == (step, count):
            return self.noise[buffer][:count]
        return self.draw(sampler, step, count, buffer)

    def draw(self, sampler: Sampler, step: int, count: int, buffer: int) -> np.ndarray:
        """Draw this group's noise of steps ``step...step + count`` into buffer ``buffer``."""
        rows = self.noise[buffer][:count]
        self.noise_held[buffer] = None  # interrupted: holds nothing whole
        sampler.draw(step, rows, self.streams.start)
        self.noise_held[buffer] = (step, count)
        return rows


def _sampler_scratch(classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.zeros((4, classes), dtype=np.float32), np.zeros(classes, dtype=np.int32),
            np.zeros(classes, dtype=np.int64))


def _noise_buffers(steps: int, streams: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (steps, streams, classes)
    return np.zeros(shape, dtype=np.float32), np.zeros(shape, dtype=np.float32)


def _ring_rows(views: np.ndarray, streams: slice, batch: int) -> np.ndarray:
    """``views`` with each ring's frames narrowed to rows ``streams`` (C-contiguous: the
    ring's frames from the first row's on)."""
    views = views.copy()
    frames = views[:, kernels.VIEW_FRAMES]  # (R, 4): address, streams, capacity, channels
    has_rows = frames[:, 1] == batch
    row_bytes = frames[:, 2] * frames[:, 3] * np.dtype(np.float32).itemsize
    frames[has_rows, 0] += streams.start * row_bytes[has_rows]
    frames[has_rows, 1] = streams.stop - streams.start
    return views


def _over(compiled: Compiled, streams: slice, batch: int, first: bool) -> Compiled:
    """``compiled`` over rows ``streams``; the first group keeps the program's positions."""
    rows = {name: getattr(compiled, name)[streams] for name in PER_STREAM}
    own = {name: getattr(compiled, name).copy() for name in PER_GROUP
           if not (first and name == "pos")}
    return compiled._replace(views=_ring_rows(compiled.views, streams, batch), **rows, **own)


class StreamGroups:
    """A program's ``batch`` streams as at most ``threads`` contiguous groups of nearly equal
    size, run on a pool of threads (the calling thread runs the first group, or other work)."""

    def __init__(self, compiled: Compiled, batch: int, classes: int, threads: int) -> None:
        count = max(1, min(threads, batch))
        bounds = np.linspace(0, batch, count + 1).round().astype(int)
        streams = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]
        #: Steps of noise every group holds at once (the largest group's bound).
        self.noise_steps = noise_steps(max(s.stop - s.start for s in streams), classes)
        self.groups = [StreamGroup(s, compiled if count == 1 else _over(compiled, s, batch, i == 0),
                                   _sampler_scratch(classes),
                                   _noise_buffers(self.noise_steps, s.stop - s.start, classes),
                                   [None, None])
                       for i, s in enumerate(streams)]
        #: A thread to spare beside the groups' (fewer streams than threads): the groups all
        #: run on the pool then, leaving the calling thread free for other work.
        self.spare = threads > count
        self.workers = count if self.spare else count - 1
        #: The threads beside the calling one (started on demand).
        self.pool = ThreadPoolExecutor(self.workers) if self.workers else None

    def __len__(self) -> int:
        return len(self.groups)

    def run(self, step: Callable[[StreamGroup], None],
            meanwhile: Callable[[], None] | None = None) -> None:
        """``step(group)`` for every group at once, and ``meanwhile()`` on the calling thread
        where a thread is to spare (else the calling thread runs the first group and nothing
        else); returns when all are done."""
        first, rest = self.groups[0], self.groups[1:]
        beside = meanwhile if self.spare else None
        if self.pool is None or not (rest or beside):
            step(first)
            return
        for group in rest:
            group.compiled.pos[:] = first.compiled.pos
        futures: list[Future] = []
        try:
            for group in self.groups if beside else rest:
                futures.append(self.pool.submit(step, group))
        except KeyboardInterrupt:  # perhaps after a submit, before its append: wait for all
            pool, self.pool = self.pool, ThreadPoolExecutor(self.workers)
            _through_interrupts(pool.shutdown)
            raise
        try:
            beside() if beside else step(first)
        finally:
            _through_interrupts(lambda: wait(futures))
        for future in futures:
            future.result()


def _through_interrupts(waiting: Callable[[], object]) -> None:
    """``waiting()`` (for work on the pool) even through Ctrl-C, then let the interrupt go on:
    the pool's kernels write into arrays that the frames an interrupt unwinds would free under
    them (a run is a fraction of a second)."""
    interrupted = False
    while True:
        try:
            waiting()
            break
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        raise KeyboardInterrupt

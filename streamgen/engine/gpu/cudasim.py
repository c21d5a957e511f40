"""Warp shuffles and concurrent blocks for numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``),
which has neither.

The simulator runs each CUDA thread of a block as a Python thread and only knows block
barriers. A shuffle here is an exchange through boards shared by the block: every thread
posts its value, waits at a barrier, and reads its partner's. Two boards alternate, so one
barrier per shuffle suffices: a thread writes a board again only after the next barrier, which
every thread reaches after reading it. That is exact for the kernels of this package, whose
shuffles sit where every thread of the block reaches them
(``streamgen.engine.gpu.cuda_kernels``); a shuffle under a branch that only some threads take
would hang the simulator, as a barrier there would.

``install`` also makes the simulator's shared arrays safe to allocate from many threads at
once: it looks an allocation up by its source line and creates it if missing, unlocked, so
two threads switched between the two could each make their own "shared" array. Each block
gets arrays of its own (the simulator's are one set for the whole grid, which only works
while blocks run one after another).

The simulator runs a grid's blocks one after another, so a kernel whose blocks wait for each
other would hang there, and its grid sync is a block barrier. Within ``concurrent_blocks``
every block runs at once and ``cuda.cg.this_grid().sync()`` is a barrier over all the grid's
threads: what the grid kernel (``streamgen.engine.gpu.grid_kernels``) needs to run on the
CPU. Launched within ``cluster.compiled_in_clusters(n)``, its blocks also form clusters of
``n`` consecutive blocks, each with a barrier in two halves (``cluster_arrive``,
``cluster_wait``) as Hopper's ``barrier.cluster`` instructions. Its block and grid barriers
are ``Barrier``s (a lock the waiters hand on), where the simulator's block managers poll
their threads in a busy loop: the one-block kernel's tests run in three quarters of the time
through it. A shuffle costs a block barrier, so the kernels' warp reductions and scan, five or
ten shuffles each, run as one exchange each (``install``).
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from streamgen.engine.gpu import cluster


def _post(value) -> tuple[int, dict]:
    """``value`` posted by this thread on its block's board, after which the block meets at
    one barrier: (this thread's id, the board: every thread's value by thread id)."""
    me = threading.current_thread()
    calls = getattr(me, "_shuffles", 0)
    me._shuffles = calls + 1
    boards = me._manager.__dict__.setdefault("_shuffle_boards", ({}, {}))
    board = boards[calls % 2]
    board[me.thread_id] = value
    me.syncthreads()
    return me.thread_id, board


def _exchange(value, partner):
    """``value`` posted by this thread; returns the value that thread ``partner(tid)`` posted
    (this thread's own where that lane does not exist)."""
    tid, board = _post(value)
    src = partner(tid)
    return board.get(src, value) if src is not None else value


def shfl_xor_sync(self, mask, value, lane_mask):
    return _exchange(value, lambda tid: (tid & ~31) | ((tid & 31) ^ lane_mask))


def shfl_up_sync(self, mask, value, delta):
    return _exchange(value, lambda tid: tid - delta if (tid & 31) >= delta else None)


# Warp collectives at one barrier each. A shuffle costs the simulator a barrier of the whole
# block (every thread a Python thread), so the kernels' reductions, five or ten shuffles each,
# took most of its time. Here each thread posts its value once and replays the shuffles'
# steps over its warp's posted values: the same operations on the same values in the same
# order, so the results are the shuffles' to the bit (tests/test_cuda_sim.py compares them).

def _warp(value) -> tuple[int, dict[int, object]]:
    """(this thread's lane, its warp's posted values by lane)."""
    tid, board = _post(value)
    base = tid & ~31
    return tid & 31, {lane: board[base | lane] for lane in range(32) if base | lane in board}


def _butterfly(value, combine):
    """``value = combine(value, shfl_xor(value, m))`` for m = 16, 8, 4, 2, 1, replayed."""
    lane, values = _warp(value)
    for m in (16, 8, 4, 2, 1):
        values = {l: combine(v, values.get(l ^ m, v)) for l, v in values.items()}
    return values[lane]


def _warp_sum(v):
    return _butterfly(v, lambda a, b: a + b)


def _warp_max(v):
    return _butterfly(v, max)


def _warp_argmax_by(better):
    """The warp argmax with ``better`` (the kernels' rule: higher, or as high at a lower
    index) deciding each exchange of ``(value, index)``."""

    def warp_argmax(v, i):
        return _butterfly((v, i), lambda a, b: b if better(a[0], a[1], b[0], b[1]) else a)
    return warp_argmax


def _warp_scan(v, lane):
    """``y = shfl_up(v, d); v += y if lane >= d`` for d = 1, 2, 4, 8, 16, replayed."""
    me, values = _warp(v)
    for d in (1, 2, 4, 8, 16):
        values = {l: x + values[l - d] if l >= d else x for l, x in values.items()}
    return values[me]


#: The warp collectives of ``cuda_kernels`` as their shuffles compute them (device functions
#: of the simulator), kept by ``install`` when it gives the kernels the replays above.
SHUFFLED: dict[str, object] = {}


_allocating = threading.Lock()


def _shared_array(self, shape, dtype):
    """``FakeCUDAShared.array`` under a lock: one array per source line for the block."""
    from numba.core import types
    from numba.np import numpy_support

    if shape == 0:  # dynamic shared memory: one buffer made up front
        return _unlocked_shared_array(self, shape, dtype)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    block = threading.current_thread()._manager  # the thread's block
    with _allocating:
        allocations = block.__dict__.setdefault("_shared_arrays", {})
        res = allocations.get(caller)
        if res is None:
            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            res = allocations[caller] = np.empty(shape, dtype)
    return res


_unlocked_shared_array = None
_plain_add = None
_swaps: dict[int, list] = {}  # id(module globals) -> [calls inside, the names swapped]


@contextmanager
def _swapped_cuda_module(fn, fake_cuda_module) -> Iterator[None]:
    """The simulator's ``swapped_cuda_module`` (``fn``'s module sees the fake ``cuda`` while
    it runs), counted: the module's names go back when the last thread inside leaves. The
    simulator's own puts them back when the first one leaves, mid-call for the others,
    unless a kernel of that module holds them swapped for the whole launch, which a kernel
    calling another module's device functions does not."""
    from numba import cuda

    names = fn.__globals__
    with _allocating:
        entry = _swaps.get(id(names))
        if entry is None:
            swapped = {k: v for k, v in names.items() if v is cuda}
            names.update(dict.fromkeys(swapped, fake_cuda_module))
            entry = _swaps[id(names)] = [0, swapped]
        entry[0] += 1
    try:
        yield
    finally:
        with _allocating:
            entry[0] -= 1
            if entry[0] == 0:
                names.update(entry[1])
                del _swaps[id(names)]


def _polling_add(self, array, index, val):
    """``FakeCUDAAtomic.add``; an add of zero is a poll (the grid kernel's barriers wait that
    way: numba has no volatile load), so the thread first lets the others run, which a
    spinning Python thread would otherwise keep waiting for its whole switch interval."""
    if val == 0:
        time.sleep(0)
    return _plain_add(self, array, index, val)


def _grid_sync(self) -> None:
    """``GridGroup.sync``: a barrier over every thread of the grid within
    ``concurrent_blocks``, else the simulator's own (its grids then run one block at a
    time, so it is the block's barrier)."""
    me = threading.current_thread()
    grid = getattr(me._manager, "_grid", None)
    if grid is None:
        me.syncthreads()
    else:
        grid.wait()


class Barrier:
    """``threading.Barrier``'s ``wait`` and ``abort`` at a quarter of its cost with dozens of
    threads: the waiters of a round block on one lock that the last arrival releases, and
    each passes it on as it wakes (``threading.Barrier`` wakes them all through a condition,
    whose lock they then queue for, one by one)."""

    def __init__(self, parties: int) -> None:
        self.parties, self.arrived, self.broken = parties, 0, False
        self._mutex = threading.Lock()
        self._gate = self._closed()

    @staticmethod
    def _closed() -> threading.Lock:
        gate = threading.Lock()
        gate.acquire()
        return gate

    def wait(self) -> None:
        """Until every party has arrived in this round (``BrokenBarrierError`` once aborted)."""
        with self._mutex:
            if self.broken:
                raise threading.BrokenBarrierError
            gate = self._gate
            self.arrived += 1
            if self.arrived == self.parties:
                self.arrived, self._gate = 0, self._closed()
                gate.release()
                return
        gate.acquire()
        gate.release()
        if self.broken:
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        with self._mutex:
            if not self.broken:  # the round's waiters wake, and raise
                self.broken = True
                self._gate.release()


class SplitBarrier:
    """A barrier in two halves over ``parties`` threads: a thread's k-th ``wait`` returns once
    every party has called ``arrive`` k times (a thread arrives once before each wait). Each
    round has a gate like ``Barrier``'s, opened by its last arrival: the waiters pass it on
    instead of all waking at every arrival."""

    def __init__(self, parties: int) -> None:
        self.parties, self.broken = parties, False
        self._mutex = threading.Lock()
        self._arrived: dict[int, int] = {}  # round -> arrivals so far
        self._gates: dict[int, threading.Lock] = {}  # round -> its gate, closed until complete

    def _gate(self, k: int) -> threading.Lock:
        """Round ``k``'s gate (under ``_mutex``)."""
        if k not in self._gates:
            self._gates[k] = Barrier._closed()
        return self._gates[k]

    def arrive(self) -> None:
        me = threading.current_thread()
        k = me._arrivals = getattr(me, "_arrivals", 0) + 1
        with self._mutex:
            self._arrived[k] = self._arrived.get(k, 0) + 1
            if self._arrived[k] == self.parties and not self.broken:
                del self._arrived[k]
                self._gate(k).release()
                # every party arrived k times, so every one has passed wait k - 1
                self._gates.pop(k - 1, None)

    def wait(self, timeout: float = 600.0) -> None:
        """Until every party has arrived as often as this thread (a broken barrier, or
        ``timeout`` seconds without that, raise ``BrokenBarrierError``)."""
        k = threading.current_thread()._arrivals
        with self._mutex:
            if self.broken:
                raise threading.BrokenBarrierError
            gate = self._gate(k)
        if not gate.acquire(timeout=timeout):
            self.abort()
            raise threading.BrokenBarrierError
        gate.release()
        if self.broken:
            raise threading.BrokenBarrierError

    def abort(self) -> None:
        """Break the barrier: every waiter wakes and raises."""
        with self._mutex:
            if not self.broken:
                self.broken = True
                for k in self._arrived:  # the rounds not complete: their gates still closed
                    if k in self._gates:
                        self._gates[k].release()


def _cluster() -> SplitBarrier:
    """The split barrier of this thread's cluster (each block its own cluster outside
    ``compiled_in_clusters``, as on a GPU)."""
    manager = threading.current_thread()._manager
    return manager._clusters[manager._cluster_index]


def cluster_arrive() -> None:
    """``barrier.cluster.arrive``: this thread arrives at its cluster's barrier."""
    _cluster().arrive()


def cluster_wait() -> None:
    """``barrier.cluster.wait``: until every thread of the cluster has arrived as often as
    this one."""
    _cluster().wait()


def cluster_size() -> int:
    """The blocks in this thread's cluster (``%cluster_nctarank``)."""
    return threading.current_thread()._manager._cluster_blocks


def install() -> None:
    """Give the simulator's ``cuda`` module the shuffles and the grid sync, the kernels' warp
    collectives their one-barrier replays, its shared arrays a lock and a set per block, its
    module swaps a count, and its polls a yield (idempotent)."""
    global _unlocked_shared_array, _plain_add
    from numba.cuda.simulator import kernel
    from numba.cuda.simulator.kernelapi import (FakeCUDAAtomic, FakeCUDAModule, FakeCUDAShared,
                                                GridGroup)

    kernel.swapped_cuda_module = _swapped_cuda_module
    if FakeCUDAAtomic.add is not _polling_add:
        _plain_add = FakeCUDAAtomic.add
        FakeCUDAAtomic.add = _polling_add
    GridGroup.sync = _grid_sync
    FakeCUDAModule.shfl_xor_sync = shfl_xor_sync
    FakeCUDAModule.shfl_up_sync = shfl_up_sync
    if not SHUFFLED:
        from numba import cuda

        from streamgen.engine.gpu import cuda_kernels

        replays = {"warp_sum": _warp_sum, "warp_max": _warp_max, "warp_scan": _warp_scan,
                   "warp_argmax": _warp_argmax_by(cuda_kernels._better.fn)}
        for name, replay in replays.items():
            device_fn = getattr(cuda_kernels, name)
            SHUFFLED[name] = cuda.jit(device=True)(device_fn.fn)
            device_fn.fn = replay
    if FakeCUDAShared.array is not _shared_array:
        _unlocked_shared_array = FakeCUDAShared.array
        FakeCUDAShared.array = _shared_array


@contextmanager
def concurrent_blocks() -> Iterator[None]:
    """Launches of simulated kernels run all their blocks at once, each block's threads
    meeting at a ``Barrier`` (the simulator's block managers poll their threads in
    a busy loop instead, which several blocks at once make slow) and the grid sync at one
    over all the grid's threads. The simulator hands its managers the blocks one by one;
    here each manager only collects its block until it has them all. An error in any thread
    breaks every barrier, so the others stop too."""
    from numba.cuda.simulator import kernel as simulator

    plain = simulator.BlockManager
    pending: list = []

    class Thread(simulator.BlockThread):
        def syncthreads(self):
            self._manager._barrier.wait()

        def run(self):
            super().run()
            if self.exception:
                self._manager._barrier.abort()
                self._manager._grid.abort()
                for barrier in self._manager._clusters:
                    barrier.abort()

    class ConcurrentBlocks(plain):
        def run(self, grid_point, *args):
            pending.append((self, grid_point, args))
            blocks, threads = int(np.prod(self._grid_dim)), int(np.prod(self._block_dim))
            if len(pending) < blocks:
                return
            grid = Barrier(blocks * threads)
            size = cluster.launch_blocks() or 1
            if blocks % size:
                raise ValueError(f"{blocks} blocks do not form clusters of {size}")
            clusters = [SplitBarrier(size * threads) for _ in range(blocks // size)]
            runners = []
            for manager, point, block_args in pending:
                manager._grid, manager._barrier = grid, Barrier(threads)
                manager._clusters, manager._cluster_blocks = clusters, size
                manager._cluster_index = int(point[0]) // size  # grids along x
                for thread_point in np.ndindex(*self._block_dim):
                    runners.append(Thread(lambda m=manager, a=block_args: m._f(*a), manager, point,
                                          thread_point, manager._debug))
            pending.clear()
            for r in runners:
                r.start()
            for r in runners:
                r.join()
            errors = [r.exception for r in runners if r.exception]
            if errors:
                error, tb = next((e for e in errors
                                  if not isinstance(e[0], threading.BrokenBarrierError)), errors[0])
                raise error.with_traceback(tb)

    simulator.BlockManager = ConcurrentBlocks
    try:
        yield
    finally:
        simulator.BlockManager = plain
        pending.clear()

"""Warp shuffles for numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), which has none.

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
two threads switched between the two could each make their own "shared" array. Kernels with
thousands of barriers need Python to switch threads often (``fast_switching``), which makes
that race common.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Iterator

import numpy as np


def _exchange(value, partner):
    """``value`` posted by this thread; returns the value that thread ``partner(tid)`` posted
    (this thread's own where that lane does not exist)."""
    me = threading.current_thread()
    calls = getattr(me, "_shuffles", 0)
    me._shuffles = calls + 1
    boards = me._manager.__dict__.setdefault("_shuffle_boards", ({}, {}))
    board = boards[calls % 2]
    board[me.thread_id] = value
    me.syncthreads()
    src = partner(me.thread_id)
    return board.get(src, value) if src is not None else value


def shfl_xor_sync(self, mask, value, lane_mask):
    return _exchange(value, lambda tid: (tid & ~31) | ((tid & 31) ^ lane_mask))


def shfl_up_sync(self, mask, value, delta):
    return _exchange(value, lambda tid: tid - delta if (tid & 31) >= delta else None)


_allocating = threading.Lock()


def _shared_array(self, shape, dtype):
    """``FakeCUDAShared.array`` under a lock: one array per source line for the block."""
    from numba.core import types
    from numba.np import numpy_support

    if shape == 0:  # dynamic shared memory: one buffer made up front
        return _unlocked_shared_array(self, shape, dtype)
    frame = sys._getframe(1)
    caller = (frame.f_code.co_filename, frame.f_lineno)
    with _allocating:
        res = self._allocations.get(caller)
        if res is None:
            if isinstance(dtype, types.Type):
                dtype = numpy_support.as_dtype(dtype)
            res = self._allocations[caller] = np.empty(shape, dtype)
    return res


_unlocked_shared_array = None


def install() -> None:
    """Give the simulator's ``cuda`` module the shuffles, and its shared arrays a lock
    (idempotent)."""
    global _unlocked_shared_array
    from numba.cuda.simulator.kernelapi import FakeCUDAModule, FakeCUDAShared

    FakeCUDAModule.shfl_xor_sync = shfl_xor_sync
    FakeCUDAModule.shfl_up_sync = shfl_up_sync
    if FakeCUDAShared.array is not _shared_array:
        _unlocked_shared_array = FakeCUDAShared.array
        FakeCUDAShared.array = _shared_array


@contextmanager
def fast_switching(interval: float = 1e-6) -> Iterator[None]:
    """Barriers are many and short: let Python switch threads every ``interval`` seconds
    (not every 5 ms) while a simulated kernel runs: ten times faster."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        yield
    finally:
        sys.setswitchinterval(old)

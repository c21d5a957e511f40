"""A preallocated single-producer single-consumer ring of float32 samples.

Made for real-time audio: ``write`` and ``read_into`` only copy into / out of a fixed numpy
buffer (no allocation, no locks), so one side may run in a PortAudio callback. Exactly one
thread may write and exactly one thread may read; each side only advances its own counter and
publishes it after the copy, which is safe under CPython's GIL.
"""

from __future__ import annotations

import numpy as np


class SampleRing:
    """Bounded FIFO of float32 samples with lock-free single-producer single-consumer use."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"ring capacity must be >= 1 sample, got {capacity}")
        self._buf = np.zeros(capacity, dtype=np.float32)
        self._written = 0  # total samples ever written (advanced by the writer only)
        self._read = 0  # total samples ever read (advanced by the reader only)

    @property
    def capacity(self) -> int:
        return len(self._buf)

    @property
    def available(self) -> int:
        """Samples ready to read."""
        return self._written - self._read

    @property
    def free(self) -> int:
        """Samples that can be written without overwriting unread data."""
        return self.capacity - self.available

    def write(self, samples: np.ndarray) -> int:
        """Copy as many of ``samples`` as fit; return how many were written."""
        n = min(len(samples), self.free)
        start = self._written % self.capacity
        first = min(n, self.capacity - start)
        self._buf[start : start + first] = samples[:first]
        self._buf[: n - first] = samples[first:n]
        self._written += n
        return n

    def read_into(self, out: np.ndarray) -> int:
        """Copy up to ``len(out)`` samples into the front of ``out``; return how many."""
        n = min(len(out), self.available)
        start = self._read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self._buf[start : start + first]
        out[first:n] = self._buf[: n - first]
        self._read += n
        return n

"""Preallocated frame rings whose current window is always one contiguous slice.

A ring keeps the last ``window`` frames of one layer's input, per stream, in a linear buffer
of ``capacity >= window`` frames (two windows unless the program chooses otherwise, see
``streamgen.engine.program.ring_capacity``) that is rewound rarely: frames are written into
``slot()`` (index ``pos + 1``) and made the newest by ``advance()``; when the end is reached
the newest ``window - 1`` frames are copied to the front (once every ``capacity - window + 1``
writes; a ring of exactly ``window`` frames shifts on every write). Reading the window never
copies.

Every ring's ``pos`` lives in one int64 array shared by all rings of a program
(``RingPositions``), so the torch executor and the numba kernels move the same counters.
"""

from __future__ import annotations

import numpy as np
import torch


class RingPositions:
    """One int64 counter per ring, in creation order: the only copy of the rings' positions."""

    def __init__(self) -> None:
        self.array = np.zeros(0, dtype=np.int64)

    def add(self, initial: int) -> int:
        self.array = np.append(self.array, np.int64(initial))
        return len(self.array) - 1


class FrameRing:
    """``(batch, capacity, channels)`` storage; ``window()`` is a view of the last frames."""

    def __init__(
        self,
        batch: int,
        window: int,
        channels: int,
        *,
        dtype: torch.dtype,
        device: torch.device | str,
        capacity: int,
        positions: RingPositions | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        if capacity < window:
            raise ValueError(f"capacity {capacity} cannot hold a window of {window} frames")
        self.window_size = window
        self.capacity = capacity
        self.channels = channels
        self.data = torch.zeros(batch, self.capacity, channels, dtype=dtype, device=device)
        self._positions = positions if positions is not None else RingPositions()
        self.index = self._positions.add(window - 1)

    @property
    def pos(self) -> int:
        """Index of the newest frame."""
        return int(self._positions.array[self.index])

    @pos.setter
    def pos(self, value: int) -> None:
        self._positions.array[self.index] = value

    def slot(self) -> torch.Tensor:
        """``(batch, channels)`` view where the next frame is to be written (idempotent)."""
        pos = self.pos
        if pos + 1 == self.capacity:
            keep = self.window_size - 1
            # the newest keep frames to the front, in chunks that never overlap their own
            # source (a short ring overlaps itself): no temporary the size of the ring
            step = self.capacity - keep
            for i in range(0, keep, step):
                j = min(i + step, keep)
                self.data[:, i:j].copy_(self.data[:, step + i : step + j])
            pos = self.pos = keep - 1
        return self.data[:, pos + 1]

    def advance(self) -> None:
        """Make the frame written into ``slot()`` the newest one."""
        self._positions.array[self.index] += 1

    def newest(self) -> torch.Tensor:
        return self.data[:, self.pos]

    def frame(self, age: int) -> torch.Tensor:
        """The frame ``age`` writes before the newest (0 = newest)."""
        return self.data[:, self.pos - age]

    def window(self) -> torch.Tensor:
        """``(batch, window, channels)`` view, oldest first."""
        pos = self.pos
        return self.data[:, pos - self.window_size + 1 : pos + 1]

    def flat_window(self, last: int | None = None) -> torch.Tensor:
        """``(batch, n * channels)`` view of the last ``n`` frames (default: the whole window)."""
        n = self.window_size if last is None else last
        pos = self.pos
        return self.data[:, pos - n + 1 : pos + 1].reshape(self.data.shape[0], -1)

    def fill(self, frames: torch.Tensor, streams: torch.Tensor | None = None) -> None:
        """Overwrite the window of all streams (or of ``streams``) with ``(b, window, channels)``."""
        pos = self.pos
        lo, hi = pos - self.window_size + 1, pos + 1
        if streams is None:
            self.data[:, lo:hi].copy_(frames)
        else:
            self.data[streams, lo:hi] = frames.to(self.data.dtype)

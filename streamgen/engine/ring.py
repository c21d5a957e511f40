"""Preallocated frame rings whose current window is always one contiguous slice.

A ring keeps the last ``window`` frames of one layer's input, per stream, in a linear buffer
of ``capacity >= window + 1`` frames that is rewound rarely: frames are appended at
``pos + 1``; when the end is reached the newest ``window - 1`` frames are copied to the front
(once every ``capacity - window + 1`` writes). Reading the window never copies.
"""

from __future__ import annotations

import torch


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
        capacity: int | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window_size = window
        self.capacity = max(capacity or 2 * window, window + 1)
        self.channels = channels
        self.data = torch.zeros(batch, self.capacity, channels, dtype=dtype, device=device)
        self.pos = window - 1  # index of the newest frame

    def slot(self) -> torch.Tensor:
        """``(batch, channels)`` view where the next frame is to be written (idempotent)."""
        if self.pos + 1 == self.capacity:
            keep = self.window_size - 1
            if keep:
                self.data[:, :keep].copy_(self.data[:, self.capacity - keep :])
            self.pos = keep - 1
        return self.data[:, self.pos + 1]

    def advance(self) -> None:
        """Make the frame written into ``slot()`` the newest one."""
        self.pos += 1

    def push(self, frame: torch.Tensor) -> None:
        self.slot().copy_(frame)
        self.advance()

    def newest(self) -> torch.Tensor:
        return self.data[:, self.pos]

    def frame(self, age: int) -> torch.Tensor:
        """The frame ``age`` writes before the newest (0 = newest)."""
        return self.data[:, self.pos - age]

    def window(self) -> torch.Tensor:
        """``(batch, window, channels)`` view, oldest first."""
        return self.data[:, self.pos - self.window_size + 1 : self.pos + 1]

    def flat_window(self, last: int | None = None) -> torch.Tensor:
        """``(batch, n * channels)`` view of the last ``n`` frames (default: the whole window)."""
        n = self.window_size if last is None else last
        return self.data[:, self.pos - n + 1 : self.pos + 1].reshape(self.data.shape[0], -1)

    def fill(self, frames: torch.Tensor, streams: torch.Tensor | None = None) -> None:
        """Overwrite the window of all streams (or of ``streams``) with ``(b, window, channels)``."""
        lo, hi = self.pos - self.window_size + 1, self.pos + 1
        if streams is None:
            self.data[:, lo:hi].copy_(frames)
        else:
            self.data[streams, lo:hi] = frames.to(self.data.dtype)

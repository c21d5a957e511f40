"""The engine's clock: which levels run at a step, where each level's frames sit in time, and
the input indices that stand for "no sample".

Level ``l`` of a multi-rate network holds one frame every ``2**l`` samples, on a grid fixed in
absolute time: its frames are the times ``t`` with ``(t + 1) % 2**l == 0``. For three levels
(period 4)::

    t          0  1  2  3  4  5  6  7
    level 0    x  x  x  x  x  x  x  x
    level 1       x     x     x     x
    level 2             x           x
    top        0  1  0  2  0  1  0  2     (levels 0..top run at step t)

Step ``t`` runs levels ``0..top(t)``, ``top`` = the trailing one bits of ``t`` capped at the
coarsest level: the schedule repeats every ``period = 2**(levels-1)`` steps.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def trailing_ones(n: int) -> int:
    """Number of trailing one bits of ``n`` (``0b1011`` -> 2)."""
    count = 0
    while n & 1:
        n >>= 1
        count += 1
    return count


def top_level(t: int, levels: int) -> int:
    """The coarsest level that runs at step ``t``."""
    return min(trailing_ones(t), levels - 1)


def newest_frame_time(t: int, level: int) -> int:
    """The latest time ``<= t`` on ``level``'s grid (``(time + 1) % 2**level == 0``)."""
    step = 2**level
    return ((t + 1) // step) * step - 1


def zero_index(classes: int) -> int:
    """The input index of the all-zero vector: the history before a stream starts. It is one
    past the last class, so one-hot lookups read a zero row for it."""
    return classes


def one_hot(index: torch.Tensor, classes: int) -> torch.Tensor:
    """``(..., classes)`` one-hot vectors of ``index``; the zero vector for ``zero_index``."""
    return F.one_hot(index, zero_index(classes) + 1)[..., :classes]


def silence_class(classes: int) -> int:
    """The class fed to a stream that has no previous sample: the mu-law class of 0.0. (A real
    sample, unlike ``zero_index``: the network sees its one-hot vector.)"""
    return classes // 2

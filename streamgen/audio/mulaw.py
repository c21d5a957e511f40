"""Mu-law companding (ITU-T G.711 style, continuous form) to and from integer classes.

``mulaw_encode`` maps audio in [-1, 1] to classes 0..mu; ``mulaw_decode`` maps classes back
to the centre of each class's companded bin. Both accept torch tensors and numpy arrays and
return the same kind.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

ArrayLike = TypeVar("ArrayLike", torch.Tensor, np.ndarray)

MU = 255


def mulaw_encode(audio: ArrayLike, mu: int = MU) -> ArrayLike:
    """Compand float audio in [-1, 1] (clipped) to integer classes 0..mu (int64)."""
    if isinstance(audio, torch.Tensor):
        x = audio.to(torch.float64).clamp(-1.0, 1.0)
        y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)
        return torch.round((y + 1.0) / 2.0 * mu).to(torch.int64)
    x = np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    return np.round((y + 1.0) / 2.0 * mu).astype(np.int64)


def mulaw_decode(classes: ArrayLike, mu: int = MU) -> ArrayLike:
    """Expand integer classes 0..mu back to float32 audio in [-1, 1]."""
    if isinstance(classes, torch.Tensor):
        y = classes.to(torch.float64) / mu * 2.0 - 1.0
        x = torch.sign(y) * torch.expm1(y.abs() * math.log1p(mu)) / mu
        return x.to(torch.float32)
    y = np.asarray(classes, dtype=np.float64) / mu * 2.0 - 1.0
    x = np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
    return x.astype(np.float32)

"""Audio in, audio out: a trained model and the streaming engine as a block generator.

``AudioGenerator`` hides classes and logits: prime it with float audio, pull float32 blocks.
The command line (files, stdout, live playback) and Python users share it.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import nn

from streamgen.audio.mulaw import mulaw_decode, mulaw_encode
from streamgen.devices import resolve_device
from streamgen.engine import SamplingConfig, StreamingEngine


class AudioGenerator:
    """Free-running generation of ``batch`` independent streams of float32 audio."""

    def __init__(
        self,
        model: nn.Module,
        *,
        batch: int = 1,
        device: str | torch.device = "cpu",
        sampling: SamplingConfig | None = None,
        seed: int = 0,
        backend: str = "auto",
        prime: np.ndarray | None = None,
        start: str = "zeros",
        threads: int | None = None,
    ) -> None:
        """``start``: the history before the first sample (``StreamingEngine``'s ``STARTS``);
        ``threads``: the numba backend's threads for the streams (``StreamingEngine``'s)."""
        device = resolve_device(device)
        self.model = model.to(device).eval()
        self.engine = StreamingEngine(self.model, batch, device=device, backend=backend, start=start,
                                     threads=threads)
        self.sampler = self.engine.sampler(sampling, seed=seed)
        self.batch = batch
        self._out = torch.empty(0, dtype=torch.int64)
        self._host = torch.empty(0, dtype=torch.uint8)
        if prime is not None and len(prime):
            classes = mulaw_encode(torch.from_numpy(_mono_audio(prime)))
            self.engine.prime(classes.view(1, -1).expand(batch, -1).contiguous())
        self.generated = 0

    def __call__(self, n: int) -> np.ndarray:
        """The next ``n`` samples of every stream: float32 ``(batch, n)`` in [-1, 1]."""
        if self._out.shape != (self.batch, n):
            self._out = torch.empty(self.batch, n, dtype=torch.int64, device=self.engine.device)
        classes = self.engine.generate(n, self.sampler, self._out)
        self.generated += n
        return mulaw_decode(self._to_host(classes).numpy())

    def _to_host(self, classes: torch.Tensor) -> torch.Tensor:
        """The block's classes on the CPU; from a GPU as bytes (256 classes) through a pinned
        buffer, one small asynchronous copy waited for once."""
        if classes.device.type != "cuda":
            return classes
        small = classes.to(torch.uint8) if self.model.num_classes <= 256 else classes
        if self._host.shape != small.shape or self._host.dtype != small.dtype:
            self._host = torch.empty(small.shape, dtype=small.dtype, pin_memory=True)
        self._host.copy_(small, non_blocking=True)
        torch.cuda.current_stream(classes.device).synchronize()
        return self._host

    def blocks(self, total: int, block: int = 4096) -> Iterator[np.ndarray]:
        """``total`` samples per stream in blocks of at most ``block``."""
        if block < 1:
            raise ValueError(f"block must be at least 1 sample, got {block}")
        done = 0
        while done < total:
            n = min(block, total - done)
            yield self(n)
            done += n


def _mono_audio(prime: np.ndarray) -> np.ndarray:
    """``prime`` as float32 mono samples, refusing what would be misread: several channels
    (flattened, they interleave), integer PCM (clipped to +-1), NaN or infinite samples."""
    prime = np.asarray(prime)
    if prime.ndim != 1:
        raise ValueError(f"prime must be mono audio of shape (N,), got {prime.shape}; mix the "
                         "channels down first (e.g. audio.mean(axis=1))")
    if not np.issubdtype(prime.dtype, np.floating):
        raise ValueError(f"prime must be float audio in [-1, 1], got {prime.dtype} samples; "
                         "scale integer PCM first (int16: / 32768) or read the file with "
                         "streamgen.audio.io.load_audio")
    prime = prime.astype(np.float32)
    if not np.isfinite(prime).all():
        raise ValueError("prime holds NaN or infinite samples")
    return prime

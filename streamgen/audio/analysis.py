"""Is it music or noise? Spectral flatness and pitch salience of a clip.

- Spectral flatness: geometric over arithmetic mean of each frame's power spectrum (median
  over frames). White noise gives about exp(-euler_gamma) = 0.56; a harmonic tone, ~0.
- Pitch salience: height of the normalised autocorrelation peak at lags of 50-1000 Hz, per
  frame (median over voiced frames). A periodic tone gives close to 1; noise close to 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WHITE_NOISE_FLATNESS = float(np.exp(-np.euler_gamma))


@dataclass(frozen=True)
class Harmonicity:
    flatness: float
    salience: float
    voiced_fraction: float  # frames loud enough to judge (> -50 dB of the loudest)

    def is_tonal(self) -> bool:
        """Tonal, not noise: flatness a tenth of white noise's or less, clear pitch."""
        return self.flatness < 0.1 * WHITE_NOISE_FLATNESS and self.salience > 0.5


def _frames(audio: np.ndarray, size: int, hop: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float64)
    if len(audio) < size:
        audio = np.pad(audio, (0, size - len(audio)))
    return np.lib.stride_tricks.sliding_window_view(audio, size)[::hop]


def harmonicity(audio: np.ndarray, sample_rate: int, frame: int = 2048, hop: int = 512) -> Harmonicity:
    frames = _frames(audio, frame, hop)
    energy = (frames**2).mean(axis=1)
    loud = energy > energy.max() * 1e-5
    if not loud.any():
        return Harmonicity(1.0, 0.0, 0.0)
    frames = frames[loud] - frames[loud].mean(axis=1, keepdims=True)
    power = np.abs(np.fft.rfft(frames * np.hanning(frame), axis=1)) ** 2 + 1e-20
    flatness = np.exp(np.log(power).mean(axis=1)) / power.mean(axis=1)
    # autocorrelation by Wiener-Khinchin, zero-padded, normalised by lag 0 and by overlap
    spec = np.fft.rfft(frames, n=2 * frame, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :frame]
    ac = ac / np.maximum(ac[:, :1], 1e-20) * frame / (frame - np.arange(frame))
    lo, hi = int(sample_rate / 1000), min(int(sample_rate / 50), frame // 2)
    salience = ac[:, lo:hi].max(axis=1)
    return Harmonicity(float(np.median(flatness)), float(np.median(np.clip(salience, 0, 1))),
                       float(loud.mean()))

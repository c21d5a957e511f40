"""Pictures of audio: a log-frequency spectrogram saved as PNG (needs matplotlib)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def save_spectrogram(audio: np.ndarray, sample_rate: int, path: str | Path, title: str = "") -> Path:
    """Magnitude spectrogram in dB (1024-point STFT, hop 256) of mono ``audio``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_fft, hop = 1024, 256
    audio = np.asarray(audio, dtype=np.float32)
    if len(audio) < n_fft:
        audio = np.pad(audio, (0, n_fft - len(audio)))
    frames = np.lib.stride_tricks.sliding_window_view(audio, n_fft)[::hop] * np.hanning(n_fft)
    mag = np.abs(np.fft.rfft(frames, axis=-1)).T
    db = 20 * np.log10(np.maximum(mag, 1e-6))
    fig, ax = plt.subplots(figsize=(9, 4))
    times = np.arange(db.shape[1]) * hop / sample_rate
    freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
    mesh = ax.pcolormesh(times, freqs[1:], db[1:], shading="auto", cmap="magma",
                         vmin=db.max() - 80, vmax=db.max())
    ax.set(yscale="log", xlabel="time (s)", ylabel="frequency (Hz)", title=title)
    fig.colorbar(mesh, ax=ax, label="dB")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)

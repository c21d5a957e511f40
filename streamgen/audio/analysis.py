"""Is it music or noise? Spectral flatness and pitch salience of a clip; and what a listener
hears: a silent start, note onsets, distinct pitches (``clip_quality``).

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


# -- what a listener hears: silence at the start, notes, pitches (librosa, the train extra) --
SILENT_RMS = 0.01  # -40 dBFS: below it a stretch of audio counts as silent
FRAME_S = 0.05


def first_sound(audio: np.ndarray, sample_rate: int) -> float:
    """Seconds to the first 50 ms frame louder than ``SILENT_RMS`` (the clip length if none)."""
    hop = int(FRAME_S * sample_rate)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    loud = np.nonzero(np.sqrt((frames**2).mean(axis=1)) > SILENT_RMS)[0]
    return float(loud[0] * FRAME_S) if len(loud) else len(audio) / sample_rate


def silent_first_second(audio: np.ndarray, sample_rate: int) -> bool:
    """Whether the clip's first second has an RMS under ``SILENT_RMS``."""
    return bool(np.sqrt((np.asarray(audio, dtype=np.float64)[:sample_rate] ** 2).mean()) < SILENT_RMS)


def onsets_per_second(audio: np.ndarray, sample_rate: int, min_gap_s: float = 0.1) -> float:
    """Note onsets (librosa's spectral-flux onset detector, at least ``min_gap_s`` apart: one
    attack is one onset) per second of audio."""
    import librosa

    hop = 512
    onsets = librosa.onset.onset_detect(y=np.asarray(audio, dtype=np.float32), sr=sample_rate, hop_length=hop,
                                        wait=int(round(min_gap_s * sample_rate / hop)))
    return len(onsets) / (len(audio) / sample_rate)


def distinct_pitches(audio: np.ndarray, sample_rate: int, min_seconds: float = 0.1) -> int:
    """Semitones (C2-C6) that the predominant pitch (librosa's pYIN, voiced frames only) holds
    for at least ``min_seconds`` in total: the notes of the clearest voice."""
    import librosa

    hop = 256
    f0, voiced, _ = librosa.pyin(np.asarray(audio, dtype=np.float32), fmin=librosa.note_to_hz("C2"),
                                 fmax=librosa.note_to_hz("C6"), sr=sample_rate, frame_length=2048,
                                 hop_length=hop)
    notes = np.round(librosa.hz_to_midi(f0[voiced & np.isfinite(f0)])).astype(int)
    _, frames = np.unique(notes, return_counts=True)
    return int((frames >= max(1, round(min_seconds * sample_rate / hop))).sum())


@dataclass(frozen=True)
class ClipQuality:
    tonal: bool  # Harmonicity.is_tonal
    silent_first_second: bool  # RMS of the first second under SILENT_RMS
    first_sound_s: float
    onsets_per_s: float
    distinct_pitches: int


def clip_quality(audio: np.ndarray, sample_rate: int) -> ClipQuality:
    """The listener's checks of one clip (needs librosa)."""
    audio = np.asarray(audio, dtype=np.float64)
    return ClipQuality(harmonicity(audio, sample_rate).is_tonal(),
                       silent_first_second(audio, sample_rate),
                       first_sound(audio, sample_rate), onsets_per_second(audio, sample_rate),
                       distinct_pitches(audio, sample_rate))

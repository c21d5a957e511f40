"""The tonality check against signals whose answer is known."""

from __future__ import annotations

import numpy as np

from streamgen.audio import mulaw_decode, mulaw_encode
from streamgen.audio.analysis import WHITE_NOISE_FLATNESS, harmonicity

RATE = 16000


def piano_like(seconds: float, f0: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    partials = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 6)) / h**1.5 for h in range(1, 9))
    return 0.5 * partials * np.exp(-1.5 * t) / 2


def test_white_noise_is_flat_and_pitchless() -> None:
    rng = np.random.default_rng(0)
    h = harmonicity(rng.standard_normal(RATE * 2), RATE)
    assert abs(h.flatness - WHITE_NOISE_FLATNESS) < 0.05
    assert h.salience < 0.2 and not h.is_tonal()


def test_decaying_harmonic_tone_is_tonal() -> None:
    rng = np.random.default_rng(1)
    for f0 in [110.0, 261.6, 440.0, 880.0]:
        h = harmonicity(piano_like(2.0, f0, rng), RATE)
        assert h.flatness < 0.01 and h.salience > 0.9 and h.is_tonal(), (f0, h)


def test_mulaw_quantisation_does_not_hide_the_tone() -> None:
    rng = np.random.default_rng(2)
    tone = mulaw_decode(mulaw_encode(piano_like(2.0, 196.0, rng)))
    assert harmonicity(tone, RATE).is_tonal()
    noisy = tone + 0.3 * rng.standard_normal(len(tone))
    assert not harmonicity(noisy, RATE).is_tonal()


def test_silence_is_not_tonal() -> None:
    h = harmonicity(np.zeros(RATE), RATE)
    assert h.voiced_fraction == 0 and not h.is_tonal()

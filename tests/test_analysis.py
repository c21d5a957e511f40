"""The tonality check against signals whose answer is known."""

from __future__ import annotations

import numpy as np

from streamgen.audio import mulaw_decode, mulaw_encode
from streamgen.audio.analysis import WHITE_NOISE_FLATNESS, clip_quality, first_sound, harmonicity

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


def notes(pitches: list[float], seconds_each: float, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([piano_like(seconds_each, f0, rng) for f0 in pitches])


def test_listener_checks_count_notes_and_pitches_of_a_known_melody() -> None:
    rng = np.random.default_rng(3)
    # C4 E4 G4 C5 E4 G4 C4 E4: 8 notes of 0.5 s, 4 distinct pitches, sound from the start
    melody = notes([261.63, 329.63, 392.0, 523.25, 329.63, 392.0, 261.63, 329.63], 0.5, rng)
    q = clip_quality(mulaw_decode(mulaw_encode(melody)), RATE)
    assert q.tonal and not q.silent_first_second and q.first_sound_s == 0.0
    assert q.distinct_pitches == 4, q
    assert abs(q.onsets_per_s - 2.0) <= 0.25, q  # 8 onsets in 4 s (the first may be missed)


def test_listener_checks_of_a_late_start_and_of_noise() -> None:
    rng = np.random.default_rng(4)
    late = np.concatenate([np.zeros(int(1.5 * RATE)), notes([220.0, 330.0], 1.0, rng)])
    q = clip_quality(late, RATE)
    assert q.silent_first_second and q.first_sound_s == 1.5 and q.distinct_pitches == 2, q
    assert first_sound(np.zeros(RATE), RATE) == 1.0  # never: the clip's length
    noise = clip_quality(0.3 * rng.standard_normal(3 * RATE), RATE)
    assert not noise.tonal and noise.distinct_pitches <= 1, noise

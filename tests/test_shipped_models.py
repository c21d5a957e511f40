"""The models shipped in the zoo: they load, verify, stream, and (the bar) sound tonal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from streamgen.audio.analysis import WHITE_NOISE_FLATNESS, harmonicity
from streamgen.checkpoint import load_checkpoint
from streamgen.generation import AudioGenerator
from streamgen.zoo import list_models, packaged_zoo

SHIPPED = ["default", "wavenet-baseline"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_and_matches_its_card(name: str) -> None:
    zoo = packaged_zoo()
    assert zoo is not None and (zoo / name).is_dir(), f"models/{name} is not installed"
    assert name in {m.name for m in list_models()}
    model, info = load_checkpoint(zoo / name)  # verifies the sha256 and every shape
    assert info.params == model.num_parameters()
    assert info.receptive_field == model.receptive_field
    bits = info.training["val_bits_per_sample"]
    assert 0 < bits < 8  # learned something: uniform over 256 classes is 8 bits
    card = (zoo / name / "README.md").read_text()
    assert f"{bits:.3f} bits/sample" in card and f"{model.num_parameters():,}" in card
    audio, rate = sf.read(str(zoo / name / "example.wav"))
    assert rate == info.sample_rate and len(audio) >= rate
    assert (zoo / name / "example.png").read_bytes()[:4] == b"\x89PNG"


def test_default_is_a_realtime_sequnet() -> None:
    model, info = load_checkpoint(packaged_zoo() / "default")
    assert info.kind == "sequnet"
    baseline = json.loads((packaged_zoo() / "wavenet-baseline" / "config.json").read_text())
    # trained the same way as its baseline: one recipe, and steps fitted to the same GPU time
    keep = ("batch_size", "output_length", "lr", "lr_final", "grad_clip", "seed")
    assert {k: info.training[k] for k in keep} == {k: baseline["training"][k] for k in keep}
    assert abs(info.training["steps"] / baseline["training"]["steps"] - 1) < 0.02


def default_clip(seconds: float = 2.0) -> np.ndarray:
    model, info = load_checkpoint(packaged_zoo() / "default")
    return AudioGenerator(model, seed=0)(int(seconds * info.sample_rate))[0]


def test_default_model_output_is_not_white_noise() -> None:
    """A floor that the trained default clears: far flatter noise would mean broken weights."""
    h = harmonicity(default_clip(), 16000)
    assert h.flatness < 0.5 * 0.56 and h.voiced_fraction > 0.5


def test_default_model_is_tonal_with_its_recommended_sampling() -> None:
    """With the sampling it recommends, the shipped default's 3 s clips (seeds 0-2) all have
    a spectral flatness under a tenth of white noise's and a median pitch salience over 0.5.
    (It is marginal: single clips can fall just under 0.5 salience; see its model card.)"""
    model, info = load_checkpoint(packaged_zoo() / "default")
    sampling, rate = info.sampling, info.sample_rate
    found = [harmonicity(AudioGenerator(model, sampling=sampling, seed=seed)(3 * rate)[0], rate)
             for seed in range(3)]
    assert all(h.flatness < 0.1 * WHITE_NOISE_FLATNESS for h in found), found
    assert float(np.median([h.salience for h in found])) > 0.5, found
    plain = harmonicity(AudioGenerator(model, seed=0)(3 * rate)[0], rate)
    assert plain.flatness > max(h.flatness for h in found)  # nucleus sampling is what helps

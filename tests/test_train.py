"""Training data, the training loop (exact resume, DDP under torchrun) and the corpus builder."""

from __future__ import annotations

import hashlib

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from streamgen.audio.io import load_audio
from streamgen.audio.mulaw import mulaw_encode
from streamgen.checkpoint import load_checkpoint
from streamgen.train import corpus, data
from streamgen.train.data import EncodedAudio, TrainingData, find_audio_files, load_encoded, split_files
from streamgen.train import loop
from streamgen.train.loop import (
    LOG_FILE, ResumeConflict, TrainConfig, TrainingInterrupted, fit, fit_to_budget, train,
)

ROOT = Path(__file__).resolve().parents[1]
# input_length(56) of this net gives 60 outputs: the loop must score the newest 56.
TINY_SEQUNET = {"channels": 8, "levels": 4, "depth": 2}


def write_tone(path: Path, sr: int, seconds: float, freq: float, seed: int) -> None:
    """Stereo tone with a little noise, so that resampling and mixing are exercised."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sr * seconds)) / sr
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    stereo = np.stack([tone, 0.6 * tone], axis=1) + 0.01 * rng.standard_normal((len(t), 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, stereo, sr)


pytestmark = pytest.mark.usefixtures("one_thread")  # from conftest


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audio")
    for i in range(6):
        sr = 22050 if i % 2 else 44100
        ext = "flac" if i % 3 == 0 else "wav"
        write_tone(root / f"set{i % 2}" / f"tone{i}.{ext}", sr, 1.0, 200.0 + 40 * i, seed=i)
    (root / "notes.txt").write_text("not audio")
    write_tone(root / ".hidden" / "skip.wav", 16000, 0.1, 100.0, seed=9)
    return root


def read_log(out_dir: str | Path) -> list[dict]:
    """The records of a run's training log."""
    return [json.loads(line) for line in (Path(out_dir) / LOG_FILE).read_text().splitlines()]


def config(tmp_path: Path, audio_dir: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        data=str(audio_dir), out_dir=str(tmp_path / "run"), kind="sequnet", model=TINY_SEQUNET,
        output_length=60, batch_size=4, steps=6, lr=3e-3, val_windows=4, val_every=3,
        checkpoint_every=3, log_every=2, cache_dir=str(tmp_path.parent / "cache"), progress=False,
    )
    return replace(base, **changes)


# -- data ----------------------------------------------------------------------------------
def test_find_and_split_are_deterministic_and_disjoint(audio_dir: Path) -> None:
    files = find_audio_files(audio_dir)
    assert len(files) == 6 and all(".hidden" not in str(f) for f in files)
    split = split_files(audio_dir, val_fraction=0.34)
    assert split == split_files(audio_dir, val_fraction=0.34)
    assert len(split.validation) == 2 and sorted(split.train + split.validation) == files
    assert len(split_files(audio_dir, val_fraction=0.01).validation) == 1
    assert split_files(audio_dir, val_fraction=0.0).validation == []
    assert len(split_files(audio_dir, val_fraction=0.99).train) == 1  # one is always left
    explicit = split_files(audio_dir, val_files=["set0/tone0.flac"])
    assert explicit.validation == [audio_dir / "set0/tone0.flac"] and len(explicit.train) == 5
    with pytest.raises(FileNotFoundError, match="not found"):
        split_files(audio_dir, val_files=["nope.wav"])
    both = split_files(str(audio_dir), train_files=[str(files[3]), "set1/tone1.wav"],
                       val_files=[files[5]])  # relative or absolute, in the order given
    assert both.train == [files[3], audio_dir / "set1/tone1.wav"] and both.validation == [files[5]]
    assert split_files(str(audio_dir), val_fraction=0.34) == split  # a root given as text
    assert find_audio_files(str(audio_dir)) == files
    for fraction in (1.0, -0.1):
        with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
            split_files(audio_dir, val_fraction=fraction)


def test_manifest_split_wins(tmp_path: Path) -> None:
    """The corpus builder's manifest (only its own format: any other JSON there is not ours)
    gives the split; a manifest whose lists are not lists of paths is one error."""
    for name in ["a", "b", "c"]:
        write_tone(tmp_path / "wav" / f"{name}.wav", 16000, 0.1, 300.0, seed=0)
    manifest = {"format": corpus.MANIFEST_FORMAT, "train": ["wav/a.wav", "wav/c.wav"], "validation": ["wav/b.wav"]}
    (tmp_path / corpus.MANIFEST).write_text(json.dumps(manifest))
    split = split_files(tmp_path, val_fraction=0.5)
    assert split.train == [tmp_path / "wav/a.wav", tmp_path / "wav/c.wav"]
    assert split.validation == [tmp_path / "wav/b.wav"]
    for other in ([manifest], manifest | {"format": "someone-elses"}):
        (tmp_path / corpus.MANIFEST).write_text(json.dumps(other))
        assert split_files(tmp_path, val_fraction=0.5).hashed
    for lists in ({"train": "wav/a.wav"}, {"validation": [["wav/b.wav"]]}):
        (tmp_path / corpus.MANIFEST).write_text(json.dumps(manifest | lists))
        with pytest.raises(ValueError, match="'train' and 'validation' must be lists of file paths"):
            split_files(tmp_path)


def test_the_encoding_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """$STREAMGEN_CACHE, else $XDG_CACHE_HOME/streamgen, else ~/.cache/streamgen."""
    for name in ("STREAMGEN_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "streamgen"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "streamgen"
    monkeypatch.setenv("STREAMGEN_CACHE", str(tmp_path / "mine"))
    assert data.default_cache_dir() == tmp_path / "mine"


def test_encoding_is_cached_and_invalidated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tone.wav"
    write_tone(path, 22050, 0.5, 330.0, seed=1)
    expected = mulaw_encode(load_audio(path, 16000))
    first = load_encoded(path, 16000, tmp_path / "cache")
    assert first.dtype == np.uint8 and np.array_equal(first, expected)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(data, "load_audio", no_decoding)
    assert np.array_equal(load_encoded(path, 16000, tmp_path / "cache"), first)
    monkeypatch.chdir(tmp_path)  # the same file by a relative path is the same entry
    assert np.array_equal(load_encoded("tone.wav", 16000, tmp_path / "cache"), first)
    with pytest.raises(AssertionError, match="decoded"):
        load_encoded(path, 8000, tmp_path / "cache")  # another sample rate is another entry
    write_tone(path, 22050, 0.6, 330.0, seed=2)  # file changed: size and mtime differ
    with pytest.raises(AssertionError, match="decoded"):
        load_encoded(path, 16000, tmp_path / "cache")


def test_windows_pair_inputs_with_next_samples(audio_dir: Path, tmp_path: Path) -> None:
    files = find_audio_files(audio_dir)[:3]
    dataset = EncodedAudio([str(f) for f in files], [load_encoded(f, 16000, tmp_path / "cache") for f in files])
    rng = np.random.default_rng(0)
    in_len, out_len = 300, 64
    positions = dataset.draw_positions(rng, 50, in_len + 1)
    x, y = dataset.windows(positions, in_len, out_len)
    assert x.shape == (50, in_len) and y.shape == (50, out_len) and x.dtype == np.int64
    for (track, start), xi, yi in zip(positions, x, y):
        samples = dataset.tracks[track]
        assert start + in_len + 1 <= len(samples)
        assert np.array_equal(xi, samples[start : start + in_len])
        # Output j sits at input position in_len - out_len + j and predicts the next sample.
        for j in (0, out_len // 2, out_len - 1):
            assert yi[j] == samples[start + in_len - out_len + j + 1]
    assert np.array_equal(y[:, :-1], x[:, in_len - out_len + 1 :])


def test_positions_are_uniform_over_all_windows(tmp_path: Path) -> None:
    dataset = EncodedAudio(["a", "b", "c"], [np.zeros(100, np.uint8), np.zeros(30, np.uint8), np.zeros(300, np.uint8)])
    positions = dataset.draw_positions(np.random.default_rng(1), 40000, 50)
    counts = np.bincount(positions[:, 0], minlength=3) / len(positions)
    assert counts[1] == 0 and abs(counts[0] - 51 / 302) < 0.01 and abs(counts[2] - 251 / 302) < 0.01
    assert positions[positions[:, 0] == 2, 1].max() == 250 and positions[:, 1].min() == 0
    with pytest.raises(ValueError, match="no audio file holds a window of 400"):
        dataset.draw_positions(np.random.default_rng(1), 1, 400)


def test_window_positions_listed_by_hand() -> None:
    """Tracks small enough to list their windows: the draw covers every window start (a track
    exactly one window long included, one too short never), the target blocks tile each track
    to its last sample, and validation windows are spread over every whole window."""
    audio = EncodedAudio(["a", "b", "c"], [np.arange(n, dtype=np.uint8) for n in (3, 7, 2)])
    pairs, counts = np.unique(audio.draw_positions(np.random.default_rng(2), 3000, 3), axis=0,
                              return_counts=True)
    assert pairs.tolist() == [[0, 0], [1, 0], [1, 1], [1, 2], [1, 3], [1, 4]]
    assert counts.min() > 0.8 * 3000 / 6
    ten = EncodedAudio(["t"], [np.arange(10, dtype=np.uint8)])
    for first, every, targets in ((4, 1, [4, 6, 8]), (4, 2, [4, 8]), (5, 1, [5, 7])):  # 4 inputs
        positions = ten.target_positions(first, 4, 2, every)  # blocks of 2 from sample first
        assert positions.tolist() == [[0, t - 3] for t in targets]
        _, y = ten.windows(positions, 4, 2)
        assert y.tolist() == [[t, t + 1] for t in targets]  # none past sample 9
    # windows of 3 (2 inputs) every 2 samples: (a, 0), (b, 0), (b, 2), (b, 4)
    for count, want in ((8, [[0, 0], [1, 0], [1, 2], [1, 4]]), (3, [[0, 0], [1, 2], [1, 4]]),
                        (2, [[0, 0], [1, 4]])):
        assert audio.validation_positions(count, 2, 2).tolist() == want


def test_the_data_hash_covers_names_and_split() -> None:
    """The same samples under another split or name are other data (a resume refuses them)."""
    tracks = [np.arange(n, dtype=np.uint8) for n in (5, 6, 7)]

    def made(train: list[str], val: list[str], names: str = "xyz") -> TrainingData:
        pick = {name: track for name, track in zip(names, tracks)}
        return TrainingData(EncodedAudio(train, [pick[n] for n in train]),
                            EncodedAudio(val, [pick[n] for n in val]), 16000, "audio folder", "s")

    hashes = [made(["x", "y"], ["z"]).sha256(), made(["x"], ["y", "z"]).sha256(),
              made(["x", "w"], ["z"], "xwz").sha256(), made(["x", "y"], ["z"]).sha256()]
    assert len(set(hashes[:3])) == 3 and hashes[3] == hashes[0]


# -- the loop --------------------------------------------------------------------------------
def test_start_windows_begin_before_tracks_with_silence() -> None:
    """A share of windows starts 1..lead samples before a track: silence class there, the
    track's first samples after, every target a real sample; none without the option, and
    then the same windows as before (no extra random draws)."""
    tracks = [np.arange(i * 40, i * 40 + 40, dtype=np.uint8) for i in range(3)]
    audio = EncodedAudio(["a", "b", "c"], tracks)
    n_in, n_out = 12, 4
    lead = n_in + 1 - n_out
    rngs = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(2):  # and the next draws too
        plain = audio.draw_positions(rngs[0], 500, n_in + 1)
        same = audio.draw_positions(rngs[1], 500, n_in + 1, lead=lead)
        assert np.array_equal(plain, same) and (plain[:, 1] >= 0).all()
    mixed = audio.draw_positions(np.random.default_rng(5), 2000, n_in + 1, lead=lead,
                                 lead_fraction=0.25)
    early = mixed[:, 1] < 0
    assert 0.2 < early.mean() < 0.3 and set(-mixed[early, 1]) == set(range(1, lead + 1))
    x, y = audio.windows(mixed[early], n_in, n_out)
    for (t, s), xi, yi in zip(mixed[early], x, y):
        assert (xi[: -s] == data.SILENCE).all() and data.SILENCE == 128
        assert np.array_equal(xi[-s:], tracks[t][: n_in + s])
        assert np.array_equal(yi, tracks[t][n_in + 1 - n_out + s : n_in + 1 + s])  # real samples
    uneven = EncodedAudio(["a", "long", "short"], [tracks[0], np.zeros(400, np.uint8), tracks[1][: n_in]])
    starts = uneven.draw_positions(np.random.default_rng(6), 4000, n_in + 1, lead=lead, lead_fraction=1)
    share = np.bincount(starts[:, 0], minlength=3) / len(starts)
    assert abs(share[0] - 0.5) < 0.04 and share[2] == 0  # uniform over the tracks a window fits
    assert set(-starts[:, 1]) == set(range(1, lead + 1))  # all of them before their track
    with pytest.raises(ValueError, match="start_windows"):
        TrainConfig(data="d", out_dir="o", start_windows=1.5)


def test_training_passes_start_windows_to_the_window_draw(audio_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    draw = EncodedAudio.draw_positions

    def spy(self, rng, count, window, lead=0, lead_fraction=0.0):
        seen.append((window, lead, lead_fraction))
        return draw(self, rng, count, window, lead, lead_fraction)

    monkeypatch.setattr(EncodedAudio, "draw_positions", spy)
    cfg = config(tmp_path, audio_dir, steps=2, val_every=100, checkpoint_every=100,
                 output_length=50, start_windows=0.5)
    model, info = load_checkpoint(train(cfg))
    window = model.input_length(56) + 1
    assert seen == [(window, window - 56, 0.5)] * 2  # every target a real sample
    assert info.training["train_config"]["start_windows"] == 0.5


def test_training_lowers_validation_nll_and_saves_a_checkpoint(audio_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, audio_dir, steps=40, val_every=40, checkpoint_every=100, output_length=50)
    out = train(cfg)
    log = read_log(out)
    vals = [r for r in log if "val_nll_nats" in r]
    assert [r["step"] for r in vals] == [0, 40]
    assert vals[0]["val_nll_nats"] > np.log(256) - 0.5  # untrained: near uniform
    assert vals[1]["val_nll_nats"] < vals[0]["val_nll_nats"] - 0.5
    assert vals[1]["val_bits_per_sample"] == pytest.approx(vals[1]["val_nll_nats"] / np.log(2))
    assert all(r["samples_per_second"] > 0 for r in log if "samples_per_second" in r)
    model, info = load_checkpoint(out)
    assert info.training["step"] == 40
    assert info.training["output_length"] == 56  # rounded up to a multiple of 2**(4-1)
    assert info.training["output_length"] % model.period == 0


@pytest.mark.parametrize("kind,model", [
    ("sequnet", TINY_SEQUNET),
    ("tcn", {"channels": 8, "levels": 3, "dropout": 0.3}),  # dropout: the torch RNG matters
])
def test_resume_continues_exactly(audio_dir: Path, tmp_path: Path, kind: str, model: dict) -> None:
    straight = config(tmp_path, audio_dir, kind=kind, model=model, steps=6, out_dir=str(tmp_path / "a"),
                      grad_clip=0.5)
    model_a, _ = fit(straight)
    half = replace(straight, out_dir=str(tmp_path / "b"), steps=3)
    fit(half)
    model_b, out_b = fit(replace(half, steps=6, resume=True))
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    assert load_checkpoint(out_b)[1].training["step"] == 6
    # The optimizer's moments continued too: one more identical step keeps them equal.
    model_c, _ = fit(replace(straight, steps=7, resume=True))
    model_d, _ = fit(replace(half, steps=7, resume=True))
    for a, b in zip(model_c.parameters(), model_d.parameters()):
        assert torch.equal(a, b)


def test_resume_refuses_a_run_without_its_rng_states(audio_dir: Path, tmp_path: Path) -> None:
    """Without extra.safetensors a resumed run would draw other dropout masks and windows than
    the uninterrupted one: refused by name, the run left as it was."""
    from streamgen.checkpoint import EXTRA_TENSORS, CheckpointError

    half = config(tmp_path, audio_dir, steps=2, out_dir=str(tmp_path / "r"))
    _, out = fit(half)
    (Path(out) / EXTRA_TENSORS).unlink()
    before = sorted(p.name for p in Path(out).iterdir())
    with pytest.raises(CheckpointError, match=r"extra\.safetensors \(the random number"):
        fit(replace(half, steps=4, resume=True))
    assert sorted(p.name for p in Path(out).iterdir()) == before
    assert load_checkpoint(out)[1].training["step"] == 2


@pytest.mark.parametrize("edit", [{"batch_rng": None}, {"step": "abc"}, {"step": -1}])
def test_resume_refuses_an_edited_training_record(audio_dir: Path, tmp_path: Path,
                                                  edit: dict) -> None:
    from streamgen.checkpoint import CheckpointError

    half = config(tmp_path, audio_dir, steps=2, out_dir=str(tmp_path / "r"))
    _, out = fit(half)
    path = Path(out) / "config.json"
    stored = json.loads(path.read_text())
    training = {k: v for k, v in stored["training"].items() if k not in edit or edit[k]}
    training.update({k: v for k, v in edit.items() if v is not None})
    path.write_text(json.dumps({**stored, "training": training}))
    with pytest.raises(CheckpointError, match="training record is incomplete or was edited"):
        fit(replace(half, steps=4, resume=True))


def test_resume_after_a_kill_mid_save_continues_from_the_previous_checkpoint(
        audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kill between the checkpoint swap's two renames leaves only ``.OUT.old``: --resume
    continues from it (it started a fresh run, and its first save deleted the old one)."""
    run = config(tmp_path, audio_dir, steps=6, out_dir=str(tmp_path / "a"))
    straight, _ = fit(run)
    half = replace(run, out_dir=str(tmp_path / "r"), steps=3)
    _, out = fit(half)
    Path(out).rename(tmp_path / ".r.old")
    # `train --out r --resume` alone reads the run's options from the recovered checkpoint
    assert TrainConfig.from_options({"out_dir": str(out), "resume": True}) == replace(half,
                                                                                 resume=True)
    steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step",
                        lambda self, *a, **k: steps.append(1) or adam_step(self, *a, **k))
    resumed, _ = fit(replace(half, steps=6, resume=True))
    assert len(steps) == 3  # the last three steps only
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(),
                                                 resumed.state_dict().values()))


def test_resume_says_what_it_cannot_do(audio_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    """A finished run resumed with no more steps says so; a run started elsewhere with a
    relative --data says which folder it needs; a broken manifest.json names itself."""
    from streamgen.cli.main import main

    monkeypatch.chdir(audio_dir.parent)
    run = tmp_path / "run"
    assert main(["train", *cli_options(tmp_path, Path(audio_dir.name), run, 2)]) == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume"]) == 0
    assert "is at step 2 already (steps: 2); nothing to do" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert f"trained on --data {audio_dir.name} (as given where it started)" in err
    broken = tmp_path / "broken"
    shutil.copytree(audio_dir, broken)
    for text, message in (("{bad", "is not valid JSON"),
                          ('{"format": "%s", "train": "x", "validation": []}' % corpus.MANIFEST_FORMAT,
                           "must be lists of file paths")):
        (broken / "manifest.json").write_text(text)
        with pytest.raises(ValueError, match=f"manifest.json.*{message}"):
            split_files(broken)


def test_cosine_decay_schedule_is_applied_and_resumes_exactly(audio_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, audio_dir, steps=8, lr=4e-3, lr_final=1e-3, decay_from=4, log_every=1,
                 out_dir=str(tmp_path / "a"))
    assert [cfg.learning_rate(s) for s in (0, 3, 4)] == [4e-3, 4e-3, 4e-3]
    assert cfg.learning_rate(6) == pytest.approx(2.5e-3)  # halfway down the cosine: the mean
    assert cfg.learning_rate(8) == pytest.approx(1e-3)
    assert cfg.learning_rate(5) == pytest.approx(1e-3 + 1.5e-3 * (1 + np.cos(np.pi / 4)))
    model_a, out = fit(cfg)
    log = [r for r in read_log(out) if "lr" in r]
    assert [r["lr"] for r in log] == pytest.approx([cfg.learning_rate(r["step"] - 1) for r in log])
    assert len(log) == 8
    # steps 0-4 take the full rate under either step count, so 5 steps then a resume to 8
    # must land exactly where the straight run did
    fit(replace(cfg, steps=5, out_dir=str(tmp_path / "b")))
    model_b, _ = fit(replace(cfg, out_dir=str(tmp_path / "b"), resume=True))
    for a, b in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(a, b)


def test_fit_to_budget_spends_what_is_left_on_steps_and_validations() -> None:
    cfg = TrainConfig(data="d", out_dir="o", steps=1000, lr_final=1e-4, decay_from=500, val_every=100,
                      time_budget_s=100.0)
    # 150 steps took 10 s; of 97 s (the margin) 85 are left after the last validation's 2 s,
    # at 0.05 s per step plus 2 s per 100 steps: 1214 more steps; the decay keeps its share
    fitted = fit_to_budget(cfg, 150, 10.0, 0.05, 2.0)
    assert (fitted.steps, fitted.decay_from, fitted.time_budget_s) == (1364, 682, None)
    assert fit_to_budget(cfg, 150, 99.0, 0.05, 2.0).steps == 150  # spent: it ends here
    assert fit_to_budget(replace(cfg, lr_final=None, decay_from=0), 150, 10.0, 0.05, 2.0).decay_from == 0
    with pytest.raises(ValueError, match="decay_from to at least 150"):
        replace(cfg, decay_from=100)
    for budget in (0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="time_budget_s must be a finite number of seconds > 0"):
            replace(cfg, time_budget_s=budget)
    for field, value in (("lr", 0.0), ("lr", float("nan")), ("lr_final", -1e-4),
                         ("lr_final", float("inf")), ("grad_clip", -1.0), ("grad_clip", 0.0),
                         ("val_fraction", 1.0), ("val_fraction", -0.1)):
        with pytest.raises(ValueError, match=f"^{field} must be"):
            replace(cfg, **{field: value})
    assert replace(cfg, lr_final=0.0).lr_final == 0.0  # decaying to nothing is allowed


def test_time_budget_fits_the_run_and_stores_the_fitted_schedule(
    audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "BUDGET_PROBE_STEPS", 4)
    monkeypatch.setattr(loop, "BUDGET_PACE_STEPS", 2)
    cfg = config(tmp_path, audio_dir, steps=10, lr_final=1e-3, decay_from=5, log_every=1, val_every=50,
                 checkpoint_every=50, time_budget_s=1.5)
    fit_to_budget, timings = loop.fit_to_budget, []
    monkeypatch.setattr(loop, "fit_to_budget", lambda *args: timings.append(args[2:]) or
                        fit_to_budget(*args))
    started = time.perf_counter()
    _, out = fit(cfg)
    wall = time.perf_counter() - started
    # what it fitted with was timed in this run: the steps so far, a step, the first validation
    (elapsed, per_step, val_seconds), = timings
    assert 0 < val_seconds < elapsed < wall
    assert 0 < per_step * loop.BUDGET_PACE_STEPS < elapsed - val_seconds  # its last 2 steps
    records = read_log(out)
    fitted = [r for r in records if "fitted_steps" in r]
    assert len(fitted) == 1 and fitted[0]["step"] == 4
    steps = fitted[0]["fitted_steps"]
    stored = load_checkpoint(out)[1].training
    run = replace(cfg, steps=steps, decay_from=max(4, round(5 * steps / 10)), time_budget_s=None)
    assert stored["train_config"] == run.to_dict() and stored["step"] == steps
    assert stored["time_budget"]["fitted_at_step"] == 4 and stored["time_budget"]["seconds"] == 1.5
    lrs = [r for r in records if "lr" in r]
    assert [r["step"] for r in lrs] == list(range(1, steps + 1))
    assert [r["lr"] for r in lrs] == pytest.approx([run.learning_rate(r["step"] - 1) for r in lrs])
    # the same command again with --resume goes on to the fitted step count, not the asked one
    again = dict(data=cfg.data, out_dir=str(out), resume=True, steps=10, time_budget_s=1.5)
    assert TrainConfig.from_options(again) == replace(run, resume=True)
    assert TrainConfig.from_options({**again, "steps": steps + 7}).steps == steps + 7  # extended
    # without the budget it is another command: the steps asked are the steps run
    del again["time_budget_s"]
    assert TrainConfig.from_options(again) == replace(run, steps=10, resume=True)


def test_refuses_to_overwrite_and_checks_kind(audio_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, audio_dir, steps=1)
    train(cfg)
    with pytest.raises(FileExistsError, match="resume"):
        train(cfg)
    with pytest.raises(ResumeConflict, match=r"kind='tcn' conflicts with the run .* \(kind='sequnet'\)"):
        train(replace(cfg, kind="tcn", resume=True, steps=2))
    # a run that had no time budget may be given one to go on with
    again = TrainConfig.from_options({"out_dir": cfg.out_dir, "resume": True, "time_budget_s": 60})
    assert again == replace(cfg, resume=True, time_budget_s=60)


def test_resume_refuses_a_model_without_a_training_run(audio_dir: Path, tmp_path: Path) -> None:
    """A published model (the zoo's) holds no training run to go on with: --resume into it is
    one ValueError naming the fix."""
    zoo = tmp_path / "default"
    shutil.copytree(ROOT / "models" / "default", zoo)
    for source in ({"out_dir": str(zoo), "resume": True, "data": str(audio_dir)},
                   replace(config(tmp_path, audio_dir), out_dir=str(zoo), resume=True)):
        with pytest.raises(ValueError, match="holds a model but no training run to resume; "
                                             "start a new run in another out_dir"):
            fit(source) if isinstance(source, TrainConfig) else TrainConfig.from_options(source)


def test_refuses_a_network_without_mu_laws_classes(audio_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mu-law audio has 256 classes, the model has 16"):
        train(config(tmp_path, audio_dir, model={**TINY_SEQUNET, "classes": 16}))


def test_a_resumed_run_whose_log_was_deleted_starts_a_new_one(audio_dir: Path,
                                                              tmp_path: Path) -> None:
    cfg = config(tmp_path, audio_dir, steps=2, log_every=1, val_every=50, checkpoint_every=2)
    train(cfg)
    (Path(cfg.out_dir) / LOG_FILE).unlink()
    train(replace(cfg, steps=3, resume=True))
    log = read_log(cfg.out_dir)
    assert [r["step"] for r in log] == [3, 3] and "val_nll_nats" in log[1]  # no step-2 rerun


def test_each_log_line_averages_the_losses_of_its_own_steps(audio_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    nll_loss, losses = loop.nll_loss, []

    def recorded(model, inputs, targets, reduction="mean"):
        loss = nll_loss(model, inputs, targets, reduction)
        if reduction == "mean":  # a training step's (validation sums)
            losses.append(float(loss.detach()))
        return loss

    monkeypatch.setattr(loop, "nll_loss", recorded)
    cfg = config(tmp_path, audio_dir, steps=5, log_every=2, val_every=50, checkpoint_every=50)
    train(cfg)
    log = read_log(cfg.out_dir)
    logged = [(r["step"], r["train_loss_nats"]) for r in log if "train_loss_nats" in r]
    assert len(losses) == 5 and len(set(losses)) == 5
    want = [(2, np.mean(losses[0:2])), (4, np.mean(losses[2:4])), (5, losses[4])]
    assert [s for s, _ in logged] == [s for s, _ in want]
    assert [v for _, v in logged] == pytest.approx([v for _, v in want], rel=1e-6)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_gradients_are_clipped_to_grad_clip(clip: float | None, audio_dir: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Every step clips the gradients' global norm to ``grad_clip`` before Adam's step (and
    none without it)."""
    clip_norm = torch.nn.utils.clip_grad_norm_
    norms = []

    def clipped(parameters, max_norm, *args, **kwargs):
        parameters = list(parameters)
        before = clip_norm(parameters, max_norm, *args, **kwargs)
        after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in parameters]))
        norms.append((max_norm, float(before), float(after)))
        return before

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clipped)
    train(config(tmp_path, audio_dir, steps=3, grad_clip=clip))
    if clip is None:
        assert norms == []
        return
    assert [n[0] for n in norms] == [clip] * 3
    assert all(before > clip and after == pytest.approx(clip, rel=1e-4)
               for _, before, after in norms)


def test_a_fresh_run_starts_its_own_log(audio_dir: Path, tmp_path: Path) -> None:
    """A log left by a run that stopped before its first checkpoint (out of memory, say) is not
    continued by the next run into that folder."""
    cfg = config(tmp_path, audio_dir, steps=2, checkpoint_every=2)
    Path(cfg.out_dir).mkdir(parents=True)
    stale = '{"step": 900, "loss": 1.0}\n'
    (Path(cfg.out_dir) / LOG_FILE).write_text(stale)
    train(cfg)
    log = read_log(cfg.out_dir)
    assert log and all(r["step"] <= 2 for r in log)


@pytest.mark.parametrize("field", ["output_length", "batch_size", "steps", "val_every",
                                   "checkpoint_every", "threads"])
def test_config_refuses_counts_below_one(field: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"{field} must be at least 1, got 0"):
        TrainConfig(data="d", out_dir=str(tmp_path), **{field: 0})
    with pytest.raises(ValueError, match="decay_from must be at least 0"):
        TrainConfig(data="d", out_dir=str(tmp_path), decay_from=-1)


def test_config_from_parsed_options() -> None:
    from argparse import Namespace

    options = Namespace(data="d", out_dir="o", steps=5, lr=None, command="train", kind="tcn")
    cfg = TrainConfig.from_options(options)
    assert (cfg.data, cfg.out_dir, cfg.steps, cfg.kind, cfg.lr) == ("d", "o", 5, "tcn", TrainConfig.lr)
    with pytest.raises(ValueError, match="out_dir"):
        TrainConfig.from_options({"data": "d"})


DDP_SCRIPT = textwrap.dedent("""
    import json, os, sys
    sys.path.insert(0, {root!r})
    from safetensors.torch import save_file
    from streamgen.train import loop
    from streamgen.train.loop import TrainConfig, fit
    loop.BUDGET_PROBE_STEPS, loop.BUDGET_PACE_STEPS = 4, 2  # used by runs with a time budget
    rank = int(os.environ["RANK"])
    if len(sys.argv) > 3 and rank == 1:  # SIGTERM to rank 1 alone, during step argv[3]
        import signal
        nll_loss, steps = loop.nll_loss, []

        def signalled(model, inputs, targets, reduction="mean"):
            if reduction == "mean":
                steps.append(1)
                if len(steps) == int(sys.argv[3]):
                    os.kill(os.getpid(), signal.SIGTERM)
            return nll_loss(model, inputs, targets, reduction)

        loop.nll_loss = signalled
    try:
        model, out = fit(TrainConfig(**json.loads(sys.argv[1])))
    except loop.TrainingInterrupted as stopped:
        model = None
        with open(os.path.join(sys.argv[2], f"stopped{{rank}}.json"), "w") as f:
            json.dump([stopped.step, stopped.signum], f)
    if model is not None:
        save_file({{k: v.contiguous() for k, v in model.state_dict().items()}},
                  os.path.join(sys.argv[2], f"rank{{rank}}.safetensors"))
""")


def run_torchrun(cfg: TrainConfig, tmp_path: Path, *extra: str, timeout: float = 240) -> None:
    """Train ``cfg`` in two processes (``extra``: DDP_SCRIPT's further arguments)."""
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT.format(root=str(ROOT)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), json.dumps(cfg.to_dict()), str(tmp_path), *extra],
        capture_output=True, text=True, env=env, timeout=timeout,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def torchrun(cfg: TrainConfig, tmp_path: Path) -> tuple[dict, dict]:
    """Train ``cfg`` in two processes; both ranks' final weights."""
    run_torchrun(cfg, tmp_path)
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
    return rank0, rank1


def test_torchrun_two_processes_match_one(audio_dir: Path, tmp_path: Path) -> None:
    cfg = config(tmp_path, audio_dir, steps=8, val_every=8, checkpoint_every=4, out_dir=str(tmp_path / "ddp"))
    rank0, _ = torchrun(cfg, tmp_path)
    log = read_log(tmp_path / "ddp")
    vals = [r["val_nll_nats"] for r in log if "val_nll_nats" in r]
    assert vals[-1] < vals[0]
    assert load_checkpoint(tmp_path / "ddp")[1].training["world_size"] == 2
    # Both ranks together saw the same global batches as one process with the same batch.
    single, _ = fit(replace(cfg, out_dir=str(tmp_path / "single")))
    for name, value in single.state_dict().items():
        torch.testing.assert_close(rank0[name], value, rtol=0, atol=1e-4)
    # and validated on all the windows, each rank scoring its share
    alone = read_log(tmp_path / "single")
    assert vals == pytest.approx([r["val_nll_nats"] for r in alone if "val_nll_nats" in r],
                                 rel=1e-5)


def test_torchrun_ranks_stop_together_when_one_is_signalled(audio_dir: Path,
                                                           tmp_path: Path) -> None:
    """SIGTERM to one rank stops every rank after the same step, with one checkpoint of it
    (a rank stopping alone would leave the other waiting in its next all-reduce)."""
    cfg = config(tmp_path, audio_dir, steps=8, val_every=50, checkpoint_every=50,
                 out_dir=str(tmp_path / "ddp"))
    run_torchrun(cfg, tmp_path, "3", timeout=120)  # a rank left waiting hangs
    stopped = [json.loads((tmp_path / f"stopped{r}.json").read_text()) for r in (0, 1)]
    assert stopped == [[3, signal.SIGTERM]] * 2
    assert load_checkpoint(tmp_path / "ddp")[1].training["step"] == 3


def test_torchrun_ranks_share_the_schedule_fitted_to_a_time_budget(
    audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(loop, "BUDGET_PROBE_STEPS", 4)  # as DDP_SCRIPT sets them
    monkeypatch.setattr(loop, "BUDGET_PACE_STEPS", 2)
    cfg = config(tmp_path, audio_dir, steps=10, lr_final=1e-3, decay_from=5, val_every=50, checkpoint_every=50,
                 time_budget_s=3.0, out_dir=str(tmp_path / "ddp"))
    torchrun(cfg, tmp_path)  # the ranks stay in step (else they hang) and end alike
    fitted = [r for r in read_log(tmp_path / "ddp") if "fitted_steps" in r]
    stored = load_checkpoint(tmp_path / "ddp")[1].training
    assert len(fitted) == 1 and stored["step"] == stored["train_config"]["steps"] == fitted[0]["fitted_steps"]
    steps, decay_from = fitted[0]["fitted_steps"], fitted[0]["decay_from"]
    assert 4 <= decay_from < steps or decay_from == steps == 4  # (4: no time was left)


# -- corpus ----------------------------------------------------------------------------------
def test_corpus_order_and_fixed_split() -> None:
    names = ["bach/bwv10.7", "bach/bwv9.7", "bach/bwv153.1", "bach/bwv153.10", "bach/bwv153.9"]
    ordered = sorted(names, key=corpus.chorale_key)
    assert ordered == ["bach/bwv9.7", "bach/bwv10.7", "bach/bwv153.1", "bach/bwv153.9", "bach/bwv153.10"]
    splits = [corpus.split_of(i) for i in range(30)]
    assert [i for i, s in enumerate(splits) if s == "validation"] == [9, 19, 29]
    with pytest.raises(ValueError, match="'bach/chorale' holds no BWV number"):
        corpus.chorale_key("bach/chorale")


def test_normalise_trims_silence_and_peaks_at_minus_one_dbfs() -> None:
    """Near-silence (below 1e-3 of the peak) goes from both ends, not from inside; the peak
    becomes -1 dBFS; a silent file becomes empty."""
    audio = np.array([0.0, 1e-4, 0.5, 0.0, -0.25, 4e-4, 0.0], np.float32)
    assert np.allclose(corpus.normalise(audio), np.array([0.5, 0.0, -0.25]) * 10 ** (-1 / 20) / 0.5)
    assert corpus.normalise(np.zeros(50, np.float32)).size == 0


def test_build_corpus_without_fluidsynth_or_its_soundfont(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(FileNotFoundError, match="soundfont .*nothere.sf2 not found; apt-get install"):
        corpus.build_corpus(tmp_path / "c", soundfont=tmp_path / "nothere.sf2")
    monkeypatch.setattr(corpus.shutil, "which", lambda name: None)
    with pytest.raises(FileNotFoundError, match="fluidsynth not found; install it"):
        corpus.build_corpus(tmp_path / "c")
    assert not (tmp_path / "c").exists()  # nothing made before the checks


def test_a_chorale_that_fails_to_render_is_skipped_and_recorded(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("music21")
    soundfont = tmp_path / "fake.sf2"
    soundfont.write_bytes(b"")
    monkeypatch.setattr(corpus.shutil, "which", lambda name: "/usr/bin/fluidsynth")
    first = corpus.chorale_names()[0]

    def render(name: str, out_dir: str, sample_rate: int, font: str) -> tuple[str, int]:
        if name == first:
            raise RuntimeError("fluidsynth failed")
        return "wav/b.wav", 2 * sample_rate

    monkeypatch.setattr(corpus, "_render", render)
    built = corpus.build_corpus(tmp_path / "c", limit=2, soundfont=soundfont, jobs=1)
    manifest = json.loads(built.read_text())
    assert manifest["skipped"] == {first: "RuntimeError: fluidsynth failed"}
    assert (manifest["train"], manifest["seconds"]["train"]) == (["wav/b.wav"], 2.0)


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not corpus.SOUNDFONT.is_file(),
                    reason="fluidsynth and the FluidR3 GM soundfont are needed")
def test_a_chorale_is_written_for_piano_and_a_failed_render_is_one_error(tmp_path: Path) -> None:
    music21 = pytest.importorskip("music21")
    midi = tmp_path / "c.mid"
    corpus.write_piano_midi(corpus.chorale_names()[0], midi)
    parts = music21.converter.parse(str(midi)).parts
    programs = [i.midiProgram for part in parts
                for i in part.recurse().getElementsByClass(music21.instrument.Instrument)]
    assert len(parts) == 4 and programs and set(programs) == {0}  # Acoustic Grand Piano, every part
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    with pytest.raises(RuntimeError, match="fluidsynth failed on .*bad.mid"):
        corpus.render_midi(tmp_path / "bad.mid", tmp_path / "bad.wav", 16000, corpus.SOUNDFONT)


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not corpus.SOUNDFONT.is_file(),
                    reason="fluidsynth and the FluidR3 GM soundfont are needed")
def test_build_corpus_renders_normalised_mono_audio(tmp_path: Path) -> None:
    pytest.importorskip("music21")
    manifest_path = corpus.build_corpus(tmp_path / "bach", limit=2, jobs=2)  # a process pool
    manifest = json.loads(manifest_path.read_text())
    names = corpus.chorale_names()
    assert len(names) > 300
    expected = [f"wav/{Path(n).name}.wav" for n in names[:2]]
    assert manifest["train"] == expected and manifest["validation"] == []
    for rel in expected:
        audio, sr = sf.read(tmp_path / "bach" / rel)
        assert sr == 16000 and audio.ndim == 1 and len(audio) > 10 * sr
        assert np.abs(audio).max() == pytest.approx(corpus.PEAK, abs=1e-3)
    assert manifest["seconds"]["train"] == pytest.approx(
        sum(sf.info(str(tmp_path / "bach" / r)).duration for r in expected), abs=0.01)
    assert split_files(tmp_path / "bach").train == [tmp_path / "bach" / r for r in expected]
    assert not list((tmp_path / "bach" / "wav").glob(".*"))  # no raw or partial renders left


def test_publish_eval_passes_over_unreadable_files_as_training_does(audio_dir: Path, tmp_path: Path,
                                                                    capsys) -> None:
    """A junk file that training skipped neither stops ``publish eval`` nor changes its
    score (the same split of what is readable)."""
    from streamgen.checkpoint import save_checkpoint
    from streamgen.nn import SeqUNet, SeqUNetConfig
    from streamgen.publish import evaluate_run

    save_checkpoint(tmp_path / "run", SeqUNet(SeqUNetConfig(**TINY_SEQUNET)), sample_rate=16000)
    junk = tmp_path / "junk"
    shutil.copytree(audio_dir, junk)
    for i in range(30):  # some land in the validation split
        (junk / f"broken{i}.wav").write_bytes(b"not audio" * 50)
    scores = [evaluate_run(tmp_path / "run", folder, first_target=2000, block=1000)
              for folder in (audio_dir, junk)]
    assert scores[0]["val_bits_per_sample"] == scores[1]["val_bits_per_sample"]
    assert scores[0]["targets"] == scores[1]["targets"] > 0
    warnings = capsys.readouterr().err.splitlines()  # each skipped file named, as in training
    assert len(warnings) == 30 and all(w.startswith("streamgen: warning: skipping ") for w in warnings)


def test_publish_eval_scores_the_runs_own_validation_split(audio_dir: Path, tmp_path: Path) -> None:
    """A run held out half of its files: ``publish eval`` scores exactly those (it took the
    default tenth, training files among them), and refuses other data."""
    from streamgen.publish import evaluate_run
    from streamgen.train.data import open_training_data

    _, out = fit(config(tmp_path, audio_dir, steps=2, val_fraction=0.5))
    held_out = load_checkpoint(out)[1].training["data"]["validation_files"]
    default = len(open_training_data(audio_dir, 16000).validation.tracks)
    assert held_out != default
    assert evaluate_run(Path(out), audio_dir, first_target=300, block=64)["files"] == held_out
    more = tmp_path / "more"
    shutil.copytree(audio_dir, more)
    write_tone(more / "extra.wav", 16000, 1.0, 330.0, seed=11)
    with pytest.raises(ValueError, match="holds other data .* pass the run's data"):
        evaluate_run(Path(out), more, first_target=300, block=64)


def test_target_positions_give_the_same_targets_to_any_network(tmp_path) -> None:
    rng = np.random.default_rng(4)
    data = EncodedAudio(["a", "b", "c"], [rng.integers(0, 256, n) for n in (30000, 12000, 9000)])
    targets = []
    for in_len in (5000, 8000):  # two networks with different receptive fields
        pos = data.target_positions(8192, in_len, 1024, every=2)
        _, y = data.windows(pos, in_len, 1024)
        targets.append(y)
        first = [data.tracks[t][s + in_len + 1 - 1024] for t, s in pos[:1]]
        assert first[0] == data.tracks[0][8192]
    np.testing.assert_array_equal(targets[0], targets[1])
    assert len(targets[0]) == 11 + 2 + 0  # blocks at 8192, 10240, ... that end inside each track
    with pytest.raises(ValueError, match="too little context"):
        data.target_positions(1000, 5000, 1024)
    with pytest.raises(ValueError, match="too little context"):  # a window at sample -1
        data.target_positions(5000 - 1024, 5000, 1024)
    assert data.target_positions(5000 - 1024 + 1, 5000, 1024)[:, 1].min() == 0
    short = EncodedAudio(["a", "b"], [rng.integers(0, 256, n) for n in (0, 99)])
    empty = short.validation_positions(8, 99, 16)  # no track holds a window of 100
    assert empty.shape == (0, 2) and empty.dtype == np.int64


# -- publishing: fair evaluation and the model card ----------------------------------------
def test_publish_evaluates_fairly_and_writes_a_card(audio_dir: Path, tmp_path: Path) -> None:
    from streamgen.engine import SamplingConfig
    from streamgen.publish import EVAL, evaluate_run, write_card

    runs = {}
    for kind, model in [("sequnet", TINY_SEQUNET),
                        ("wavenet", {"blocks": 1, "layers": 3, "residual_channels": 8,
                                     "dilation_channels": 8, "skip_channels": 8})]:
        runs[kind] = train(config(tmp_path, audio_dir, kind=kind, model=model, steps=3, lr_final=1e-4,
                                  decay_from=1, out_dir=str(tmp_path / kind)))
        result = evaluate_run(runs[kind], audio_dir, every=3, first_target=300, block=64)
        (runs[kind] / EVAL).write_text(json.dumps(result))

    # independent reference: slice each held-out track by hand, score block by block in float64
    model, info = load_checkpoint(runs["sequnet"])
    model.double()
    result = json.loads((runs["sequnet"] / EVAL).read_text())
    total, count = 0.0, 0
    for path in split_files(audio_dir).validation:
        track = torch.from_numpy(mulaw_encode(load_audio(path, 16000))).long()
        for end in range(300 + 64, len(track) + 1, 64 * 3):  # targets track[end-64:end]
            x = track[end - 1 - model.input_length(64) : end - 1]
            onehot = torch.nn.functional.one_hot(x, 256).T[None].double()
            logits = model(onehot)[0, :, -64:]
            total += torch.nn.functional.cross_entropy(logits.T, track[end - 64 : end], reduction="sum").item()
            count += 64
    assert result["targets"] == count > 0
    assert result["val_nats"] == pytest.approx(total / count, rel=1e-5)
    assert result["val_bits_per_sample"] == pytest.approx(result["val_nats"] / np.log(2)) and 0 < result["seconds"] < 600

    # a slow machine on paper, so the card's training time is a figure, not "0.0 h"
    log_path = runs["sequnet"] / LOG_FILE
    rows = [json.loads(line) for line in log_path.read_text().splitlines()]
    log_path.write_text("".join(json.dumps({**r, "samples_per_second": 0.1} if "samples_per_second" in r else r) + "\n"
                                for r in rows))
    dest = tmp_path / "zoo" / "tiny"
    write_card(runs["sequnet"], dest, audio_dir, {"wavenet-tiny": runs["wavenet"]}, seconds=0.25,
               sampling=SamplingConfig(top_p=0.9), hardware="test machine")
    shipped, card = load_checkpoint(dest)  # sha256 checked
    assert card.sampling == SamplingConfig(top_p=0.9)
    assert card.training["val_bits_per_sample"] == pytest.approx(result["val_bits_per_sample"])
    assert card.training["hardware"] == "test machine"
    assert {k: card.training[k] for k in ("lr_final", "decay_from")} == {"lr_final": 1e-4, "decay_from": 1}
    audio, rate = sf.read(dest / "example.wav")
    assert rate == 16000 and len(audio) == 4000 and np.abs(audio).max() > 0
    assert (dest / "example.png").stat().st_size > 1000
    text = (dest / "README.md").read_text()
    wavenet_bits = json.loads((runs["wavenet"] / EVAL).read_text())["val_bits_per_sample"]
    assert f"| {result['val_bits_per_sample']:.3f} |" in text and f"| {wavenet_bits:.3f} |" in text
    assert "decayed along a cosine to 0.0001 from step 1 to the last" in text
    seen, rate = card.training["target_samples_seen"], card.training["median_target_samples_per_s"]
    assert seen == 3 * 4 * 60 and rate == 0.1 and "(about 2.0 h of training)" in text
    # the card's figures, from the files, the weights and the network
    split = split_files(audio_dir)
    train_h, val_h = (sum(len(load_audio(p, 16000)) for p in part) / 16000 / 3600
                      for part in (split.train, split.validation))
    assert card.training["data"] == info.training["data"]
    assert f"({len(split.train)} train files, {train_h:.2f} h; {len(split.validation)} validation files,\n" \
           f"{val_h:.2f} h)" in text
    assert f"({seen:,} target samples: {seen / 16000 / 3600:.2f} h of audio, {seen / 16000 / 3600 / train_h:.2f} " \
           "passes over the training\ndata)" in text
    rf = model.receptive_field
    assert f"| receptive field | {rf:,} samples ({rf / 16000:.2f} s) |" in text
    assert f"| weights | {(dest / 'model.safetensors').stat().st_size / 1e6:.1f} MB of float32" in text
    # the card's training command, parsed by the CLI, is the run's own config
    from streamgen.cli.main import build_parser

    line = next(ln for ln in text.splitlines() if ln.startswith("streamgen train --data"))
    repeat = TrainConfig.from_options(build_parser().parse_args(shlex.split(line)[1:]))
    ran = TrainConfig(**info.training["train_config"])
    assert replace(repeat, data=ran.data, out_dir=ran.out_dir, val_windows=ran.val_windows, log_every=ran.log_every,
                   checkpoint_every=ran.checkpoint_every, val_every=ran.val_every, cache_dir=ran.cache_dir,
                   progress=ran.progress) == ran
    assert "real time on this machine's CPU (numba backend" in text  # what ran the example
    other = write_card(runs["wavenet"], tmp_path / "zoo" / "wn", audio_dir, seconds=0.1)
    other_text = (other / "README.md").read_text()
    # refused before DEST is touched: a zoo entry there already, a baseline never evaluated
    before = {p.name: p.read_bytes() for p in other.iterdir()}
    with pytest.raises(ValueError, match="holds a model already; pass --force"):
        write_card(runs["sequnet"], other, audio_dir, seconds=0.1)
    assert {p.name: p.read_bytes() for p in other.iterdir()} == before
    unscored = tmp_path / "unscored"
    shutil.copytree(runs["wavenet"], unscored)
    (unscored / EVAL).unlink()
    with pytest.raises(FileNotFoundError, match="eval.json is missing"):
        write_card(runs["wavenet"], tmp_path / "zoo" / "new", audio_dir, {"x": unscored},
                   seconds=0.1)
    assert not (tmp_path / "zoo" / "new").exists()
    assert write_card(runs["wavenet"], other, audio_dir, seconds=0.1, force=True) == other
    assert "real time on this machine's CPU (numba backend" in other_text  # WaveNets too
    assert "--seed 0 --backend numba`" in other_text  # the example reproduces on its backend
    assert "| wavenet-tiny | wavenet" in text and "one block of 64 samples in every 3, from sample 300" in text
    assert "MB of float32 (`model.safetensors`" in text and "scored with the run's" not in text

    # `publish example`: the example again (another seed and length), the rest of the card kept
    from streamgen.cli.main import main
    from streamgen.generation import AudioGenerator

    (dest / "README.md").write_text(text + "\n## Against training time\n\nwritten by hand\n")
    assert main(["publish", "example", str(dest), "--seconds", "0.5", "--seed", "3"]) == 0
    refreshed = (dest / "README.md").read_text()
    head = text[: text.index("## Example")]
    assert refreshed.startswith(head) and refreshed.endswith("\n## Against training time\n\nwritten by hand\n")
    assert "`example.wav`: 0.5 s generated" in refreshed and "seed 0 and" not in refreshed
    assert refreshed.count("## Example") == 1 and refreshed.count("Python ") == 1
    audio, _ = sf.read(dest / "example.wav", dtype="float32")
    want = AudioGenerator(shipped, sampling=card.sampling, seed=3, device="cpu", start=card.start)(8000)[0]
    assert len(audio) == 8000 and np.abs(audio - want).max() < 1e-4  # 16-bit rounding
    (dest / "README.md").write_text(head)
    assert main(["publish", "example", str(dest)]) == 2


def test_publish_stores_weights_in_float16_within_the_zoo_limit(
        audio_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture) -> None:
    from streamgen import publish
    from streamgen.cli.main import main
    from streamgen.publish import EVAL, evaluate_run, write_card

    run = train(config(tmp_path, audio_dir, steps=2, out_dir=str(tmp_path / "run")))
    (run / EVAL).write_text(json.dumps(evaluate_run(run, audio_dir, every=3, first_target=300, block=64)))
    trained, _ = load_checkpoint(run)
    dest = write_card(run, tmp_path / "zoo" / "half", audio_dir, seconds=0.1, weights_dtype="float16")
    shipped, card = load_checkpoint(dest)  # sha256 and dtype checked
    assert card.weights_dtype == "float16" and card.sha256 != load_checkpoint(run)[1].sha256
    assert (dest / "model.safetensors").stat().st_size < 0.6 * (run / "model.safetensors").stat().st_size
    for name, value in trained.state_dict().items():  # float32 again, each weight rounded once
        assert torch.equal(shipped.state_dict()[name], value.half().float()), name
    examples: list[torch.nn.Module] = []  # the example comes from the weights as shipped
    with monkeypatch.context() as m:
        m.setattr(publish, "write_example", lambda dest, model, *_: examples.append(model) or "")
        write_card(run, tmp_path / "zoo" / "spied", audio_dir, weights_dtype="float16")
    assert all(torch.equal(examples[0].state_dict()[k], v) for k, v in shipped.state_dict().items())
    text = (dest / "README.md").read_text()
    assert "MB of float16 (`model.safetensors`" in text
    assert "scored with the run's float32 weights before they were stored in float16" in text
    capsys.readouterr()
    assert main(["info", str(dest)]) == 0
    assert "stored in float16 (loaded as float32)" in capsys.readouterr().out

    # a run whose weights took several files ships them in one
    from streamgen import checkpoint

    with monkeypatch.context() as m:
        m.setattr(checkpoint, "SHARD_BYTES", 50_000)
        sharded = checkpoint.save_checkpoint(tmp_path / "sharded", trained,
                                             training=load_checkpoint(run)[1].training)
    assert (sharded / "model.1.safetensors").is_file()
    for name in (EVAL, LOG_FILE):  # the run's score and log, which the card reads
        shutil.copy2(run / name, sharded / name)
    joined = write_card(sharded, tmp_path / "zoo" / "joined", audio_dir, seconds=0.1)
    assert sorted(p.name for p in joined.glob("model*")) == ["model.safetensors"]
    assert all(torch.equal(load_checkpoint(joined)[0].state_dict()[k], v)
               for k, v in trained.state_dict().items())

    # over the limit: one line naming the fix, and nothing written
    monkeypatch.setattr(publish, "ZOO_MAX_BYTES", 1000)
    with pytest.raises(ValueError, match=r"take 0\.\d MB in float32, over a zoo entry's 0\.001 MB; "
                                         r"store them in float16 \(--weights-dtype float16\)"):
        write_card(run, tmp_path / "zoo" / "big", audio_dir, seconds=0.1)
    assert not (tmp_path / "zoo" / "big").exists()
    capsys.readouterr()
    assert main(["publish", "card", str(run), str(tmp_path / "zoo" / "big"), "--data",
                 str(audio_dir), "--weights-dtype", "float16"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "MB in float16, over a zoo entry's" in err
    assert err.strip().endswith("; publish a smaller model")  # float16 is no way out there
    assert publish.stored_bytes(trained, "float16") * 2 == publish.stored_bytes(trained, "float32") == \
        4 * trained.num_parameters()
    assert not (tmp_path / "zoo" / "big").exists()


def test_publish_card_sentences_and_refusals(audio_dir: Path, tmp_path: Path) -> None:
    """The card on a constant learning rate and on a run that saw only some training files; a
    score with no targets and an unknown storage dtype are each one error, nothing written."""
    from streamgen.checkpoint import save_checkpoint
    from streamgen.nn import SeqUNet, SeqUNetConfig
    from streamgen.publish import _data_seen, _duration, _schedule, evaluate_run, write_card

    assert _schedule({"lr": 0.003, "lr_final": None}) == "learning rate 0.003"
    assert [_duration(s) for s in (3599, 3600, 5400)] == ["60 min", "1.0 h", "1.5 h"]
    hour = 16000 * 3600
    assert _data_seen({"train_files": 5, "train_samples": 2 * hour}, 5, 16000, "data/bach") == \
        ("", "", "data/bach", 2.0)
    note, pack, folder, hours = _data_seen({"train_files": 3, "train_samples": hour}, 5, 16000, "data/bach")
    assert note == " This model saw the first 3 training files (1.00 h), packed to fit one copy to the GPU machine."
    assert pack == "streamgen train --pack-corpus data/bach data/bach-3 --subset 3\n"
    assert (folder, hours) == ("data/bach-3", 1.0)

    run = save_checkpoint(tmp_path / "run", SeqUNet(SeqUNetConfig(**TINY_SEQUNET)), sample_rate=16000)
    with pytest.raises(ValueError, match="no validation targets: the held-out files are shorter than 10000064"):
        evaluate_run(run, audio_dir, first_target=10**7, block=64)
    with pytest.raises(ValueError, match=r"unknown weights dtype 'int8'; choose one of \["):
        write_card(run, tmp_path / "zoo" / "new", audio_dir, weights_dtype="int8")
    assert not (tmp_path / "zoo").exists()


# -- interrupts and resume from the command line ---------------------------------------------
def cli(*args: str) -> list[str]:
    """The train command (run it outside the checkout, where ``streamgen/`` would shadow the
    installed package and its ``cli``)."""
    return [sys.executable, "-m", "streamgen.cli.main", "train", *args]


def cli_options(tmp_path: Path, audio_dir: Path, run: Path, steps: int) -> list[str]:
    return ["--data", str(audio_dir), "--out", str(run), "--config", json.dumps(TINY_SEQUNET),
            "--window", "60", "--batch", "4", "--steps", str(steps), "--lr", "0.003", "--val-every", "5",
            "--checkpoint-every", "100000", "--seed", "3", "--threads", "1",
            "--cache-dir", str(tmp_path.parent / "cache")]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(audio_dir: Path, tmp_path: Path) -> None:
    import signal
    import time

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cli(*cli_options(tmp_path, audio_dir, run, 10**6)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    log = run / LOG_FILE
    deadline = time.time() + 120
    while not (log.is_file() and '"step": 10,' in log.read_text()) and time.time() < deadline:
        time.sleep(0.05)
    assert not (run / "config.json").exists()  # no periodic checkpoint yet
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    line = err.strip().splitlines()[-1]
    step = load_checkpoint(run)[1].training["step"]
    assert 10 <= step < 10**6
    assert line == (f"streamgen: interrupted at step {step}; checkpoint saved in {run}; "
                    f"resume with: streamgen train --out {run} --resume")
    # the resumed run's next steps are the uninterrupted run's
    resumed = subprocess.run(cli("--out", str(run), "--resume", "--steps", str(step + 3)),
                             capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    stored = TrainConfig(**load_checkpoint(run)[1].training["train_config"])
    assert (stored.steps, stored.batch_size, stored.seed) == (step + 3, 4, 3)
    straight, _ = fit(replace(stored, out_dir=str(tmp_path / "straight"), progress=False, resume=False))
    assert_same_weights(straight, load_checkpoint(run)[0])
    rows = [json.loads(r) for r in log.read_text().splitlines()]
    assert [r["step"] for r in rows if "lr" in r] == [s for s in range(10, step + 4, 10)] + [step + 3]


def test_sigterm_stops_training_with_its_own_exit_status(audio_dir: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys) -> None:
    """SIGTERM (a scheduler's stop, ``timeout``) saves and exits 143, Ctrl-C 130: the shell's
    statuses, so a job script can tell them apart."""
    import signal

    from streamgen.cli.main import main
    from streamgen.train import loop

    real_loss, calls = loop.nll_loss, []

    def loss_then_sigterm(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "nll_loss", loss_then_sigterm)
    run = tmp_path / "run"
    assert main(["train", *cli_options(tmp_path, audio_dir, run, 50)]) == 143
    assert "interrupted at step" in capsys.readouterr().err
    assert load_checkpoint(run)[1].training["step"] < 50


def test_a_second_signal_during_the_save_is_deferred(audio_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from streamgen import checkpoint
    from streamgen.train import loop

    calls = {"loss": 0, "save": 0}
    real_loss, real_save_file = loop.nll_loss, checkpoint.save_file

    def loss_then_ctrl_c(*args, **kwargs):  # Ctrl-C arrives during the third step (call 1
        calls["loss"] += 1                    # is the step-0 validation)
        if calls["loss"] == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return real_loss(*args, **kwargs)

    def save_file_then_sigterm(*args, **kwargs):  # and SIGTERM between the checkpoint's files
        calls["save"] += 1
        os.kill(os.getpid(), signal.SIGTERM)
        return real_save_file(*args, **kwargs)

    monkeypatch.setattr(loop, "nll_loss", loss_then_ctrl_c)
    monkeypatch.setattr(checkpoint, "save_file", save_file_then_sigterm)
    cfg = config(tmp_path, audio_dir, steps=50, checkpoint_every=100, val_every=100)
    with pytest.raises(TrainingInterrupted) as stopped:
        fit(cfg)
    assert stopped.value.step == 3 and calls["save"] == 3  # weights, optimizer, RNG states
    assert stopped.value.signum == signal.SIGINT  # the first signal stopped it
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp folder
    monkeypatch.undo()
    straight, _ = fit(replace(cfg, steps=3, out_dir=str(tmp_path / "straight")))
    assert_same_weights(straight, load_checkpoint(cfg.out_dir)[0])
    resumed, _ = fit(replace(cfg, steps=5, resume=True))
    assert_same_weights(fit(replace(cfg, steps=5, out_dir=str(tmp_path / "five")))[0], resumed)


def run_cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str]:
    from streamgen.cli.main import main

    status = main(["train", *args])
    return status, capsys.readouterr().err


def test_resume_reuses_the_stored_options_and_refuses_conflicts(
        audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    # the decay starts at step 4: the first 4 steps take the same rate whatever the step count
    options = cli_options(tmp_path, audio_dir, run, 4) + ["--lr-final", "0.001", "--decay-from", "4",
                                                         "--grad-clip", "0.5", "--checkpoint-every", "2"]
    assert run_cli(capsys, *options)[0] == 0
    first = load_checkpoint(run)[1].training["train_config"]
    status, err = run_cli(capsys, "--out", str(run), "--resume", "--steps", "7", "--batch", "4", "--lr", "0.003")
    assert status == 0, err  # the stored options, repeated ones included
    resumed = load_checkpoint(run)[1].training["train_config"]
    assert resumed == {**first, "steps": 7, "resume": True}
    straight, _ = fit(replace(TrainConfig(**resumed), out_dir=str(tmp_path / "straight"), progress=False))
    assert_same_weights(straight, load_checkpoint(run)[0])
    for given, expected in [
        (["--batch", "8"], f"--batch 8 conflicts with the run in {run} (stored: 4)"),
        (["--window", "64"], f"--window 64 conflicts with the run in {run} (stored: 60)"),
        (["--lr-final", "0.002"], "--lr-final 0.002 conflicts"),
        (["--config", '{"channels": 16}'], "--config model.channels=16 conflicts with the run in"),
        (["--kind", "tcn"], "--kind tcn conflicts"),
    ]:
        status, err = run_cli(capsys, "--out", str(run), "--resume", *given)
        lines = err.strip().splitlines()
        assert status == 2 and len(lines) == 1 and expected in lines[0], err
    assert load_checkpoint(run)[1].training["step"] == 7  # nothing changed
    # the same data elsewhere resumes; other data is refused
    moved = tmp_path / "moved"
    shutil.copytree(audio_dir, moved)
    status, err = run_cli(capsys, "--out", str(run), "--resume", "--steps", "8", "--data", str(moved))
    assert status == 0, err
    write_tone(next(moved.rglob("tone1.wav")), 22050, 1.0, 999.0, seed=1)  # same name and length
    status, err = run_cli(capsys, "--out", str(run), "--resume", "--steps", "9", "--data", str(moved))
    assert status == 2 and "holds other data (or another split) than the run" in err and len(err.strip().splitlines()) == 1


# -- data: summary, unreadable files, identity, packs -------------------------------------------
def test_unreadable_files_are_skipped_and_the_data_summarised(tmp_path: Path) -> None:
    from streamgen.train.data import open_training_data

    root = tmp_path / "audio"
    seconds = [0.5, 0.75, 1.0, 1.25]
    for i, s in enumerate(seconds):
        write_tone(root / f"t{i}.wav", 16000, s, 300.0, seed=i)
    (root / "broken.wav").write_bytes(b"RIFF" + os.urandom(200))
    warnings: list[str] = []
    data = open_training_data(root, val_fraction=0.25, cache_dir=tmp_path / "cache", warn=warnings.append)
    assert warnings == [f"skipping {root / 'broken.wav'}: unreadable "
                        f"({data.skipped[str(root / 'broken.wav')]})"] or \
        (len(warnings) == 1 and warnings[0].startswith(f"skipping {root / 'broken.wav'}: unreadable"))
    files = {n: seconds[int(n[1])] for n in data.train.names + data.validation.names}
    assert sorted(files) == ["t0.wav", "t1.wav", "t2.wav", "t3.wav"] and len(data.validation.names) == 1
    hours = {k: sum(files[n] for n in v.names) / 3600 for k, v in data.sets().items()}
    assert data.summary() == (f"data: audio folder, train 3 files {hours['train']:.2f} h, validation 1 files "
                              f"{hours['validation']:.2f} h (split: 0.25 of the files by path hash); "
                              "1 unreadable files skipped")
    assert data.identity()["skipped"] == [str(root / "broken.wav")]

    one = tmp_path / "one"
    write_tone(one / "only.wav", 16000, 0.5, 300.0, seed=0)
    warnings.clear()
    assert open_training_data(one, cache_dir=tmp_path / "cache", warn=warnings.append).validation.tracks == []
    assert len(warnings) == 1 and "no validation files (1 training files)" in warnings[0]

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"not audio")
    (bad / "b.flac").write_bytes(b"")
    with pytest.raises(ValueError, match="no usable training audio"):
        open_training_data(bad, cache_dir=tmp_path / "cache")


def test_cli_reports_unreadable_data_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.wav").write_bytes(b"not audio")
    status, err = run_cli(capsys, "--data", str(bad), "--out", str(tmp_path / "run"), "--cache-dir",
                          str(tmp_path / "cache"))
    lines = err.strip().splitlines()
    assert status == 2 and lines[-1].startswith(f"streamgen: error: {bad}: no usable training audio")
    assert lines[0].startswith(f"streamgen: warning: skipping {bad / 'a.wav'}: unreadable")
    assert not (tmp_path / "run").exists()


def test_packed_corpus_round_trips_in_small_parts_and_trains_alike(audio_dir: Path, tmp_path: Path) -> None:
    from streamgen.train.data import open_training_data
    from streamgen.train.pack import read_pack, write_pack

    source = open_training_data(audio_dir, cache_dir=tmp_path / "cache")
    limit = 15_000
    manifest = json.loads(write_pack(source, tmp_path / "pack", max_bytes=limit).read_text())
    parts = sorted((tmp_path / "pack").glob("part-*.npz"))
    assert len(parts) == len(manifest["parts"]) > 1
    for part, entry in zip(parts, manifest["parts"]):
        assert part.stat().st_size == entry["bytes"] <= limit
        assert hashlib.sha256(part.read_bytes()).hexdigest() == entry["sha256"]
    assert manifest["bytes"] < 0.9 * sum(manifest["samples"].values())  # compressed below 1 byte/sample
    _, tracks = read_pack(tmp_path / "pack")
    for split, encoded in source.sets().items():
        assert list(tracks[split]) == encoded.names
        for got, want in zip(tracks[split].values(), encoded.tracks):
            assert got.dtype == np.uint8 and np.array_equal(got, want)
    packed = open_training_data(tmp_path / "pack")
    assert packed.sha256() == source.sha256() == manifest["data_sha256"]
    with pytest.raises(ValueError, match="packed at 16000 Hz, not 8000; pack the audio again"):
        open_training_data(tmp_path / "pack", 8000)
    with pytest.raises(ValueError, match="a packed corpus with its own split; drop the file lists"):
        open_training_data(tmp_path / "pack", val_files=[packed.validation.names[0]])
    with pytest.raises(ValueError, match="a subset needs at least one training file, got 0"):
        packed.subset(0)
    assert packed.subset(1).train.names == packed.train.names[:1]
    a, _ = fit(config(tmp_path, audio_dir, out_dir=str(tmp_path / "a"), steps=3))
    b, out = fit(config(tmp_path, tmp_path / "pack", out_dir=str(tmp_path / "b"), steps=3))
    assert_same_weights(a, b)
    assert load_checkpoint(out)[1].training["data"]["sha256"] == source.sha256()
    # a subset is other data; a damaged part is refused
    subset = source.subset(2)
    assert subset.train.names == source.train.names[:2] and subset.sha256() != source.sha256()
    with open(parts[0], "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 8)
    with pytest.raises(ValueError, match="part-000.npz: missing or not the part the manifest lists"):
        read_pack(tmp_path / "pack")


def test_pack_parts_are_filled_in_track_order_up_to_the_limit(tmp_path: Path) -> None:
    """Incompressible tracks of known sizes: no part over the limit, no two neighbouring
    parts that would have fitted in one, one part when the limit allows; a track that cannot
    fit a part alone is one error; a manifest not of this format and version is refused."""
    from streamgen.train.pack import PACK_MANIFEST, read_pack, write_pack

    rng = np.random.default_rng(3)
    sizes = (3000, 1000, 2500, 4000, 500, 1200, 2000)
    tracks = [rng.integers(0, 256, n).astype(np.uint8) for n in sizes]
    names = [f"t{i}.wav" for i in range(len(sizes))]
    source = TrainingData(EncodedAudio(names[:5], tracks[:5]),
                          EncodedAudio(names[5:], tracks[5:]), 16000, "audio folder", "s")
    limit = 6000
    manifest = json.loads(write_pack(source, tmp_path / "p", max_bytes=limit).read_text())
    written = [part["bytes"] for part in manifest["parts"]]
    assert len(written) > 2 and max(written) <= limit
    assert all(a + b - 22 > limit for a, b in zip(written, written[1:])), written
    assert [t["name"] for part in manifest["parts"] for t in part["tracks"]] == names
    _, got = read_pack(str(tmp_path / "p"))
    assert all(np.array_equal(got["train" if i < 5 else "validation"][name], track)
               for i, (name, track) in enumerate(zip(names, tracks)))
    assert len(json.loads(write_pack(source, tmp_path / "one").read_text())["parts"]) == 1
    with pytest.raises(ValueError, match=r"t3.wav alone needs [\d,]+ bytes packed, over the 4,000 "
                                         r"per part; raise --max-bytes"):
        write_pack(source, tmp_path / "small", max_bytes=4000)
    for change in ({"format": "other-corpus"}, {"version": 2}):
        (tmp_path / "p" / PACK_MANIFEST).write_text(json.dumps(manifest | change))
        with pytest.raises(ValueError, match="not a version-1 streamgen-packed-corpus; pack the data again"):
            read_pack(tmp_path / "p")


def test_cli_packs_a_subset(audio_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "packed"
    status, err = run_cli(capsys, "--pack-corpus", str(audio_dir), str(out), "--subset", "2",
                          "--max-bytes", "60k", "--cache-dir", str(tmp_path / "cache"))
    assert status == 0, err
    manifest = json.loads((out / "pack.json").read_text())
    assert sum(len([t for t in p["tracks"] if t["split"] == "train"]) for p in manifest["parts"]) == 2
    assert manifest["max_bytes"] == 60 * 1024
    status, err = run_cli(capsys, "--pack-corpus", str(audio_dir), str(out))
    assert status == 2 and "already holds a packed corpus" in err

"""``ModelInfo``, what a checkpoint says about its model, and the one merge of a model's
recommended sampling with a user's options."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch

from conftest import randomize_
from streamgen.checkpoint import CheckpointError, ModelInfo, load_checkpoint, merge_sampling, read_info, save_checkpoint
from streamgen.cli.main import main
from streamgen.engine import SamplingConfig
from streamgen.nn import SeqUNetConfig, TCNConfig, WaveNetConfig, build_network
from streamgen.zoo import load_model, packaged_zoo

CONFIGS = {"sequnet": SeqUNetConfig(channels=8, levels=3, depth=1, classes=64),
           "wavenet": WaveNetConfig(blocks=1, layers=3, residual_channels=8, dilation_channels=8,
                                    skip_channels=8, classes=32),
           "tcn": TCNConfig(channels=8, levels=2, dropout=0.0)}


def pick(rng: torch.Generator, options: list):
    return options[int(torch.randint(len(options), (1,), generator=rng))]


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_every_field_round_trips_through_a_saved_checkpoint(tmp_path: Path, kind: str, rng: torch.Generator) -> None:
    model = build_network(kind, CONFIGS[kind])
    randomize_(model, rng)
    rate = pick(rng, [8000, 16000, 22050, 44100])
    training = {"step": int(torch.randint(1, 10**6, (1,), generator=rng)), "loss": torch.rand(1, generator=rng).item(),
                "nested": {"lr": [1e-3, 1e-4]}}
    folder = save_checkpoint(tmp_path / "ck", model, sample_rate=rate, training=training)
    sampling = {"temperature": pick(rng, [0.6, 0.85, 1.2, 2.0]),
                "top_k": int(torch.randint(1, CONFIGS[kind].classes + 1, (1,), generator=rng))}
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(raw | {"sampling": sampling}))

    loaded, info = load_checkpoint(folder)
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert info == ModelInfo(kind=kind, config=CONFIGS[kind], sample_rate=rate,
                             sampling=SamplingConfig(**sampling), training=training, sha256=digest,
                             params=sum(p.numel() for p in model.parameters()),
                             receptive_field=model.receptive_field, folder=folder)
    assert read_info(folder / "config.json") == info  # without loading the weights
    assert info.to_json() == raw | {"sampling": sampling}  # and back to the same JSON
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.sample_rate = 1  # type: ignore[misc]


# known from the model cards, not from the code under test
SHIPPED = {"default": ("sequnet", {"channels": 32, "levels": 10, "depth": 2, "kernel_size": 5, "classes": 256},
                       810_784, 16_365, SamplingConfig(temperature=0.85, top_p=0.94), 4.054),
           "wavenet-baseline": ("wavenet", {"blocks": 3, "layers": 10, "kernel_size": 2, "residual_channels": 24,
                                            "dilation_channels": 24, "skip_channels": 64, "classes": 256},
                                163_528, 3_070, SamplingConfig(temperature=0.85, top_p=0.94), 3.866)}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_load_with_their_fields(name: str) -> None:
    kind, config, params, field, sampling, bits = SHIPPED[name]
    folder = packaged_zoo() / name
    raw = json.loads((folder / "config.json").read_text())
    model, info = load_model(name)
    assert (info.kind, info.config.to_dict(), info.params, info.receptive_field) == (kind, config, params, field)
    assert (info.sample_rate, info.sampling, info.folder) == (16000, sampling, folder)
    assert info.sha256 == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert round(info.training["val_bits_per_sample"], 3) == bits
    assert info.to_json() == raw  # the format is unchanged: the shipped files parse and print back alike
    assert (model.num_parameters(), model.receptive_field) == (params, field)


def test_recorded_problems_are_one_line_checkpoint_errors(tmp_path: Path) -> None:
    folder = save_checkpoint(tmp_path / "ck", build_network("tcn", CONFIGS["tcn"]))
    raw = json.loads((folder / "config.json").read_text())
    for change, needle in [({"sampling": {"top_p": 1.5}}, "invalid recommended sampling"),
                           ({"sampling": {"top_k": 257}}, "exceeds the model's 256 classes"),
                           ({"sampling": {"beam": 4}}, "unknown sampling options ['beam']"),
                           ({"sample_rate": None}, "missing fields ['sample_rate']"),
                           *[({"sample_rate": rate}, "sample_rate must be a whole number of Hz")
                             for rate in (-1, 16000.5, "16000", True)],
                           ({"weights_dtype": "int8"}, "unknown weights dtype 'int8'; use one of"),
                           ({"start": "noise"}, "unknown start 'noise'; use one of"),
                           ({"format": "other-checkpoint"}, "not a streamgen-checkpoint config"),
                           ([], "not a streamgen-checkpoint config")]:
        data = change if isinstance(change, list) else {
            k: v for k, v in (raw | change).items() if v is not None}
        (folder / "config.json").write_text(json.dumps(data))
        with pytest.raises(CheckpointError) as err:
            read_info(folder)
        assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)
    (folder / "config.json").write_text(json.dumps(raw | {"sample_rate": 0}))
    assert read_info(folder).sample_rate == 0  # a model of notes, not audio


def test_a_record_built_in_code_is_checked_as_one_read_from_a_file(tmp_path: Path) -> None:
    """``publish`` builds records with ``dataclasses.replace``: the same rules hold there."""
    info = read_info(save_checkpoint(tmp_path / "ck", build_network("tcn", CONFIGS["tcn"])))
    assert dataclasses.replace(info, start="silence").start == "silence"
    with pytest.raises(ValueError, match="unknown start 'noise'"):
        dataclasses.replace(info, start="noise")
    with pytest.raises(ValueError, match="unknown weights dtype 'int8'"):
        dataclasses.replace(info, weights_dtype="int8")


# -- the merge ---------------------------------------------------------------------------
def test_merge_keeps_the_models_values_unless_the_user_gives_one(rng: torch.Generator) -> None:
    for _ in range(20):
        recommended = SamplingConfig(temperature=pick(rng, [0.7, 1.0, 1.3]), top_k=pick(rng, [0, 5, 40]),
                                     top_p=pick(rng, [0.5, 0.9, 1.0]))
        user = {"temperature": pick(rng, [None, 0.8, 2.0]), "top_k": pick(rng, [None, 0, 7]),
                "top_p": pick(rng, [None, 0.3, 1.0]), "greedy": None}
        merged = merge_sampling(recommended, user, classes=64)
        for name in ("temperature", "top_k", "top_p"):
            want = getattr(recommended, name) if user[name] is None else user[name]
            assert getattr(merged, name) == want, (recommended, user, merged)
        assert merged.greedy is False
    assert merge_sampling(SamplingConfig(top_p=0.9), {"greedy": True}) == SamplingConfig(top_p=0.9, greedy=True)
    assert merge_sampling(SamplingConfig(), {"top_k": 64}, classes=64).top_k == 64  # all of them
    info = read_info(packaged_zoo() / "default")
    assert info.sampling_with({"temperature": 0.9, "top_p": None}) == SamplingConfig(temperature=0.9, top_p=0.94)


@pytest.mark.parametrize("user,needle", [
    ({"greedy": True, "top_p": 0.5}, "greedy sampling ignores ['top_p']"),
    ({"top_k": 300}, "top_k 300 exceeds the model's 256 classes"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"top_p": 1.5}, "top_p must be in (0, 1]"),
    ({"top_p": 0.0}, "top_p must be in (0, 1]"),  # 0 would keep one class: greedy, unasked
    ({"top_p": -0.5}, "top_p must be in (0, 1]"),
    ({"top_k": -1}, "top_k must be >= 0"),
    ({"beam": 4}, "unknown sampling options ['beam']"),
])
def test_invalid_overrides_are_one_line_errors(user: dict, needle: str) -> None:
    with pytest.raises(ValueError) as err:
        merge_sampling(SamplingConfig(top_p=0.9), user, classes=256)
    assert needle in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_cli_reports_a_bad_combination_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for options, needle in [(["--greedy", "--top-p", "0.5"], "greedy sampling ignores ['top_p']"),
                            (["--top-k", "300"], "top_k 300 exceeds the model's 256 classes")]:
        status = main(["generate", "-o", str(tmp_path / "x.wav"), "--seconds", "0.01", *options])
        err = capsys.readouterr().err.strip()
        assert status == 2 and err.count("\n") == 0 and needle in err, err
    assert not (tmp_path / "x.wav").exists()


# -- streamgen publish -------------------------------------------------------------------
def test_publish_subcommand_help_and_its_missing_score_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in (["publish", "--help"], ["publish", "eval", "--help"], ["publish", "card", "--help"],
                 ["publish", "example", "--help"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 0
        assert f"usage: streamgen {' '.join(argv[:-1])}" in capsys.readouterr().out
    run = save_checkpoint(tmp_path / "run", build_network("tcn", CONFIGS["tcn"]))
    status = main(["publish", "card", str(run), str(tmp_path / "zoo" / "x"), "--data", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and "streamgen publish eval" in err, err
    assert not (tmp_path / "zoo").exists()
    status = main(["publish", "example", str(run)])  # a checkpoint with no card to refresh
    err = capsys.readouterr().err.strip()
    assert status == 2 and err.count("\n") == 0 and "no example section" in err, err

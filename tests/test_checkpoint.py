"""Checkpoints: exact round trips for every network, optimizer state, and clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from pathlib import Path

import pytest
import torch

from conftest import random_onehot, randomize_
from streamgen import checkpoint
from streamgen.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_extra,
    load_optimizer_state,
    read_info,
    save_checkpoint,
)
from streamgen.nn import StreamableNetwork, build_network

SMALL = {
    "sequnet": {"channels": 8, "levels": 3, "depth": 1},
    "wavenet": {"blocks": 1, "layers": 3, "residual_channels": 8, "dilation_channels": 8,
                "skip_channels": 8},
    "tcn": {"channels": 8, "levels": 2, "dropout": 0.0},
}


def small(kind: str, rng: torch.Generator) -> StreamableNetwork:
    model = build_network(kind, SMALL[kind])
    randomize_(model, rng)
    return model


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_round_trip_reproduces_outputs_and_metadata(tmp_path: Path, kind: str, rng: torch.Generator) -> None:
    model = small(kind, rng).double()
    save_checkpoint(tmp_path / "ck", model, sample_rate=8000, training={"step": 7})
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())  # the format on disk
    digest = hashlib.sha256((tmp_path / "ck" / "model.safetensors").read_bytes()).hexdigest()
    assert raw["weights_sha256"] == digest
    assert (raw["format"], raw["version"], raw["kind"]) == ("streamgen-checkpoint", 1, kind)
    assert raw["config"] == SMALL[kind] | {k: v for k, v in raw["config"].items() if k not in SMALL[kind]}
    assert raw["params"] == model.num_parameters() and raw["receptive_field"] == model.receptive_field
    assert raw["sample_rate"] == 8000 and raw["training"] == {"step": 7}

    loaded, info = load_checkpoint(tmp_path / "ck")
    assert info.to_json() == raw and not loaded.training
    x = random_onehot(2, model.input_length(16), 256, rng)
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded.double()(x), model(x))


@pytest.mark.parametrize("stored", ["float16", "bfloat16"])
def test_weights_stored_in_half_precision_load_in_the_dtype_asked_for(
        stored: str, tmp_path: Path, rng: torch.Generator) -> None:
    model = small("sequnet", rng)
    half = checkpoint.WEIGHT_DTYPES[stored]
    save_checkpoint(tmp_path / "ck", model.to(half))
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert raw["weights_dtype"] == stored
    assert (tmp_path / "ck" / "model.safetensors").stat().st_size < 0.6 * sum(
        4 * t.numel() for t in model.state_dict().values())
    loaded, info = load_checkpoint(tmp_path / "ck")  # float32 unless asked otherwise
    assert info.weights_dtype == stored and info.to_json() == raw
    for name, value in model.state_dict().items():
        assert loaded.state_dict()[name].dtype == torch.float32
        assert torch.equal(loaded.state_dict()[name], value.float()), name
    as_stored, _ = load_checkpoint(tmp_path / "ck", dtype=half)
    for name, value in model.state_dict().items():
        got = as_stored.state_dict()[name]
        assert got.dtype == half and torch.equal(got, value), name
    # a float32 state dict written in half precision by write_weights reads back the same
    sha = checkpoint.write_weights(loaded.state_dict(), tmp_path / "w.safetensors", stored)
    assert sha == checkpoint.sha256_file(tmp_path / "w.safetensors")
    assert checkpoint.dtype_name(checkpoint.load_file(str(tmp_path / "w.safetensors"))) == stored
    counts = torch.arange(3)  # integer tensors (counters, indices) keep their dtype
    checkpoint.write_weights({"w": torch.ones(2), "n": counts}, tmp_path / "mixed.safetensors", stored)
    mixed = checkpoint.load_file(str(tmp_path / "mixed.safetensors"))
    assert mixed["w"].dtype == half and torch.equal(mixed["n"], counts) and mixed["n"].dtype == torch.int64


def test_weights_beyond_a_file_go_on_into_more_files(tmp_path: Path, rng: torch.Generator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights over ``SHARD_BYTES`` (16 MB; here 50 kB of 79) go on into model.N.safetensors,
    each hashed in the config, and read back whole; a missing or changed file is one line; a
    smaller re-save leaves no stale files."""
    model = small("sequnet", rng)
    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 50_000)
    save_checkpoint(tmp_path / "ck", model)
    files = sorted(p.name for p in (tmp_path / "ck").glob("model*.safetensors"))
    assert sum(4 * t.numel() for t in model.state_dict().values()) > 50_000
    assert "model.1.safetensors" in files
    assert all((tmp_path / "ck" / f).stat().st_size <= 50_000 for f in files)
    raw = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert sorted(raw["weights_shards"]) == sorted(f for f in files if f != "model.safetensors")
    loaded, info = load_checkpoint(tmp_path / "ck")
    assert info.to_json() == raw
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())

    shard = tmp_path / "ck" / "model.1.safetensors"
    data = shard.read_bytes()
    shard.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(CheckpointError, match=r"model.1.safetensors: sha256 .* does not match"):
        load_checkpoint(tmp_path / "ck")
    shard.unlink()
    with pytest.raises(CheckpointError, match=r"model.1.safetensors is missing; the checkpoint is "
                                              r"incomplete"):
        load_checkpoint(tmp_path / "ck")
    shard.write_bytes(data)  # whole again, then re-saved in one file
    monkeypatch.setattr(checkpoint, "SHARD_BYTES", 16_000_000)
    save_checkpoint(tmp_path / "ck", model)
    assert sorted(p.name for p in (tmp_path / "ck").glob("model*")) == ["model.safetensors"]
    assert "weights_shards" not in json.loads((tmp_path / "ck" / "config.json").read_text())


def test_shards_are_filled_in_order_up_to_the_limit() -> None:
    """Each file takes tensors in order while they fit (each counted with 256 bytes of header,
    4096 kept free per file); a tensor larger than the limit has a file to itself."""
    tensors = {f"t{i}": torch.zeros(250) for i in range(10)}  # 1,256 bytes each
    groups = [list(shard) for shard in checkpoint._shards(tensors, 4096 + 4 * 1256)]
    assert groups == [[f"t{i}" for i in range(j, min(j + 4, 10))] for j in (0, 4, 8)]
    for names, want in [("a huge b", [["a"], ["huge"], ["b"]]), ("huge a b", [["huge"], ["a", "b"]])]:
        big = {name: torch.zeros(5000 if name == "huge" else 10) for name in names.split()}
        assert [list(shard) for shard in checkpoint._shards(big, 8192)] == want


def test_a_weights_dtype_the_file_does_not_hold_is_one_line(tmp_path: Path,
                                                             rng: torch.Generator) -> None:
    save_checkpoint(tmp_path / "ck", small("sequnet", rng))
    path = tmp_path / "ck" / "config.json"
    raw = json.loads(path.read_text())
    assert "weights_dtype" not in raw  # float32 when absent: older checkpoints read alike
    path.write_text(json.dumps(raw | {"weights_dtype": "float16"}))
    with pytest.raises(CheckpointError, match=r"holds float32 weights but config.json says "
                                              r"float16; the two come from different saves"):
        load_checkpoint(tmp_path / "ck")
    path.write_text(json.dumps(raw | {"weights_dtype": "int8"}))
    with pytest.raises(CheckpointError, match=r"unknown weights dtype 'int8'; use one of"):
        read_info(tmp_path / "ck")


def test_a_save_cut_short_between_its_renames_keeps_the_previous_checkpoint(
        tmp_path: Path, rng: torch.Generator) -> None:
    """Killed after moving the old checkpoint aside, before moving the new one in: loading,
    reading its info and the next save all find the previous checkpoint back in place."""
    first, second = small("sequnet", rng), small("sequnet", rng)
    out = tmp_path / "run"

    def same(model: torch.nn.Module, other: torch.nn.Module) -> bool:
        return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                     other.state_dict().values()))

    for then in (load_checkpoint, read_info, lambda path: save_checkpoint(path, second)):
        save_checkpoint(out, first, training={"step": 1})
        out.rename(tmp_path / ".run.old")  # what the kill leaves
        then(out)
        assert out.is_dir() and not (tmp_path / ".run.old").exists()
    assert same(load_checkpoint(out)[0], second)
    save_checkpoint(out, first, training={"step": 1})
    out.rename(tmp_path / ".run.old")
    model, info = load_checkpoint(out)
    assert info.training == {"step": 1} and same(model, first) and not same(model, second)


def test_a_save_after_one_killed_before_its_cleanup_succeeds(tmp_path: Path,
                                                             rng: torch.Generator) -> None:
    """A stale ``.NAME.old`` beside a whole checkpoint (killed after the last rename, before
    the cleanup) does not stop the next save (a folder cannot replace a non-empty one)."""
    out, model = tmp_path / "ck", small("tcn", rng)
    save_checkpoint(out, small("tcn", rng))
    (tmp_path / ".ck.old").mkdir()
    (tmp_path / ".ck.old" / "config.json").write_text("{}")
    save_checkpoint(out, model)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert torch.equal(load_checkpoint(out)[0].head.weight, model.head.weight)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077, 0o002])
def test_a_save_has_the_umasks_permissions_and_leaves_the_umask_as_it_was(
        umask: int, tmp_path: Path, rng: torch.Generator) -> None:
    """Not mkdtemp's private 0700, whether the folder is new or replaced; and the process's
    umask (read by setting it) is put back."""
    old = os.umask(umask)
    try:
        folder = save_checkpoint(tmp_path / "ck", small("tcn", rng))
        for _ in range(2):  # new, then replaced
            assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~umask
            files = [p for p in folder.iterdir() if p.is_file()]
            assert files and all(stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask for p in files)
            save_checkpoint(folder, small("tcn", rng))
        after = os.umask(old)
    finally:
        os.umask(old)
    assert after == umask


def test_weights_of_a_dtype_the_format_cannot_hold_are_one_line() -> None:
    if not hasattr(torch, "float8_e4m3fn"):
        pytest.skip("this torch has no float8")
    with pytest.raises(ValueError, match="cannot be stored; use one of"):
        checkpoint.dtype_name({"w": torch.zeros(3, dtype=torch.float8_e4m3fn)})
    assert checkpoint.dtype_name({"i": torch.zeros(3, dtype=torch.int64)}) == "float32"
    assert checkpoint.dtype_name({"h": torch.zeros(3, dtype=torch.float16)}) == "float16"


def test_weight_norm_parametrizations_round_trip(tmp_path: Path, rng: torch.Generator) -> None:
    model = small("tcn", rng)
    keys = list(model.state_dict())
    assert any("parametrizations.weight.original0" in k for k in keys)
    save_checkpoint(tmp_path / "ck", model)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert list(loaded.state_dict()) == keys
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k


@pytest.mark.parametrize("shard_bytes", [None, 60_000])
def test_optimizer_state_resumes_identically(tmp_path: Path, rng: torch.Generator, shard_bytes: int | None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if shard_bytes:  # a limit below the state's size: several files, none over the limit
        monkeypatch.setattr(checkpoint, "SHARD_BYTES", shard_bytes)
    model = small("sequnet", rng)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, betas=(0.8, 0.95))
    x = random_onehot(2, model.input_length(8), 256, rng).float()

    def step(m: torch.nn.Module, o: torch.optim.Optimizer) -> None:
        o.zero_grad()
        m(x).square().mean().backward()
        o.step()

    for _ in range(3):
        step(model, opt)
    save_checkpoint(tmp_path / "ck", model, optimizer=opt, extra={"rng": torch.arange(5)})
    files = sorted(p.name for p in (tmp_path / "ck").glob("optimizer*.safetensors"))
    sizes = [t.numel() * t.element_size() for s in opt.state_dict()["state"].values() for t in s.values()]
    if shard_bytes:
        assert max(sizes) < shard_bytes - 5000 and len(files) >= sum(sizes) // shard_bytes > 1
        assert all((tmp_path / "ck" / f).stat().st_size <= shard_bytes for f in files)
    else:
        assert files == ["optimizer.safetensors"]
    loaded, _ = load_checkpoint(tmp_path / "ck")
    loaded.train()
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1.0)
    load_optimizer_state(tmp_path / "ck", opt2)
    assert opt2.param_groups[0]["lr"] == 1e-2 and tuple(opt2.param_groups[0]["betas"]) == (0.8, 0.95)
    step(model, opt)
    step(loaded, opt2)
    for a, b in zip(model.parameters(), loaded.parameters()):
        assert torch.equal(a, b)
    assert torch.equal(load_extra(tmp_path / "ck")["rng"], torch.arange(5))
    if shard_bytes:  # one of several files lost
        (tmp_path / "ck" / files[0]).unlink()
        with pytest.raises(CheckpointError, match=rf"{files[0]}: missing; copy the whole"):
            load_optimizer_state(tmp_path / "ck", opt2)


def test_optimizer_state_that_is_not_tensors_round_trips(tmp_path: Path, rng: torch.Generator) -> None:
    """Numbers in an optimizer's per-parameter state (an older torch's ``step``, a
    custom optimizer's counters) are kept beside its tensors."""
    model = small("tcn", rng)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(random_onehot(1, model.input_length(4), 256, rng).float()).sum().backward()
    opt.step()
    params = list(model.parameters())
    opt.state[params[0]].update(step=7, visits=3)
    opt.state[params[-1]]["step"] = 2.5
    save_checkpoint(tmp_path / "ck", model, optimizer=opt)
    fresh = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    load_optimizer_state(tmp_path / "ck", fresh)
    want, got = opt.state_dict()["state"], fresh.state_dict()["state"]
    assert sorted(got) == sorted(want)
    for index, entries in want.items():
        assert sorted(got[index]) == sorted(entries)
        for name, value in entries.items():
            assert (torch.equal(got[index][name], value) if isinstance(value, torch.Tensor)
                    else got[index][name] == value), (index, name)


def test_paths_given_as_text(tmp_path: Path, rng: torch.Generator) -> None:
    model, out = small("tcn", rng), str(tmp_path / "ck")
    save_checkpoint(out, model)
    save_checkpoint(out, model, training={"step": 2})  # onto the one there
    assert read_info(out).training == {"step": 2}
    Path(out).rename(tmp_path / ".ck.old")  # a save cut short between its renames
    checkpoint.recover_checkpoint(out)
    assert torch.equal(load_checkpoint(out)[0].head.weight, model.head.weight)


def test_resave_keeps_foreign_files_and_replaces_weights(tmp_path: Path, rng: torch.Generator) -> None:
    first, second = small("tcn", rng), small("tcn", rng)
    save_checkpoint(tmp_path / "ck", first, optimizer=torch.optim.SGD(first.parameters(), 0.1))
    (tmp_path / "ck" / "README.md").write_text("card")
    save_checkpoint(tmp_path / "ck", second)
    loaded, _ = load_checkpoint(tmp_path / "ck")
    assert torch.equal(loaded.head.weight, second.head.weight)
    assert (tmp_path / "ck" / "README.md").read_text() == "card"
    assert not (tmp_path / "ck" / "optimizer.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


# -- damaged checkpoints ------------------------------------------------------------------
@pytest.fixture
def saved(tmp_path: Path, rng: torch.Generator) -> Path:
    return save_checkpoint(tmp_path / "ck", small("sequnet", rng))


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def edit_config(path: Path, **changes) -> None:
    raw = json.loads((path / "config.json").read_text())
    for key, value in changes.items():
        if isinstance(value, dict):
            raw[key].update(value)
        else:
            raw[key] = value
    (path / "config.json").write_text(json.dumps(raw))


def test_flipped_byte_fails_the_hash(saved: Path, rng: torch.Generator) -> None:
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    position = int(torch.randint(len(data) // 2, len(data), (1,), generator=rng))
    data[position] ^= 0xFF
    weights.write_bytes(bytes(data))
    expect_error(saved, "model.safetensors", "sha256", "corrupt")


def test_truncated_weights(saved: Path) -> None:
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    expect_error(saved, "sha256")
    # Even with a matching recorded hash, a truncated file is reported as such.
    edit_config(saved, weights_sha256=hashlib.sha256(weights.read_bytes()).hexdigest())
    expect_error(saved, "corrupt or truncated")


def test_missing_files(saved: Path, tmp_path: Path) -> None:
    expect_error(tmp_path / "nowhere", "no such checkpoint directory")
    assert read_info(saved / "config.json").folder == saved  # its files name it too
    (saved / "README.md").write_text("card")  # any other file does not
    expect_error(saved / "README.md", "no such checkpoint directory")
    (saved / "model.safetensors").unlink()
    expect_error(saved, "model.safetensors is missing")


@pytest.mark.parametrize("shards", [["model.1.safetensors"], {"../model.1.safetensors": "00"},
                                    {"model.1.safetensors": 5}, {"notes.txt": "00"}],
                         ids=["list", "outside", "hash-not-text", "not-weights"])
def test_bad_weights_shards_are_one_line(saved: Path, shards) -> None:
    raw = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps(raw | {"weights_shards": shards}))
    expect_error(saved, '"weights_shards" must map model.N.safetensors')


def test_unknown_kind_bad_json_and_version(saved: Path) -> None:
    edit_config(saved, kind="transformer")
    expect_error(saved, "unknown network kind 'transformer'", "sequnet")
    (saved / "config.json").write_text("{not json")
    expect_error(saved, "not valid JSON")
    (saved / "config.json").write_text(json.dumps({"format": "streamgen-checkpoint", "version": 99}))
    expect_error(saved, "version 99")


def test_recommended_start_round_trips_and_is_checked(saved: Path, tmp_path: Path, rng: torch.Generator) -> None:
    assert load_checkpoint(saved)[1].start == "zeros" and "start" not in json.loads((saved / "config.json").read_text())
    silent = save_checkpoint(tmp_path / "silent", small("sequnet", rng))
    edit_config(silent, start="silence")  # what `publish card --start silence` records
    info = load_checkpoint(silent)[1]
    assert info.start == "silence" and read_info(silent).start == "silence"
    assert info.to_json()["start"] == "silence"  # and is written back as it was read
    edit_config(saved, start="noise")
    expect_error(saved, "unknown start 'noise'", "silence")


def test_config_that_does_not_match_the_weights(saved: Path) -> None:
    edit_config(saved, config={"channels": 16})
    message = expect_error(saved, "do not match the config", "shape")
    found, implied = re.search(r"has shape (\(.*?\)), config implies (\(.*?\))", message).groups()
    assert found != implied and "8" in found and "16" in implied, message  # names a mismatch
    edit_config(saved, config={"channels": 8, "levels": 4})
    expect_error(saved, "do not match the config", "missing")
    edit_config(saved, config={"levels": 3, "depth": 0})
    expect_error(saved, "invalid sequnet config")


def test_optimizer_state_errors(saved: Path, rng: torch.Generator) -> None:
    other = small("tcn", rng)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_optimizer_state(saved, torch.optim.Adam(other.parameters()))
    model, _ = load_checkpoint(saved)
    opt = torch.optim.Adam(model.parameters())
    model(random_onehot(1, model.input_length(4), 256, rng).float()).sum().backward()
    opt.step()
    save_checkpoint(saved, model, optimizer=opt)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_optimizer_state(saved, torch.optim.Adam(other.parameters()))
    for lost in ("optimizer.json", "optimizer.safetensors"):  # either half alone is none
        kept = (saved / lost).read_bytes()
        (saved / lost).unlink()
        with pytest.raises(CheckpointError, match="no optimizer state"):
            load_optimizer_state(saved, torch.optim.Adam(model.parameters()))
        (saved / lost).write_bytes(kept)

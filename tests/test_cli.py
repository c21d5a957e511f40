"""The ``streamgen`` command as users run it: subprocesses, real files, real models."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import randomize_
from streamgen.audio.io import to_pcm16
from streamgen.audio.mulaw import mulaw_decode
from streamgen.checkpoint import save_checkpoint
from streamgen.engine.engine import numba_available
from streamgen.nn import SeqUNet, SeqUNetConfig

RATE = 16000


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model folder with a small random Seq-U-Net named ``default`` and a corrupt copy."""
    root = tmp_path_factory.mktemp("zoo")
    model = SeqUNet(SeqUNetConfig(8, 4, 1, 3))
    randomize_(model, torch.Generator().manual_seed(11), scale=1.0)
    save_checkpoint(root / "default", model, sample_rate=RATE)
    save_checkpoint(root / "broken", model, sample_rate=RATE)
    save_checkpoint(root / "tuned", model, sample_rate=RATE)
    save_checkpoint(root / "starts-silent", model, sample_rate=RATE)
    config = json.loads((root / "tuned" / "config.json").read_text())
    config["sampling"] = {"top_p": 0.5, "temperature": 0.8}  # the model's recommendation
    (root / "tuned" / "config.json").write_text(json.dumps(config))
    config = json.loads((root / "starts-silent" / "config.json").read_text())
    config["start"] = "silence"  # recommended, as `publish card --start silence` records it
    (root / "starts-silent" / "config.json").write_text(json.dumps(config))
    weights = root / "broken" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    return root


def streamgen(zoo: Path, *args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "STREAMGEN_MODELS": str(zoo)}
    return subprocess.run(["streamgen", *args], capture_output=True, env=env, cwd=cwd, **kw)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("ext,fmt", [("wav", "WAV"), ("flac", "FLAC"), ("ogg", "OGG")])
def test_generate_writes_readable_files(zoo: Path, tmp_path: Path, ext: str, fmt: str) -> None:
    out = tmp_path / f"out.{ext}"
    result = streamgen(zoo, "generate", "-o", str(out), "--seconds", "0.5", "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    info = sf.info(str(out))
    assert (info.samplerate, info.channels, info.format) == (RATE, 1, fmt)
    audio, _ = sf.read(str(out))
    assert len(audio) == RATE // 2
    assert audio.std() > 1e-3  # a random model makes noise, not silence


def test_generate_no_arguments_but_output_uses_default_model(zoo: Path, tmp_path: Path) -> None:
    result = streamgen(zoo, "generate", "-o", "x.wav", "--seconds", "0.2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr.decode()
    assert "real time" in result.stderr.decode()  # the progress bar reports the speed
    assert sf.info(str(tmp_path / "x.wav")).frames == int(0.2 * RATE)


def test_stdout_pcm_is_exact_and_seeded_runs_reproduce(zoo: Path, tmp_path: Path) -> None:
    runs = [streamgen(zoo, "generate", "-o", "-", "--seconds", "0.3", "--seed", s, "--quiet")
            for s in ("5", "5", "6")]
    assert all(r.returncode == 0 for r in runs)
    assert len(runs[0].stdout) == 2 * int(0.3 * RATE)  # s16le mono
    assert runs[0].stdout == runs[1].stdout and runs[0].stdout != runs[2].stdout
    # the same seed through a file gives the same samples
    out = tmp_path / "same.wav"
    streamgen(zoo, "generate", "-o", str(out), "--seconds", "0.3", "--seed", "5", "--quiet")
    pcm = np.frombuffer(runs[0].stdout, dtype="<i2")
    np.testing.assert_array_equal(sf.read(str(out), dtype="int16")[0], pcm)


def test_batch_and_prime(zoo: Path, tmp_path: Path) -> None:
    prime = tmp_path / "prompt.flac"
    t = np.arange(int(0.4 * 44100)) / 44100
    sf.write(str(prime), np.stack([np.sin(2 * np.pi * 440 * t)] * 2, 1) * 0.5, 44100)
    result = streamgen(zoo, "generate", "-o", str(tmp_path / "take_{i}.wav"), "--batch", "3",
                       "--seconds", "0.25", "--prime", str(prime), "--top-k", "20", "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    takes = [sf.read(str(tmp_path / f"take_{i}.wav"))[0] for i in range(3)]
    assert all(len(a) == 4000 for a in takes)
    assert not np.array_equal(takes[0], takes[1])  # independent streams
    # take i of a batch seeded s plays again alone with --seed s + i (the default seed is 0)
    result = streamgen(zoo, "generate", "-o", str(tmp_path / "again.wav"), "--seconds", "0.25",
                       "--prime", str(prime), "--top-k", "20", "--seed", "2", "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    assert np.array_equal(sf.read(str(tmp_path / "again.wav"))[0], takes[2])


def test_spectrogram(zoo: Path, tmp_path: Path) -> None:
    png = tmp_path / "spec.png"
    result = streamgen(zoo, "generate", "-o", str(tmp_path / "s.wav"), "--seconds", "0.3",
                       "--spectrogram", str(png), "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sigint_keeps_a_valid_file(zoo: Path, tmp_path: Path) -> None:
    out = tmp_path / "long.wav"
    env = {**os.environ, "STREAMGEN_MODELS": str(zoo)}
    proc = subprocess.Popen(["streamgen", "generate", "-o", str(out), "--seconds", "600",
                             "--block", "256", "--quiet"], env=env, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.stat().st_size < 30000):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert "Traceback" not in err.decode() and "interrupted" in err.decode()
    audio, rate = sf.read(str(out))
    assert rate == RATE and 10000 <= len(audio) < 600 * RATE
    assert f"kept {len(audio)} samples" in err.decode()


def test_sigint_at_any_moment_of_start_up_is_one_line(zoo: Path, tmp_path: Path) -> None:
    """Ctrl-C while Python, numpy and torch are importing, or the model loads: exit 130 with
    one line (an import cut short left torch half-initialised: tracebacks, or a crash)."""
    env = {**os.environ, "STREAMGEN_MODELS": str(zoo)}
    for delay in (0.1, 0.3, 0.6, 1.0):
        proc = subprocess.Popen(["streamgen", "generate", "-o", str(tmp_path / f"{delay}.wav"),
                                 "--seconds", "60", "--quiet"], env=env, stderr=subprocess.PIPE)
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        lines = err.decode().splitlines()
        assert proc.returncode == 130 and len(lines) == 1, (delay, proc.returncode, err.decode())
        assert lines[0].startswith("streamgen: interrupted"), lines


def test_include_prime_starts_the_file_with_the_prompt(zoo: Path, tmp_path: Path) -> None:
    prime = tmp_path / "prompt.wav"
    prompt = np.random.default_rng().uniform(-0.5, 0.5, 3000)
    sf.write(str(prime), prompt, RATE, subtype="PCM_16")
    common = ["--seconds", "0.2", "--prime", str(prime), "--seed", "4", "--quiet"]
    plain, both = tmp_path / "plain.wav", tmp_path / "both.wav"
    for out, extra in ((plain, []), (both, ["--include-prime"])):
        result = streamgen(zoo, "generate", "-o", str(out), *common, *extra)
        assert result.returncode == 0, result.stderr.decode()
    with_prompt, generated = sf.read(str(both), dtype="int16")[0], sf.read(str(plain), dtype="int16")[0]
    assert len(with_prompt) == 3000 + 3200
    np.testing.assert_array_equal(with_prompt[:3000], sf.read(str(prime), dtype="int16")[0])
    np.testing.assert_array_equal(with_prompt[3000:], generated)  # the same continuation


def test_progress_shows_one_speed_and_ctrl_c_comes_after_it(zoo, tmp_path, monkeypatch, capsys) -> None:
    """The bar's samples/s and real-time factor are one figure in two units; the
    "interrupted" line follows the bar's last line instead of breaking into it."""
    from streamgen.cli import main as cli_main
    from streamgen.generation import AudioGenerator

    monkeypatch.setenv("STREAMGEN_MODELS", str(zoo))
    blocks = AudioGenerator.blocks

    def interrupted(self, total, block):
        start = time.monotonic()
        for b in blocks(self, total, block):
            if time.monotonic() - start > 1.0:  # the bar has shown its speed by then
                raise KeyboardInterrupt
            yield b

    monkeypatch.setattr(AudioGenerator, "blocks", interrupted)
    out = tmp_path / "cut.wav"
    assert cli_main.main(["generate", "-o", str(out), "--seconds", "60", "--block", "256"]) == 130
    err = capsys.readouterr().err
    speeds = re.findall(r"([\d.]+) ksample/s, ([\d.]+)x real time", err)
    assert speeds and "it/s" not in err and "sample/s]" not in err
    for ksamples, factor in speeds:
        assert abs(float(ksamples) * 1000 / RATE - float(factor)) <= 0.05 / RATE * 1000 + 0.005
    last = [line for line in re.split(r"[\r\n]", err) if line.strip()]
    kept = sf.info(str(out)).frames
    assert last[-1] == f"streamgen: interrupted; kept {kept} samples ({kept / RATE:.2f} s) in {out}"
    assert "/960k [" in last[-2]  # the bar's final state, on its own line before


@pytest.mark.parametrize("error", [
    RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 128716800000 "
                 "bytes. Error code 12 (Cannot allocate memory)"),
    RuntimeError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore lines"),
    MemoryError()])
def test_out_of_memory_is_one_line(error: BaseException, monkeypatch: pytest.MonkeyPatch,
                                   capsys) -> None:
    """An allocation that fails (too large a --batch) is one line naming the fix; any other
    RuntimeError is a bug and keeps its traceback."""
    from streamgen.cli import main as cli_main
    from streamgen.cli import models

    def raises(exc: BaseException):
        def run(args):
            raise exc
        return run

    monkeypatch.setattr(models, "run_models", raises(error))
    assert cli_main.main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("streamgen: error: out of memory (")
    assert "--batch" in err
    monkeypatch.setattr(models, "run_models", raises(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        cli_main.main(["models"])


def test_bench_refuses_a_missing_model_and_a_file_for_its_folder(zoo: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys) -> None:
    """Before any measuring: a model named but not in the zoo (it used to run random weights
    under the name "default-architecture"), and an --out that is a file (the results were
    lost after the whole run)."""
    from streamgen.cli import main as cli_main

    monkeypatch.setenv("STREAMGEN_MODELS", str(zoo))
    assert cli_main.main(["bench", "--quick", "--model", "nope", "--out", str(tmp_path)]) == 2
    assert "nope" in capsys.readouterr().err
    taken = tmp_path / "afile"
    taken.write_text("")
    assert cli_main.main(["bench", "--quick", "--out", str(taken)]) == 2
    assert capsys.readouterr().err == f"streamgen: error: --out {taken} is a file; give a folder for the results\n"


def test_ctrl_c_during_start_up_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Ctrl-C while torch is still importing (before any command runs) exits 130 quietly."""
    from streamgen.cli import main as cli_main

    def interrupted_import():
        raise KeyboardInterrupt

    monkeypatch.setattr(cli_main, "build_parser", interrupted_import)
    try:
        status = cli_main.main(["generate", "-o", "x.wav"])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main() (it would print a traceback)")
    assert status == 130
    assert capsys.readouterr().err == "streamgen: interrupted\n"


@pytest.mark.skipif(not numba_available(), reason="numba is not installed")
def test_first_compile_is_announced_once(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    """A cold numba cache gets one line before the compile; a warm cache, the torch
    backend and --quiet get none."""
    from streamgen.cli import main as cli_main
    from streamgen.engine.fast import kernels

    note = "compiling the CPU kernels for first use"
    for cached, extra, expect in [(False, [], True), (True, [], False), (False, ["--backend", "torch"], False),
                                  (False, ["--quiet"], False)]:
        monkeypatch.setattr(kernels, "kernels_cached", lambda cached=cached: cached)
        out = tmp_path / f"{len(list(tmp_path.iterdir()))}.wav"
        assert cli_main.main(["generate", "-o", str(out), "--seconds", "0.02", *extra]) == 0
        assert (note in capsys.readouterr().err) == expect, (cached, extra)


def test_errors_are_one_line(zoo: Path, tmp_path: Path) -> None:
    (tmp_path / "exists.wav").write_bytes(b"x")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    cases = {
        "no model named 'nope'": ["generate", "-o", str(tmp_path / "a.wav"), "--model", "nope"],
        "sha256": ["generate", "-o", str(tmp_path / "b.wav"), "--model", "broken"],
        "bad.wav": ["generate", "-o", str(tmp_path / "c.wav"), "--prime", str(tmp_path / "bad.wav")],
        "--force": ["generate", "-o", str(tmp_path / "exists.wav")],
        "does not exist": ["generate", "-o", str(tmp_path / "no" / "dir" / "d.wav")],
        "temperature": ["generate", "-o", str(tmp_path / "e.wav"), "--temperature", "0"],
        "cannot write .mp4": ["generate", "-o", str(tmp_path / "f.mp4"), "--seconds", "0.1"],
    }
    for needle, args in cases.items():
        line = one_line_error(streamgen(zoo, *args))
        assert needle in line, (needle, line)
    # --force overwrites
    ok = streamgen(zoo, "generate", "-o", str(tmp_path / "exists.wav"), "--seconds", "0.1",
                   "--force", "--quiet")
    assert ok.returncode == 0 and sf.info(str(tmp_path / "exists.wav")).frames == 1600


@pytest.mark.parametrize("args,dest,want", [
    (["generate", "-o", "x.wav", "--seconds", "90"], "seconds", 90.0),
    (["generate", "-o", "x.wav", "--seconds", "1.5m"], "seconds", 90.0),
    (["play", "--seconds", "0"], "seconds", 0.0),
    (["play", "--prebuffer", "250s"], "prebuffer", 250.0),
    (["train", "--data", "a", "--out", "r", "--time-budget", "1.5H"], "time_budget_s", 5400.0),
    (["publish", "example", "default", "--seconds", "0.25m"], "seconds", 15.0),
])
def test_durations_take_one_syntax_everywhere(args: list[str], dest: str, want: float) -> None:
    """Every duration option reads plain seconds or a unit (s, m, h), by one parser."""
    from streamgen.cli.main import build_parser

    assert getattr(build_parser().parse_args(args), dest) == want


def test_models_and_info(zoo: Path) -> None:
    listing = streamgen(zoo, "models")
    assert listing.returncode == 0
    text = listing.stdout.decode()
    assert "default" in text and "sequnet" in text and "broken" in text
    info = streamgen(zoo, "info", "default")
    assert info.returncode == 0, info.stderr.decode()
    text = info.stdout.decode()
    model = SeqUNet(SeqUNetConfig(8, 4, 1, 3))
    assert f"{model.receptive_field:,} samples" in text and f"{model.num_parameters():,}" in text
    assert "sha256" in text
    assert "sha256" in one_line_error(streamgen(zoo, "info", "broken"))


def test_help_everywhere(zoo: Path) -> None:
    """Every command's --help, with examples; options only where the command has them."""
    for sub in ["generate", "play", "models", "info", "train", "bench", "publish",
                "publish eval", "publish card", "publish example"]:
        result = streamgen(zoo, *sub.split(), "--help")
        assert result.returncode == 0 and b"usage: streamgen " + sub.encode() in result.stdout
        assert b"\nexamples:\n  streamgen " + sub.encode() in result.stdout, sub
        text = b" ".join(result.stdout.split())
        assert (b"--batch" in text) == (sub in ("generate", "train")), sub


HELP_IMPORTS = """
import sys
from streamgen.cli.main import main
for argv in ([], ["--help"], ["generate", "--bogus"], *([s, "--help"] for s in SUBS)):
    try:
        main(argv)
    except SystemExit:
        pass
print(*sorted(m for m in ("torch", "numba", "safetensors", "soundfile") if m in sys.modules))
"""


def test_help_and_usage_errors_import_no_torch(tmp_path: Path) -> None:
    """``streamgen --help``, every command's help and a usage error answer at once: the parser
    is built without torch, numba or the audio libraries (2.4 s of imports here)."""
    subs = ["generate", "play", "models", "info", "train", "bench", "publish"]
    result = subprocess.run([sys.executable, "-c", f"SUBS = {subs!r}" + HELP_IMPORTS],
                            capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "", result.stdout.splitlines()[-1]
    assert "usage: streamgen publish" in result.stdout  # every help printed


import live_audio  # noqa: E402  (the paced JACK dummy device rig)

paced_device = live_audio.paced_device


def test_play_through_a_paced_device_plays_what_generate_writes(zoo, paced_device, tmp_path) -> None:
    capture = tmp_path / "played.raw"
    env = {**live_audio.alsa_env(tmp_path, paced_device.server, capture), "STREAMGEN_MODELS": str(zoo)}
    saved = tmp_path / "saved.wav"
    start = time.monotonic()
    result = subprocess.run(["streamgen", "play", "--seconds", "2", "--seed", "3", "--save", str(saved)],
                            env=env, capture_output=True, text=True, timeout=120)
    wall = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert "underflows 0" in result.stderr, result.stderr
    if numba_available():  # live playback takes the compiled backend on the CPU
        assert "(numba backend)" in result.stderr
    played = np.fromfile(capture, dtype="<f4")
    first = int(np.flatnonzero(played)[0])  # PortAudio primes the device with silence
    played = played[first : first + 2 * RATE]
    reference = streamgen(zoo, "generate", "-o", "-", "--seconds", "2", "--seed", "3", "--quiet")
    generated = np.frombuffer(reference.stdout, dtype="<i2") / 32768.0
    assert len(played) == len(generated) == 2 * RATE
    # int16 holds 1.0 as 32767/32768: within one step of what was played, half a step below
    np.testing.assert_allclose(played, generated, atol=1.0001 / 32768)
    assert np.mean(np.abs(played - generated) <= 0.5001 / 32768) > 0.99
    saved_audio = sf.read(str(saved), dtype="int16")[0]  # what the device got, as generate
    np.testing.assert_array_equal(saved_audio, np.frombuffer(reference.stdout, dtype="<i2"))  # writes it
    assert sf.info(str(saved)).subtype == "PCM_16"
    assert wall >= 2.0  # paced by the device clock, not faster


def test_train_then_generate_with_the_result(zoo: Path, tmp_path: Path) -> None:
    data = tmp_path / "audio"
    data.mkdir()
    t = np.arange(22050) / 22050
    for i, f0 in enumerate([220, 330, 440, 550]):
        sf.write(str(data / f"tone{i}.wav"), 0.4 * np.sin(2 * np.pi * f0 * t), 22050)
    run = tmp_path / "run"
    result = streamgen(zoo, "train", "--data", str(data), "--out", str(run), "--config",
                       '{"channels": 4, "levels": 2, "depth": 1, "kernel_size": 3}',
                       "--window", "64", "--batch", "2", "--steps", "4", "--val-every", "2",
                       "--checkpoint-every", "2", "--threads", "1", "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 0, result.stderr.decode()
    assert "checkpoint:" in result.stdout.decode()
    info = streamgen(zoo, "info", str(run))
    assert info.returncode == 0 and b"sequnet" in info.stdout
    rows = info.stdout.decode().splitlines()[1:]
    assert any(re.fullmatch(r"  training steps +4", row) for row in rows), rows  # the run's step count
    assert any(re.fullmatch(r"  data +audio folder \(\d+ train, \d+ validation files; id [0-9a-f]{12}\)", row)
               for row in rows), rows  # the data the run saw
    fields = [row for row in rows if "sha256" not in row]
    assert len({len(re.match(r"  \S+(?: \S+)* {2,}", row).group()) for row in fields}) == 1, rows  # one column
    assert len({row.index(" bytes  sha256") for row in rows if "sha256" in row}) == 1, rows  # sizes aligned
    bits = next(row for row in rows if "val bits/sample" in row)
    assert re.fullmatch(r"  val bits/sample +\d+\.\d{4}", bits), bits  # four decimals, not fifteen
    out = tmp_path / "from_run.wav"
    gen = streamgen(zoo, "generate", "-o", str(out), "--model", str(run), "--seconds", "0.1", "--quiet")
    assert gen.returncode == 0, gen.stderr.decode()
    assert sf.info(str(out)).frames == 1600
    again = streamgen(zoo, "train", "--data", str(data), "--out", str(run), "--steps", "4")
    assert "resume" in one_line_error(again)  # an existing run is not overwritten silently


def test_recommended_sampling_applies_unless_overridden(zoo: Path) -> None:
    def pcm(*extra: str) -> bytes:
        result = streamgen(zoo, "generate", "-o", "-", "--model", "tuned", "--seconds", "0.2",
                           "--seed", "1", "--quiet", *extra)
        assert result.returncode == 0, result.stderr.decode()
        return result.stdout

    plain = pcm()
    assert plain == pcm("--top-p", "0.5", "--temperature", "0.8")
    assert plain != pcm("--top-p", "1", "--temperature", "1")
    assert plain != pcm("--temperature", "1.2")  # one option overrides, the other stays
    assert b"top_p" in streamgen(zoo, "info", "tuned").stdout


def test_start_option_reaches_the_engine(zoo: Path) -> None:
    """--start silence: the first sample is drawn from the model (after a silent history), so
    the output differs from the default zero-vector start, whose first sample is silence."""
    runs = {start: streamgen(zoo, "generate", "-o", "-", "--seconds", "0.05", "--seed", "3",
                             "--quiet", "--start", start) for start in ("zeros", "silence")}
    assert all(r.returncode == 0 for r in runs.values()), runs["silence"].stderr.decode()
    pcm = {k: np.frombuffer(r.stdout, dtype="<i2") for k, r in runs.items()}
    silence = to_pcm16(mulaw_decode(np.array([128])))[0]  # the silence class, as PCM
    assert pcm["zeros"][0] == silence and not np.array_equal(pcm["zeros"], pcm["silence"])
    # the same weights recorded with start "silence" (as train --start-windows records them)
    # start there unless told otherwise
    for given, expected in ((), "silence"), (("--start", "zeros"), "zeros"):
        run = streamgen(zoo, "generate", "-o", "-", "--model", "starts-silent", "--seconds", "0.05",
                        "--seed", "3", "--quiet", *given)
        assert run.returncode == 0 and run.stdout == runs[expected].stdout, run.stderr.decode()
    assert re.search(r"start +silence \(the history", streamgen(zoo, "info", "starts-silent").stdout.decode())

"""The README's fault table: every bad input through the real command line (``main()``), each
answered by one line naming the problem and the fix, exit status 2, and no file touched.

Missing optional packages, a machine without a GPU or without audio outputs, and an old
libsndfile are faked in-process, so each row runs the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import randomize_
from streamgen.checkpoint import save_checkpoint
from streamgen.cli.main import main
from streamgen.nn import SeqUNet, SeqUNetConfig

RATE = 16000


def fake_sounddevice(outputs: list[str]) -> types.ModuleType:
    """A ``sounddevice`` whose PortAudio lists these output devices (16 kHz mono accepted) and
    whose streams take samples as fast as they come, as a null PCM does."""
    sd = types.ModuleType("sounddevice")

    class PortAudioError(Exception):
        pass

    devices = [{"index": i, "name": n, "hostapi": 0, "max_output_channels": 2,
                "default_samplerate": 48000.0} for i, n in enumerate(outputs)]

    def query_devices(kind=None):
        if kind is None:
            return devices
        if not devices:
            raise PortAudioError("no default output")
        return devices[0]

    sd.PortAudioError, sd.query_devices = PortAudioError, query_devices
    sd.query_hostapis = lambda: [{"name": "ALSA"}]
    sd.check_output_settings = lambda **kw: None
    sd.CallbackStop = type("CallbackStop", (Exception,), {})

    class OutputStream:
        latency = 0.05

        def __init__(self, callback, finished_callback, channels, **kwargs):
            self.callback, self.finished, self.channels = callback, finished_callback, channels
            self.stopped = threading.Event()
            self.thread = threading.Thread(target=self.run, daemon=True)

        def run(self) -> None:
            status = types.SimpleNamespace(output_underflow=False)
            out = np.zeros((256, self.channels), np.float32)
            try:
                while not self.stopped.is_set():
                    self.callback(out, 256, None, status)
                    time.sleep(1e-4)  # a null PCM: nothing paces it
            except sd.CallbackStop:
                pass
            self.finished()

        def start(self) -> None:
            self.thread.start()

        def abort(self) -> None:
            self.stopped.set()
            self.thread.join()

        def close(self) -> None:
            pass

    sd.OutputStream = OutputStream
    return sd


def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def gpu_without_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU newer than every architecture this CUDA build of torch has kernels for."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (12, 0))
    monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: ["sm_80", "sm_90"])
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "NVIDIA RTX PRO 6000")


def no_kernels_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU machine as users have it: no Triton interpreter or numba simulator switched on
    (the tests switch both on without a GPU)."""
    monkeypatch.setattr("streamgen.engine.gpu.cuda_executor.simulating", lambda: False)
    monkeypatch.setattr("streamgen.engine.gpu.triton_executor.interpreting", lambda: False)


def missing(*modules: str):
    def setup(monkeypatch: pytest.MonkeyPatch) -> None:
        for name in modules:
            monkeypatch.setitem(sys.modules, name, None)  # `import name` raises ImportError
    return setup


def audio_outputs(*names: str):
    def setup(monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "sounddevice", fake_sounddevice(list(names)))
    return setup


def slow_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamgen.audio import live

    audio_outputs("speakers")(monkeypatch)
    monkeypatch.setattr(live, "measure_realtime_factor", lambda *a, **k: (0.5, []))


def old_libsndfile(monkeypatch: pytest.MonkeyPatch) -> None:
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)


def few_open_files(monkeypatch: pytest.MonkeyPatch) -> None:
    import resource

    monkeypatch.setattr(resource, "getrlimit", lambda which: (256, 4096))


def terminal_stdout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)


GEN = ["generate", "-o", "new.wav", "--seconds", "0.1"]
TRAIN = ["train", "--data", "audio", "--out", "run", "--steps", "1"]

# (id, arguments, text the one line must hold, fake) -- mirrored by the README's fault table
FAULTS = [
    ("unknown model", [*GEN, "--model", "nope"], "no model named 'nope'", None),
    ("corrupt model", [*GEN, "--model", "broken"], "sha256", None),
    ("corrupt model info", ["info", "broken"], "sha256", None),
    ("existing output", ["generate", "-o", "exists.wav"], "exists; pass --force", None),
    ("missing output folder", ["generate", "-o", "no/dir/x.wav"], "folder no/dir does not exist", None),
    ("unknown output format", ["generate", "-o", "x.xyz"], "cannot write .xyz", None),
    ("MP3 without libsndfile 1.1", ["generate", "-o", "x.mp3"], "cannot write MP3 (1.1 or newer", old_libsndfile),
    ("raw PCM to a terminal", ["generate", "-o", "-"], "a terminal cannot show", terminal_stdout),
    ("missing prime", [*GEN, "--prime", "nothere.wav"], "nothere.wav: no such audio file", None),
    ("unreadable prime", [*GEN, "--prime", "bad.wav"], "bad.wav: not a readable audio file", None),
    ("--include-prime alone", [*GEN, "--include-prime"], "--include-prime needs --prime", None),
    ("--seconds nan", ["generate", "-o", "x.wav", "--seconds", "nan"], "'nan' is not a duration", None),
    ("--seconds inf", ["generate", "-o", "x.wav", "--seconds", "inf"], "'inf' is not a duration", None),
    ("--seconds negative", ["generate", "-o", "x.wav", "--seconds", "-2"], "'-2' is not a duration", None),
    ("--seconds zero", ["generate", "-o", "x.wav", "--seconds", "0"], "seconds > 0", None),
    ("play --seconds nan", ["play", "--seconds", "nan"], "'nan' is not a duration", None),
    ("bad sampling", [*GEN, "--temperature", "0"], "temperature", None),
    ("bad --batch", [*GEN, "--batch", "0"], "argument --batch: '0' is not a whole number >= 1", None),
    ("--batch past the open-file limit", [*GEN, "--batch", "300"], "(256, ulimit -n)", few_open_files),
    ("--seconds under one sample", [*GEN[:3], "--seconds", "1e-9"], "is less than one sample at 16000 Hz",
     None),
    ("prime with NaN", [*GEN, "--prime", "nan.wav"], "nan.wav: holds NaN or infinite samples", None),
    ("unreadable prime, no librosa", [*GEN, "--prime", "bad.wav"], "bad.wav: not a readable audio file",
     missing("librosa")),
    ("model with a bad sample rate", ["info", "badrate"], "sample_rate must be a whole number of Hz", None),
    ("generate from a model of notes", [*GEN, "--model", "notes"], "notes is not an audio model", None),
    ("bench: unknown model", ["bench", "--quick", "--model", "nope"], "no model named 'nope'", None),
    ("bench --out a file", ["bench", "--quick", "--out", "exists.wav"], "--out exists.wav is a file", None),
    ("bad --threads", ["bench", "--threads", "0"], "argument --threads: '0' is not a whole number", None),
    ("train --batch 0", [*TRAIN, "--batch", "0"], "argument --batch: '0' is not a whole number", None),
    ("train --grad-clip negative", [*TRAIN, "--grad-clip", "-1"], "grad_clip must be a finite number > 0",
     None),
    ("train --lr-final nan", [*TRAIN, "--lr-final", "nan"], "lr_final must be a finite number >= 0", None),
    ("train --time-budget inf", [*TRAIN, "--time-budget", "inf"], "'inf' is not a duration", None),
    ("train --max-bytes inf", ["train", "--pack-corpus", "audio", "pack", "--max-bytes", "inf"],
     "not a size: 'inf'", None),
    ("play --prebuffer nan", ["play", "--prebuffer", "nan"], "'nan' is not a duration", None),
    ("--build-corpus into a file", ["train", "--build-corpus", "exists.wav"], "exists.wav is a file", None),
    ("publish card without matplotlib", ["publish", "card", "finished", "zoo/new", "--data", "audio"],
     'pip install "streamgen[plot]"', missing("matplotlib")),
    ("unknown backend", [*GEN, "--backend", "jax"], "invalid choice: 'jax'", None),
    ("backend not here", [*GEN, "--backend", "numba-cuda"], "use the torch backend", no_kernels_on_cpu),
    ("unknown device", [*GEN, "--device", "tpu"], "unknown device 'tpu'", None),
    ("no GPU", [*GEN, "--device", "cuda"], "use --device cpu", no_gpu),
    ("no GPU (train)", [*TRAIN, "--device", "cuda"], "use --device cpu", no_gpu),
    ("no GPU (bench)", ["bench", "--quick", "--device", "cuda:0"], "use --device cpu", no_gpu),
    ("no GPU (play)", ["play", "--device", "cuda"], "use --device cpu", no_gpu),
    ("GPU this torch has no kernels for", [*GEN, "--device", "cuda"],
     "compute capability 12.0) is not supported by this torch", gpu_without_kernels),
    ("unknown --config field", [*TRAIN, "--config", '{"chanels": 8}'], "unknown SeqUNetConfig fields ['chanels']", None),
    ("--config not an object", [*TRAIN, "--config", "[8]"], "--config must be a JSON object", None),
    ("--config not JSON", [*TRAIN, "--config", "{channels: 8}"], "argument --config", None),
    ("train without --data", ["train", "--out", "run"], "train needs --data FOLDER and --out FOLDER", None),
    ("train into a finished run", [*TRAIN[:3], "--out", "finished"], "--resume", None),
    ("train on a missing folder", ["train", "--data", "nothere", "--out", "run"],
     "nothere: no such data folder; pass a folder of audio files", None),
    ("train on a folder without audio", ["train", "--data", "zoo", "--out", "run"],
     "zoo: no audio files (.wav, .flac, .ogg, .mp3) found", None),
    ("--spectrogram without matplotlib", [*GEN, "--spectrogram", "s.png"], 'pip install "streamgen[plot]"',
     missing("matplotlib")),
    ("--build-corpus without music21", ["train", "--build-corpus", "corpus"], 'pip install "streamgen[train]"',
     missing("music21")),
    ("play without sounddevice", ["play", "--seconds", "1"], 'pip install "streamgen[live]"', missing("sounddevice")),
    ("play without an audio output", ["play", "--seconds", "1"], "lists no output device", audio_outputs()),
    ("play on an unknown output", ["play", "--device-name", "hdmi"], "'hdmi' is not an output device",
     audio_outputs("speakers")),
    ("play forever, too slow", ["play", "--seconds", "0"], "pass --force", slow_producer),
    ("play on an output that does not pace", ["play", "--seconds", "30"],
     "does not play at the sample rate", audio_outputs("null")),
    ("play --save existing", ["play", "--save", "exists.wav"], "exists; pass --force", None),
]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder with a small model zoo (``default``, a corrupt ``broken``, ``badrate`` with a
    sample rate of -1, ``notes`` with 0 as models of symbolic sequences have), a finished
    training run, a valid WAV, one of NaNs, a file that is not audio and a folder of audio;
    the current folder."""
    model = SeqUNet(SeqUNetConfig(4, 2, 1, 3))
    randomize_(model, torch.Generator().manual_seed(3))
    zoo = tmp_path / "zoo"
    for name in ("default", "broken"):
        save_checkpoint(zoo / name, model, sample_rate=RATE)
    save_checkpoint(tmp_path / "finished", model, sample_rate=RATE)
    weights = zoo / "broken" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100] + bytes(100))
    save_checkpoint(zoo / "badrate", model, sample_rate=RATE)
    config = json.loads((zoo / "badrate" / "config.json").read_text())
    (zoo / "badrate" / "config.json").write_text(json.dumps({**config, "sample_rate": -1}))
    save_checkpoint(zoo / "notes", model, sample_rate=0)  # as the symbolic tasks store theirs
    sf.write(tmp_path / "nan.wav", np.full(800, np.nan, np.float32), RATE, subtype="FLOAT")
    sf.write(tmp_path / "exists.wav", np.random.default_rng().uniform(-0.5, 0.5, 800), RATE)
    (tmp_path / "bad.wav").write_bytes(b"RIFF, but not audio")
    (tmp_path / "audio").mkdir()
    sf.write(tmp_path / "audio" / "a.wav", np.zeros(RATE, np.float32), RATE)
    monkeypatch.setenv("STREAMGEN_MODELS", str(zoo))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def run_cli(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse usage errors exit from inside
        return int(exc.code)


@pytest.mark.parametrize("args,needle,fake", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_bad_input_gets_one_line_and_changes_nothing(workdir, monkeypatch, capfd, args, needle, fake) -> None:
    if fake is not None:
        fake(monkeypatch)
    before = snapshot(workdir)
    status = run_cli(args)
    out, err = capfd.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, (status, err)
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("streamgen: error: ") and needle in lines[0], lines[0]
    assert out == ""
    assert snapshot(workdir) == before  # nothing written, nothing overwritten


def test_the_readme_lists_every_fault() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    table = readme[readme.index("## When something is wrong"):]
    for fault_id, *_ in FAULTS:
        assert f"| {fault_id} |" in table, fault_id


def test_list_devices_says_when_there_are_none(workdir, monkeypatch, capfd) -> None:
    audio_outputs()(monkeypatch)
    assert run_cli(["play", "--list-devices"]) == 0
    out, err = capfd.readouterr()
    assert "lists no output device" in out and "libportaudio2" not in out and err == ""


def test_a_closed_pipe_ends_quietly(workdir, monkeypatch, capfd) -> None:
    """``streamgen info default | head -5``: the reader leaves; no BrokenPipeError report."""
    import subprocess

    result = subprocess.run(f"{sys.executable} -m streamgen.cli.main info default | head -2",
                            shell=True, capture_output=True, text=True, timeout=120, cwd=workdir)
    assert len(result.stdout.splitlines()) == 2 and result.stderr == "", result.stderr

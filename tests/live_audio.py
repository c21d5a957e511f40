"""A real, paced audio device for live-playback tests, and the subprocess that plays through it.

The rig: ``jackd --no-realtime -n NAME -d dummy -r 16000 -p 256`` is a JACK server whose dummy
driver consumes 256 frames every 16 ms of wall time, without a sound card. ALSA's ``jack`` PCM
plugin (libasound2-plugins) feeds it, so an application writing to that PCM is paced by the
dummy clock, and an ALSA ``type file`` PCM in front of it writes every sample the application
hands over to a raw file. PortAudio's ALSA host API lists both PCMs from the config file.

ALSA reads ``ALSA_CONFIG_PATH`` once, when PortAudio initialises it (on ``import sounddevice``),
so each playback runs in a fresh subprocess: ``python live_audio.py CASE_JSON`` plays a
deterministic signal with ``LivePlayer`` and prints the report as JSON.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RATE = 16000
CAPTURE_PCM = "streamgen_capture"

# The file PCM writes the samples in the slave's format; the jack plugin accepts FLOAT only,
# so the capture is native-endian float32 (bit-exact, no int16 quantisation or dither).
ALSA_CONF = """\
pcm.streamgen_jack {{
    type jack
    playback_ports {{ 0 system:playback_1 }}
}}
pcm.{capture_pcm} {{
    type file
    slave.pcm "streamgen_jack"
    file "{capture}"
    format "raw"
}}
pcm.!default "{capture_pcm}"
"""


def rig_missing() -> str | None:
    """Why the paced rig cannot exist on this machine (None when it can)."""
    if ctypes.util.find_library("portaudio") is None:
        return "PortAudio library missing (apt-get install libportaudio2)"
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        return "jackd/jack_lsp missing (apt-get install jackd2)"
    plugin = "alsa-lib/libasound_module_pcm_jack.so"  # Debian multiarch or plain lib dirs
    if not glob.glob(f"/usr/lib/*/{plugin}") + glob.glob(f"/usr/lib*/{plugin}"):
        return "ALSA jack plugin missing (apt-get install libasound2-plugins)"
    return None


def reference_signal(n: int, seed: int = 7) -> np.ndarray:
    """A seeded random walk in [-0.9, 0.9] starting at 0.3 (never exactly 0: alignment is exact)."""
    steps = np.random.default_rng(seed).normal(0.0, 0.02, n)
    return np.clip(0.3 + np.cumsum(steps), -0.9, 0.9).astype(np.float32)


class SignalProducer:
    """Hands out ``signal`` block by block, sleeping so it runs at ``speed`` x real time."""

    def __init__(self, signal: np.ndarray, speed: float | None = None) -> None:
        self.signal, self.speed, self.pos = signal, speed, 0

    def __call__(self, n: int) -> np.ndarray:
        if self.speed is not None:
            time.sleep(n / RATE / self.speed)
        block = self.signal[self.pos : self.pos + n]
        self.pos += n
        return block


def alsa_env(workdir: Path, server: str, capture: Path) -> dict[str, str]:
    """Environment for a playback subprocess: our ALSA config, JACK server ``server``, streamgen.

    Without a running server of that name the PCMs cannot open, and PortAudio lists no device.
    (An ALSA config without ``pcm.default`` makes PortAudio 19.6 abort, so keep the config.)
    """
    conf = workdir / f"asound-{capture.stem}.conf"
    conf.write_text(ALSA_CONF.format(capture_pcm=CAPTURE_PCM, capture=capture))
    import streamgen

    paths = [str(Path(streamgen.__file__).parents[1]), str(Path(__file__).parent)]
    return {
        **os.environ,
        "ALSA_CONFIG_PATH": str(conf),
        "JACK_DEFAULT_SERVER": server,
        "JACK_NO_START_SERVER": "1",  # never let libjack start a server behind our back
        "PYTHONPATH": os.pathsep.join(paths + [os.environ.get("PYTHONPATH", "")]),
    }


def run_case(
    env: dict[str, str], case: dict[str, Any], interrupt_when: Path | None = None
) -> dict[str, Any]:
    """Play ``case`` in a subprocess under ``env``; return its JSON report (or error).

    With ``interrupt_when``, send Ctrl-C (SIGINT) once that file holds 0.5 s of audio.
    """
    proc = subprocess.Popen(
        [sys.executable, __file__, json.dumps(case)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if interrupt_when is not None:
            _wait_for(lambda: _size(interrupt_when) >= RATE // 2 * 4, proc, timeout=30)
            proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _wait_for(ready: Callable[[], bool], proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"exited early with {proc.returncode}: {proc.communicate()[1]}")
        assert time.monotonic() < deadline, f"not ready within {timeout} s"
        time.sleep(0.05)


@dataclass
class PacedDevice:
    """A running JACK dummy server; :meth:`play` plays a case and returns report and capture."""

    server: str
    workdir: Path

    def play(
        self, case: dict[str, Any], name: str, interrupt: bool = False
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Play ``case``; ``interrupt`` sends Ctrl-C after 0.5 s of audio reached the device."""
        capture = self.workdir / f"{name}.raw"
        env = alsa_env(self.workdir, self.server, capture)
        report = run_case(env, case, capture if interrupt else None)
        played = np.fromfile(capture, dtype="<f4") if capture.exists() else np.zeros(0, "<f4")
        return report, played


@contextlib.contextmanager
def jack_dummy_server(workdir: Path) -> Iterator[PacedDevice]:
    """A JACK dummy server at 16 kHz under a unique name, killed by PID on exit.

    Raises RigError when the rig is missing or the server does not come up."""
    reason = rig_missing()
    if reason:
        raise RigError(reason)
    server = f"streamgen-test-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": server, "JACK_NO_START_SERVER": "1"}
    with open(workdir / "jackd.log", "w") as log:
        jackd = subprocess.Popen(
            ["jackd", "--no-realtime", "-n", server, "-d", "dummy", "-r", str(RATE), "-p", "256"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_ports(jackd, server, env, workdir / "jackd.log")
        yield PacedDevice(server, workdir)
    finally:
        jackd.terminate()  # SIGTERM to this PID only
        try:
            jackd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            jackd.kill()
            jackd.wait()


class RigError(RuntimeError):
    """The paced device cannot run here (its reason says which package is missing)."""


@pytest.fixture(scope="module")
def paced_device(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PacedDevice]:
    """The paced device for a test module: skipped when the rig is missing."""
    reason = rig_missing()
    if reason:
        pytest.skip(reason)
    with jack_dummy_server(tmp_path_factory.mktemp("live")) as device:
        yield device


def _wait_for_ports(jackd: subprocess.Popen, server: str, env: dict, log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if jackd.poll() is not None:
            raise RigError(f"jackd exited with {jackd.returncode}: {log.read_text()[-2000:]}")
        lsp = subprocess.run(["jack_lsp", "-s", server], env=env, capture_output=True, text=True)
        if "system:playback_1" in lsp.stdout:
            return
        time.sleep(0.1)
    raise RigError(f"jackd did not come up within 15 s: {log.read_text()[-2000:]}")


def _main(case: dict[str, Any]) -> dict[str, Any]:
    from streamgen.audio.live import AudioDeviceError, LivePlayer, TooSlowError

    samples = reference_signal(round(case.pop("seconds") * RATE))
    producer = SignalProducer(samples, case.pop("speed", None))
    save = case.pop("save", None)
    seconds = case.pop("play_seconds", len(samples) / RATE)
    player = LivePlayer(producer, case.pop("sample_rate", RATE), **case)
    t0 = time.monotonic()
    try:
        report = player.play(seconds, save=save)
    except (AudioDeviceError, TooSlowError) as exc:
        return {"error": type(exc).__name__, "message": str(exc)}
    return {**report.__dict__, "saved": save, "call_seconds": time.monotonic() - t0}


if __name__ == "__main__":
    print(json.dumps(_main(json.loads(sys.argv[1]))))

"""Live soak: ``streamgen play`` with the default model on the paced JACK dummy device for N minutes.

    python benchmarks/soak.py --minutes 30   # writes benchmarks/results/soak-<machine>.{json,md}
    python benchmarks/soak.py --minutes 10   # ... soak-<machine>-10min.{json,md}

The device is the one the live tests use (``tests/live_audio.py``): a JACK server whose dummy
driver consumes 16 kHz audio at wall-clock pace, fed through ALSA's jack plugin, with an ALSA
file PCM in front that records every sample the application hands over. ``streamgen play``
runs as a user runs it, in a subprocess, with ``--save``. Measured: underflows (PortAudio's and
the player's), the player's resident memory every ``--every`` seconds, and whether the audio
the device received equals the saved file sample for sample (the saved WAV is 16-bit PCM, so
the played float32 samples are quantised with the writer's own rule before comparing).
Needs the live-test packages: ``libportaudio2 jackd2 libasound2-plugins``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from live_audio import CAPTURE_PCM, RATE, alsa_env, jack_dummy_server  # noqa: E402

from streamgen.audio.io import to_pcm16  # noqa: E402
from streamgen.bench.timing import machine_info  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
RSS_GROWTH_LIMIT_MB = 5.0  # after the first minute of playback


def process_sample(pid: int) -> tuple[float, float]:
    """(resident memory in MB, CPU seconds used so far) of process ``pid``, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = int(re.search(r"^VmRSS:\s+(\d+) kB", status, re.M).group(1))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime + stime (fields 14 and 15 of stat)
    return rss_kb / 1024, ticks / 100.0


def _watch(proc: subprocess.Popen, capture: Path, memory: list[dict[str, float]], every: float,
           log: Callable[[str], None]) -> tuple[str, str]:
    """Sample the player every ``every`` seconds until it exits; its (stdout, stderr)."""
    start = time.monotonic()
    while proc.poll() is None:
        try:
            rss, cpu = process_sample(proc.pid)
        except (OSError, AttributeError):  # exiting between poll() and the read
            break
        played_s = capture.stat().st_size / 4 / RATE if capture.exists() else 0.0
        memory.append({"t_s": round(time.monotonic() - start, 1), "played_s": round(played_s, 1),
                       "rss_mb": round(rss, 2), "cpu_s": round(cpu, 2), "load_1min": os.getloadavg()[0]})
        if len(memory) % 6 == 1:
            log(f"  {memory[-1]['t_s']:7.1f} s  played {played_s:7.1f} s  rss {rss:7.1f} MB  cpu {cpu:7.1f} s  "
                f"load {memory[-1]['load_1min']:.1f}")
        try:
            proc.wait(timeout=every)
        except subprocess.TimeoutExpired:
            pass
    return proc.communicate()


def soak(minutes: float, workdir: Path, *, model: str = "default", seed: int = 0, every: float = 10.0,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Play ``minutes`` of ``model`` on the paced device; return the measurements."""
    total = round(minutes * 60 * RATE)
    capture, saved = workdir / "played.raw", workdir / "saved.wav"
    memory: list[dict[str, float]] = []
    with jack_dummy_server(workdir) as device:
        env = alsa_env(workdir, device.server, capture)
        cmd = [sys.executable, "-m", "streamgen.cli.main", "play", "--model", model, "--seconds",
               f"{minutes * 60:g}", "--seed", str(seed), "--device-name", CAPTURE_PCM, "--save", str(saved)]
        log("running: streamgen " + " ".join(cmd[3:]))
        start = time.monotonic()
        # outside the checkout: there ``-m streamgen.cli.main`` would find the source folder
        # ``streamgen/`` (no ``cli`` in it) before the installed package
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=workdir)
        try:
            _, err = _watch(proc, capture, memory, every, log)
        finally:
            if proc.poll() is None:  # the soak itself failed or was interrupted
                proc.kill()
                proc.wait()
        wall = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"streamgen play exited with {proc.returncode}: {err.strip()}")
    summary = err.strip().splitlines()[-1]
    underflows, late, silence = map(int, re.search(
        r"underflows (\d+) \((\d+) flagged by the device, (\d+) samples", summary).groups())
    played = np.fromfile(capture, dtype="<f4")
    lead = int(np.flatnonzero(played)[0])  # PortAudio primes the device with exact zeros
    body = played[lead : lead + total]
    heard = sf.read(saved, dtype="int16")[0]
    # a planned pre-buffer (producer slower than real time) fills its ring before playing: the
    # memory that must stay flat is that of playback, from its first minute on
    after_minute = [m["rss_mb"] for m in memory if m["played_s"] >= 60.0]
    growth = max(after_minute) - after_minute[0] if after_minute else None
    return {
        "minutes": minutes,
        "model": model,
        "seed": seed,
        "command": "streamgen " + " ".join(cmd[3:]),
        "player_summary": summary,
        "wall_seconds": round(wall, 1),
        "samples_requested": total,
        "samples_played": len(body),
        "samples_saved": len(heard),
        "underflows": underflows,
        "device_underflows": late,  # callbacks PortAudio flagged: the device ran dry (callback late)
        "player_silence_samples": silence,  # zeros the player handed over because the producer was late
        "played_equals_saved": bool(len(body) == len(heard) == total
                                    and np.array_equal(to_pcm16(body), heard)),
        "after_played": int(np.count_nonzero(played[lead + total :])),  # nonzero samples after the end
        "rss_at_playback_start_mb": next((m["rss_mb"] for m in memory if m["played_s"] > 0), None),
        "rss_growth_after_first_minute_of_playback_mb": None if growth is None else round(growth, 2),
        "cpu_seconds": memory[-1]["cpu_s"] if memory else None,
        "memory": memory,
        "machine": machine_info("cpu"),
    }


def passed(result: dict[str, Any]) -> bool:
    growth = result["rss_growth_after_first_minute_of_playback_mb"]
    return (result["underflows"] == 0 and result["played_equals_saved"] and result["after_played"] == 0
            and (growth is None or growth < RSS_GROWTH_LIMIT_MB))


def markdown(result: dict[str, Any]) -> str:
    m, mem = result["machine"], result["memory"]
    rows = [mem[0]] + [s for s in mem if s["t_s"] % 300 < 10][1:] + [mem[-1]] if mem else []
    lines = [
        f"# Live soak: {result['minutes']:g} minutes of `{result['model']}` on a paced device", "",
        f"`{result['command']}` on the JACK dummy driver at {RATE} Hz (wall-clock paced; see "
        "`benchmarks/soak.py`), machine `{}` ({}), {}.".format(m["machine"], m["processor"], m["platform"]), "",
        "| check | result |", "|---|---|",
        f"| underflows | {result['underflows']} ({result['device_underflows']} flagged by the device, "
        f"{result['player_silence_samples']:,} samples of silence inserted by the player) |",
        f"| samples requested / played / saved | {result['samples_requested']:,} / "
        f"{result['samples_played']:,} / {result['samples_saved']:,} |",
        f"| nonzero samples after the end | {result['after_played']} |",
        f"| played audio equals the saved file (16-bit PCM) | {'yes' if result['played_equals_saved'] else 'NO'} |",
        f"| resident memory when playback started | {result['rss_at_playback_start_mb']} MB |",
        f"| resident memory growth after the first minute of playback | "
        f"{result['rss_growth_after_first_minute_of_playback_mb']} MB "
        f"(limit {RSS_GROWTH_LIMIT_MB:g}) |",
        f"| wall time | {result['wall_seconds']} s |",
        f"| player CPU time | {result['cpu_seconds']} s |",
        f"| verdict | {'pass' if passed(result) else 'FAIL'} |", "",
        f"Player's own report: `{result['player_summary']}`", "",
        "Resident memory (every 5 minutes; every 10 s in the JSON):", "",
        "| t (s) | played (s) | RSS (MB) | player CPU (s) | machine load (1 min) |", "|---:|---:|---:|---:|---:|",
        *[f"| {s['t_s']:.0f} | {s['played_s']:.0f} | {s['rss_mb']:.1f} | {s['cpu_s']:.1f} | {s['load_1min']:.1f} |"
          for s in rows], "",
    ]
    return "\n".join(lines)


DEFAULT_MINUTES = 30.0


def machine_stem() -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", f"cpu-{platform.machine()}").strip("-").lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES)
    parser.add_argument("--model", default="default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between memory samples")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="streamgen-soak-") as tmp:
        result = soak(args.minutes, Path(tmp), model=args.model, seed=args.seed, every=args.every)
    args.out.mkdir(parents=True, exist_ok=True)
    length = "" if args.minutes == DEFAULT_MINUTES else f"-{args.minutes:g}min"
    stem = args.out / f"soak-{machine_stem()}{length}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2))
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return 0 if passed(result) else 1


if __name__ == "__main__":
    sys.exit(main())

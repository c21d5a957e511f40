"""Live playback of a block producer (the generator engine) through a PortAudio output stream.

A producer thread calls ``produce(n)`` into a preallocated :class:`SampleRing`; the PortAudio
callback only copies from the ring into the device buffer (and, when saving, into a second
ring that the calling thread drains to the file). Before the stream starts, the producer's
real-time factor ``r`` (audio seconds produced per wall second) is measured on a few warm-up
blocks and enough audio is pre-buffered to play ``seconds`` without gaps: ``seconds * (1 - r)``
(plus a safety factor and margin) when ``r < 1``, a small margin otherwise.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamgen.audio.devices import AudioDeviceError, open_output_device, sounddevice
from streamgen.audio.io import AudioWriter
from streamgen.audio.ring import SampleRing

Producer = Callable[[int], np.ndarray]
"""``produce(n)`` returns the next ``n`` samples: float32 (or castable), shape ``(n,)``."""

RECORD_SECONDS = 10.0  # capacity of the save ring; the calling thread drains it every POLL_S
CUSHION_SECONDS = 2.0  # room beyond the pre-buffer: a producer faster than real time fills it
# while playing, so a stall of the producer (a busy machine) up to this long goes unheard
POLL_S = 0.02
# An output that takes samples faster than PACE_LIMIT x real time, beyond PACE_SLACK_S of them
# (and its own buffer), does not play them (a null or file PCM): playing on would only stack
# up silence, in a saved file too
PACE_LIMIT = 4.0
PACE_SLACK_S = 1.0


class TooSlowError(RuntimeError):
    """The producer cannot keep up with endless playback (one-line message)."""


@dataclass(frozen=True)
class PlaybackReport:
    """What a playback run did."""

    device: str
    sample_rate: int
    channels: int
    realtime_factor: float  # producer speed at warm-up: audio seconds per wall second
    prebuffer_seconds: float  # audio buffered before the stream started
    output_latency: float  # PortAudio's output latency of the open stream, seconds
    samples_played: int  # produced samples handed to the device
    silence_samples: int  # zeros handed to the device because the producer was late
    underflows: int  # callbacks short of data or flagged output_underflow by PortAudio
    device_underflows: int  # of which PortAudio flagged output_underflow
    wall_seconds: float  # stream start to stream end
    interrupted: bool  # stopped early by KeyboardInterrupt or stop()
    saved: Path | None  # file holding exactly what was handed to the device (end padding excluded)


def measure_realtime_factor(
    produce: Producer, block_size: int, sample_rate: int, blocks: int = 3, limit: int | None = None
) -> tuple[float, list[np.ndarray]]:
    """Run ``blocks`` warm-up blocks (at most ``limit`` samples); return speed and the blocks.

    The first block is not timed when there are more (it pays one-off set-up costs). The blocks
    are returned so the audio is played, not lost.
    """
    out: list[np.ndarray] = []
    timings: list[tuple[int, float]] = []
    for _ in range(max(1, blocks)):
        n = block_size if limit is None else min(block_size, limit - sum(map(len, out)))
        if n <= 0:
            break
        t0 = time.perf_counter()
        out.append(_call(produce, n))
        timings.append((n, time.perf_counter() - t0))
    timed = timings[1:] or timings
    seconds = sum(t for _, t in timed)
    return sum(n for n, _ in timed) / sample_rate / max(seconds, 1e-9), out


def plan_prebuffer(
    realtime_factor: float, seconds: float, margin: float = 0.2, safety: float = 0.25
) -> float:
    """Seconds to buffer before playing ``seconds`` (0 = forever) glitch-free; inf if impossible.

    A producer at speed ``r < 1`` falls behind by ``1 - r`` seconds per second played, so a run
    of ``D`` seconds needs ``D * (1 - r)`` in hand, scaled by ``1 + safety``, plus ``margin``
    (block granularity, scheduling jitter). Never more than the whole run.
    """
    if realtime_factor >= 1.0:
        need = margin
    elif seconds <= 0:
        return math.inf
    else:
        need = seconds * (1.0 - realtime_factor) * (1.0 + safety) + margin
    return need if seconds <= 0 else min(need, seconds)


class LivePlayer:
    """Plays ``produce``'s audio on an output device in real time.

    ``prebuffer`` (seconds) overrides the planned pre-buffer; ``force`` allows endless playback
    of a producer slower than real time. ``device`` is an index, a name or part of one, or None
    for the default output. Call :meth:`play`; :meth:`stop` ends it from another thread.
    """

    def __init__(
        self,
        produce: Producer,
        sample_rate: int = 16000,
        *,
        device: int | str | None = None,
        block_size: int = 1024,
        prebuffer: float | None = None,
        margin: float = 0.2,
        safety: float = 0.25,
        warmup_blocks: int = 3,
        latency: float | str = "high",
        force: bool = False,
    ) -> None:
        self.produce = produce
        self.sample_rate = sample_rate
        self.device = device
        self.block_size = block_size
        self.prebuffer = prebuffer
        self.margin = margin
        self.safety = safety
        self.warmup_blocks = warmup_blocks
        self.latency = latency
        self.force = force
        self._stop = threading.Event()

    def stop(self) -> None:
        """Ask a running :meth:`play` to stop (thread-safe)."""
        self._stop.set()

    def play(self, seconds: float = 0.0, save: str | Path | None = None) -> PlaybackReport:
        """Play ``seconds`` of audio (0 = until stopped); optionally save what the device got.

        Ctrl-C stops cleanly and returns a report with ``interrupted=True``. Raises
        AudioDeviceError (no device, rate unsupported, an output that takes samples far faster
        than it could play them) and TooSlowError (endless playback of a producer slower than
        real time without ``force``).
        """
        sd = sounddevice()
        device, channels = open_output_device(self.device, self.sample_rate)
        self._stop.clear()
        total = round(seconds * self.sample_rate) if seconds > 0 else None
        rtf, warm = measure_realtime_factor(
            self.produce, self.block_size, self.sample_rate, self.warmup_blocks, total
        )
        planned = plan_prebuffer(rtf, seconds, self.margin, self.safety)
        if math.isinf(planned) and not self.force:
            ten = plan_prebuffer(rtf, 10.0, self.margin, self.safety)
            raise TooSlowError(
                f"the producer runs at {rtf:.2f}x real time, so endless playback would stall; play "
                f"a fixed duration (10 s needs {ten:.1f} s pre-buffered), use a faster model or "
                "machine, or pass --force (force=True) to play anyway"
            )
        if self.prebuffer is not None:
            prebuffer = self.prebuffer
        else:
            prebuffer = self.margin if math.isinf(planned) else planned
        run = _Run(self, self._stop, sd, device.index, channels, total, prebuffer, warm, save)
        return run.execute(rtf, device.name)


def _call(produce: Producer, n: int) -> np.ndarray:
    block = np.asarray(produce(n), dtype=np.float32).reshape(-1)
    if len(block) != n:
        raise ValueError(f"produce({n}) returned {len(block)} samples")
    return block


class _Run:
    """One playback: producer thread, stream callback and the save loop, with their counters."""

    def __init__(
        self,
        player: LivePlayer,
        stop: threading.Event,
        sd: Any,
        device_index: int,
        channels: int,
        total: int | None,
        prebuffer: float,
        warm: list[np.ndarray],
        save: str | Path | None,
    ) -> None:
        self.p, self.stop, self.sd = player, stop, sd
        self.device_index, self.channels = device_index, channels
        self.total = total
        rate, block = player.sample_rate, player.block_size
        self.prebuffer_n = round(prebuffer * rate)
        if total is not None:
            self.prebuffer_n = min(self.prebuffer_n, total)
        warm_n = sum(len(b) for b in warm)
        self.ring = SampleRing(max(self.prebuffer_n, warm_n) + 2 * block + round(CUSHION_SECONDS * rate))
        for b in warm:
            self.ring.write(b)
        self.produced = warm_n
        self.save = Path(save) if save is not None else None
        self.record = SampleRing(round(RECORD_SECONDS * rate)) if self.save else None
        self.record_lost = 0
        self.played = self.silence = self.underflows = self.device_underflows = 0
        self.handed = 0  # samples the device took, silence included
        self.producer_done = total is not None and self.produced >= total
        self.error: BaseException | None = None
        self.finished = threading.Event()

    # -- producer thread ---------------------------------------------------------------------
    def _produce_loop(self) -> None:
        try:
            while not self.stop.is_set() and not self.producer_done:
                n = self.p.block_size
                if self.total is not None:
                    n = min(n, self.total - self.produced)
                block = _call(self.p.produce, n)
                written = 0
                while written < n and not self.stop.is_set():
                    written += self.ring.write(block[written:])
                    if written < n:
                        self.stop.wait(POLL_S / 4)
                self.produced += written
                self.producer_done = self.total is not None and self.produced >= self.total
        except BaseException as exc:  # reported by the calling thread
            self.error = exc

    # -- PortAudio callback: copies only -----------------------------------------------------
    def _callback(self, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        done = self.producer_done  # read before the ring: then an empty ring means the end
        self.handed += frames
        out = outdata[:, 0]
        n = self.ring.read_into(out)
        self.played += n
        short = n < frames
        if short:
            out[n:] = 0.0
        if status.output_underflow:
            self.device_underflows += 1
        if (short and not done) or status.output_underflow:
            self.underflows += 1
            self.silence += frames - n if short else 0
        if self.channels > 1:
            outdata[:, 1:] = outdata[:, :1]
        if self.record is not None:  # what the device got, without the padding of the end
            heard = out[:n] if short and done else out
            self.record_lost += len(heard) - self.record.write(heard)
        if short and done:
            raise self.sd.CallbackStop

    # -- calling thread ------------------------------------------------------------------------
    def execute(self, rtf: float, device_name: str) -> PlaybackReport:
        producer = threading.Thread(
            target=self._produce_loop, name="streamgen-producer", daemon=True
        )
        sink = _open_save(self.save, self.p.sample_rate)
        stream = None
        interrupted, latency, wall, t0 = False, 0.0, 0.0, None
        try:
            producer.start()
            while self.ring.available < self.prebuffer_n and not self.producer_done:
                self._check()
                time.sleep(POLL_S)
            stream = self.sd.OutputStream(
                samplerate=self.p.sample_rate,
                device=self.device_index,
                channels=self.channels,
                dtype="float32",
                latency=self.p.latency,
                callback=self._callback,
                finished_callback=self.finished.set,
            )
            latency = float(stream.latency)
            t0 = time.monotonic()
            stream.start()
            while not self.finished.wait(POLL_S):
                self._check()
                self._check_pace(time.monotonic() - t0, latency, device_name)
                self._drain(sink)
            wall = time.monotonic() - t0
        except KeyboardInterrupt:
            interrupted = True
        except _Stopped:
            interrupted = self.error is None
        finally:
            self.stop.set()
            if t0 is not None and not wall:
                wall = time.monotonic() - t0
            if stream is not None:
                stream.abort()
                stream.close()
            producer.join()
            self._drain(sink)
            if sink is not None:
                sink.close()
        if self.error is not None:
            raise self.error
        if self.record_lost:
            raise AudioDeviceError(f"{self.record_lost} samples the device took were not saved "
                                   f"to {self.save} (saving fell behind the device); the file "
                                   "holds the rest")
        return PlaybackReport(
            device=device_name,
            sample_rate=self.p.sample_rate,
            channels=self.channels,
            realtime_factor=rtf,
            prebuffer_seconds=self.prebuffer_n / self.p.sample_rate,
            output_latency=latency,
            samples_played=self.played,
            silence_samples=self.silence,
            underflows=self.underflows,
            device_underflows=self.device_underflows,
            wall_seconds=wall,
            interrupted=interrupted,
            saved=self.save,
        )

    def _check(self) -> None:
        if self.error is not None or self.stop.is_set():
            raise _Stopped

    def _check_pace(self, elapsed: float, latency: float, device_name: str) -> None:
        rate = self.p.sample_rate
        if self.handed > (PACE_LIMIT * elapsed + PACE_SLACK_S + latency) * rate:
            raise AudioDeviceError(
                f"the output {device_name!r} took {self.handed / rate:.1f} s of audio in "
                f"{elapsed:.1f} s: it does not play at the sample rate (a null or file device?); "
                "choose an output that plays (streamgen play --list-devices)")

    def _drain(self, sink: Any) -> None:
        if self.record is None or sink is None:
            return
        chunk = np.empty(self.record.available, dtype=np.float32)
        sink.write(chunk[: self.record.read_into(chunk)])


class _Stopped(Exception):
    """Internal: the producer failed or stop() was called."""


def _open_save(path: Path | None, sample_rate: int) -> AudioWriter | None:
    """The recording, written like ``streamgen generate``'s files (WAV: 16-bit PCM)."""
    return None if path is None else AudioWriter(path, sample_rate)


__all__ = [
    "AudioDeviceError",
    "LivePlayer",
    "PlaybackReport",
    "Producer",
    "TooSlowError",
    "measure_realtime_factor",
    "plan_prebuffer",
]

"""Live playback on a real, paced device (JACK dummy clock, ALSA file PCM capture).

Each playback runs in a subprocess (see ``live_audio``). The capture holds exactly what the
application wrote to ALSA: first one ALSA buffer of zeros that PortAudio primes the device
with before the first callback, then our samples, then zeros (the rest of the last callback
and the padding to a whole period when the stream drains). The reference signal never takes
the value 0, so its start in the capture is the first nonzero sample, and everything else
must be zero.
"""

from __future__ import annotations

import math
import re

import live_audio
import numpy as np
import pytest
import soundfile as sf
from live_audio import CAPTURE_PCM, RATE, alsa_env, reference_signal, rig_missing, run_case

from streamgen.audio.devices import AudioDeviceError, OutputDevice, _select
from streamgen.audio.io import to_pcm16
from streamgen.audio.live import measure_realtime_factor, plan_prebuffer
from streamgen.audio.ring import SampleRing

paced_device = live_audio.paced_device  # the fixture: a running JACK dummy server

SECONDS = 2.0
N = round(SECONDS * RATE)


def split_capture(played: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """(leading zeros, the samples from the first nonzero one on: N of them, the rest)."""
    nonzero = np.flatnonzero(played)
    assert len(nonzero), "nothing was played"
    lead = int(nonzero[0])
    return lead, played[lead : lead + N], played[lead + N :]


def test_plays_exactly_the_generated_samples_paced_in_real_time(paced_device, tmp_path) -> None:
    save = tmp_path / "saved.wav"
    report, played = paced_device.play(
        {"seconds": SECONDS, "device": CAPTURE_PCM, "save": str(save)}, "normal"
    )
    expected = reference_signal(N)
    lead, body, tail = split_capture(played)
    assert lead <= RATE // 2, f"{lead} samples of leading silence"
    np.testing.assert_array_equal(body, expected)  # float32 end to end: bit-exact
    assert not tail.any()
    assert report["samples_played"] == N and report["silence_samples"] == 0
    assert report["underflows"] == 0 and report["device_underflows"] == 0
    assert 0.75 * SECONDS <= report["wall_seconds"] <= 1.25 * SECONDS, report
    assert report["call_seconds"] <= 1.25 * SECONDS + 1.0, report
    assert report["realtime_factor"] > 1 and report["prebuffer_seconds"] == pytest.approx(0.2)
    assert report["output_latency"] > 0 and report["device"] == CAPTURE_PCM
    saved, rate = sf.read(save, dtype="int16")
    assert rate == RATE and sf.info(save).subtype == "PCM_16"  # the standard WAV sox reads
    assert len(saved) == N  # exactly what was asked for: no padding of the last callback
    np.testing.assert_array_equal(saved, to_pcm16(body))  # what the device got, quantised


def test_slow_producer_without_prebuffer_underflows(paced_device) -> None:
    report, played = paced_device.play(
        {"seconds": SECONDS, "speed": 0.5, "prebuffer": 0.0, "device": CAPTURE_PCM}, "slow"
    )
    assert report["realtime_factor"] == pytest.approx(0.5, rel=0.2)
    assert report["underflows"] > 0 and report["silence_samples"] > 0, report
    assert report["samples_played"] == N
    assert report["wall_seconds"] >= 1.4 * SECONDS, report  # stretched by the silence
    # the gaps are pure silence: the samples themselves still come out complete and in order
    np.testing.assert_array_equal(played[played != 0], reference_signal(N))


def test_slow_producer_with_planned_prebuffer_plays_without_gaps(paced_device) -> None:
    report, played = paced_device.play(
        {"seconds": SECONDS, "speed": 0.5, "device": CAPTURE_PCM}, "prebuffered"
    )
    assert report["prebuffer_seconds"] >= SECONDS * (1 - report["realtime_factor"])
    assert report["underflows"] == 0 and report["silence_samples"] == 0, report
    assert 0.75 * SECONDS <= report["wall_seconds"] <= 1.25 * SECONDS, report
    lead, body, tail = split_capture(played)
    np.testing.assert_array_equal(body, reference_signal(N))
    assert not tail.any()


def test_ctrl_c_stops_cleanly_and_keeps_what_was_played(paced_device, tmp_path) -> None:
    save = tmp_path / "interrupted.wav"
    case = {"seconds": 20.0, "device": CAPTURE_PCM, "save": str(save)}
    report, played = paced_device.play(case, "interrupted", interrupt=True)
    assert report["interrupted"] and report["underflows"] == 0, report
    k = report["samples_played"]
    assert 0.4 * RATE <= k < 3 * RATE, report  # Ctrl-C came after 0.5 s reached the device
    saved, _ = sf.read(save, dtype="int16")  # the file was closed properly
    lead = int(np.flatnonzero(played)[0])
    assert len(saved) == k  # what was played, nothing more
    np.testing.assert_array_equal(saved, to_pcm16(played[lead : lead + k]))
    np.testing.assert_array_equal(saved, to_pcm16(reference_signal(20 * RATE)[:k]))


def test_endless_playback_of_a_slow_producer_is_refused(paced_device) -> None:
    report, played = paced_device.play(
        {"seconds": 0.5, "play_seconds": 0, "speed": 0.5, "device": CAPTURE_PCM}, "endless"
    )
    assert report["error"] == "TooSlowError", report
    assert re.search(r"runs at 0\.\d\dx real time", report["message"]), report  # about 0.5
    assert "pass --force" in report["message"] and "\n" not in report["message"]
    assert not played.any()


def test_unsupported_sample_rate_is_a_one_line_error(paced_device) -> None:
    report, _ = paced_device.play(
        {"seconds": 0.5, "sample_rate": 44100, "device": CAPTURE_PCM}, "rate"
    )
    assert report["error"] == "AudioDeviceError", report
    assert "44100 Hz" in report["message"] and "accepts: 16000 Hz" in report["message"]
    assert "\n" not in report["message"]


def test_unknown_device_name_is_a_one_line_error(paced_device) -> None:
    report, _ = paced_device.play({"seconds": 0.5, "device": "no-such-device"}, "unknown")
    assert report["error"] == "AudioDeviceError", report
    assert "'no-such-device' is not an output device" in report["message"]
    assert CAPTURE_PCM in report["message"] and "\n" not in report["message"]


@pytest.mark.skipif(rig_missing() is not None, reason=str(rig_missing()))
def test_no_output_device_is_a_one_line_error_with_the_fix(tmp_path) -> None:
    # the rig's ALSA config, but no JACK server of that name: no PCM opens, PortAudio lists none
    env = alsa_env(tmp_path, "streamgen-no-such-server", tmp_path / "none.raw")
    report = run_case(env, {"seconds": 0.5})
    assert report["error"] == "AudioDeviceError", report
    assert "no audio output device found" in report["message"]
    assert "sound card or sound server" in report["message"] and "\n" not in report["message"]
    assert "libportaudio2" not in report["message"]  # PortAudio is installed: it lists nothing


# -- device-free units -------------------------------------------------------------------------


def test_plan_prebuffer() -> None:
    assert plan_prebuffer(2.0, 10.0, margin=0.2) == 0.2
    assert plan_prebuffer(0.5, 10.0, margin=0.2, safety=0.0) == pytest.approx(5.2)
    assert plan_prebuffer(0.5, 10.0, margin=0.2, safety=0.25) == pytest.approx(6.45)
    assert plan_prebuffer(0.1, 1.0) == 1.0  # never more than the whole run
    assert math.isinf(plan_prebuffer(0.9, 0.0)) and plan_prebuffer(1.0, 0.0) == 0.2


def test_measure_realtime_factor_keeps_the_warmup_audio() -> None:
    signal = reference_signal(5000)
    pos = [0]

    def produce(n: int) -> np.ndarray:
        pos[0] += n
        return signal[pos[0] - n : pos[0]]

    rtf, blocks = measure_realtime_factor(produce, 1024, RATE, blocks=3, limit=2500)
    assert rtf > 1 and [len(b) for b in blocks] == [1024, 1024, 452]
    np.testing.assert_array_equal(np.concatenate(blocks), signal[:2500])


def test_sample_ring_wraps_and_bounds() -> None:
    ring, out = SampleRing(5), np.zeros(4, np.float32)
    assert ring.write(np.arange(4, dtype=np.float32)) == 4 and ring.free == 1
    assert ring.read_into(out[:3]) == 3 and list(out[:3]) == [0, 1, 2]
    assert ring.write(np.arange(10, 16, dtype=np.float32)) == 4  # only 4 fit; wraps around
    assert ring.read_into(out) == 4 and list(out) == [3, 10, 11, 12]
    assert ring.read_into(out) == 1 and out[0] == 13 and ring.available == 0


def test_sample_ring_refuses_no_capacity_and_works_with_one_sample(np_rng) -> None:
    for capacity in (0, -int(np_rng.integers(1, 100))):
        with pytest.raises(ValueError, match="ring capacity must be >= 1"):
            SampleRing(capacity)
    ring, out = SampleRing(1), np.zeros(3, np.float32)
    x = np_rng.standard_normal(3).astype(np.float32)
    for i in range(3):
        assert ring.write(x[i:]) == 1 and ring.free == 0 and ring.write(x) == 0
        assert ring.read_into(out[i:]) == 1 and ring.available == 0
    np.testing.assert_array_equal(out, x)


def test_device_selection_by_index_name_or_part_of_a_name() -> None:
    outputs = [
        OutputDevice(0, "hw:0,0", "ALSA", 2, 48000.0, False),
        OutputDevice(3, "pulse", "ALSA", 32, 44100.0, True),
        OutputDevice(4, "pulse monitor", "ALSA", 2, 44100.0, False),
    ]
    assert _select(outputs, None).index == 3  # the default
    assert _select(outputs, 4).index == 4 and _select(outputs, "4").index == 4
    assert _select(outputs, "pulse").index == 3  # an exact name wins over substrings
    assert _select(outputs, "MONITOR").index == 4
    with pytest.raises(AudioDeviceError, match="matches several output devices; choose one of"):
        _select(outputs, "u")
    with pytest.raises(AudioDeviceError, match="device 7 is not an output device"):
        _select(outputs, "7")

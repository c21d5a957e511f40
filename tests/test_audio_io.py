"""Audio file I/O against independent expectations: analytic sines, the ``wave`` module."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import textwrap
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamgen.audio.io import AudioFileError, AudioWriter, load_audio, output_format, write_audio

ROOT = Path(__file__).resolve().parents[1]


def stereo_sine(sr: int, seconds: float, freq: float, amps: tuple[float, float]) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([a * np.sin(2 * np.pi * freq * t) for a in amps], axis=1)


def expected_mono(sr: int, n: int, freq: float, amps: tuple[float, float]) -> np.ndarray:
    t = np.arange(n) / sr
    return np.mean(amps) * np.sin(2 * np.pi * freq * t)


@pytest.mark.parametrize("src_sr,ext,subtype,tol", [
    (44100, "wav", "FLOAT", 2e-3),
    (22050, "flac", "PCM_24", 2e-3),
    (16000, "wav", "PCM_16", 1e-4),
])
def test_load_resamples_and_mixes_to_mono(tmp_path: Path, src_sr: int, ext: str, subtype: str, tol: float) -> None:
    freq, amps = 437.0, (0.6, 0.2)
    path = tmp_path / f"tone.{ext}"
    sf.write(path, stereo_sine(src_sr, 1.0, freq, amps), src_sr, subtype=subtype)
    audio = load_audio(path, 16000)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert abs(len(audio) - 16000) <= 1
    ref = expected_mono(16000, len(audio), freq, amps)
    inner = slice(200, -200)  # resampler edge effects
    assert np.max(np.abs(audio[inner] - ref[inner])) < tol


def test_lossy_ogg_keeps_pitch_and_level(tmp_path: Path) -> None:
    path = tmp_path / "tone.ogg"
    sf.write(path, stereo_sine(44100, 1.0, 500.0, (0.5, 0.3)), 44100)
    audio = load_audio(path, 16000)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    peak_hz = np.argmax(spectrum) * 16000 / len(audio)
    assert abs(peak_hz - 500.0) < 3
    rms = np.sqrt(np.mean(audio[2000:-2000] ** 2))
    assert abs(rms - 0.4 / np.sqrt(2)) < 0.02


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_mp3_is_decoded(tmp_path: Path) -> None:
    path = tmp_path / "tone.mp3"
    sf.write(path, stereo_sine(44100, 1.0, 440.0, (0.5, 0.5)), 44100, format="MP3")
    audio = load_audio(path, 16000)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - 440.0) < 3
    assert abs(np.sqrt(np.mean(audio[4000:-4000] ** 2)) - 0.5 / np.sqrt(2)) < 0.03


def test_librosa_fallback_gives_the_same_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, stereo_sine(22050, 0.5, 300.0, (0.4, 0.4)), 22050, subtype="FLOAT")
    direct = load_audio(path, 16000)

    def refuse(*args, **kwargs):
        raise RuntimeError("soundfile unavailable")

    monkeypatch.setattr(sf, "read", refuse)
    assert np.allclose(load_audio(path, 16000), direct, atol=1e-6)


@pytest.mark.parametrize("ext,fmt", [("flac", "FLAC"), ("mp3", "MP3")])
def test_any_rate_loads_with_the_base_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              ext: str, fmt: str) -> None:
    """Resampling is soxr's (a base dependency) and MP3 is libsndfile's: no librosa needed."""
    if fmt not in sf.available_formats():
        pytest.skip(f"libsndfile without {fmt}")
    monkeypatch.setitem(sys.modules, "librosa", None)  # `import librosa` fails
    freq = float(np.random.default_rng().uniform(300, 900))
    path = tmp_path / f"tone.{ext}"
    sf.write(path, stereo_sine(44100, 1.0, freq, (0.5, 0.5)), 44100, format=fmt)
    audio = load_audio(path, 16000)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - freq) < 3


@pytest.mark.skipif("MP3" not in sf.available_formats(), reason="libsndfile without MP3")
def test_writer_writes_mp3(tmp_path: Path) -> None:
    freq = float(np.random.default_rng().uniform(300, 900))
    tone = 0.5 * np.sin(2 * np.pi * freq * np.arange(16000) / 16000)
    with AudioWriter(tmp_path / "tone.mp3", 16000) as writer:
        for block in np.split(tone, 4):
            writer.write(block)
    info = sf.info(tmp_path / "tone.mp3")
    assert (info.format, info.samplerate) == ("MP3", 16000)
    audio = load_audio(tmp_path / "tone.mp3", 16000)
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    assert abs(np.argmax(spectrum) * 16000 / len(audio) - freq) < 3


@pytest.mark.parametrize("content", [b"", b"not audio at all" * 20])
def test_unreadable_file_is_one_clear_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(AudioFileError) as err:
        load_audio(path, 16000)
    message = str(err.value)
    assert str(path) in message and "\n" not in message and "convert" in message


@pytest.mark.parametrize("name", ["broken.wav", "broken.flac", "broken.mp3"])
def test_a_corrupt_file_is_blamed_not_a_missing_decoder(tmp_path: Path, name: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Without librosa, a corrupt file of a kind libsndfile reads is called unreadable (it
    used to say "librosa is not installed", which installing would not fix); a kind only
    librosa reads names it."""
    import sys

    monkeypatch.setitem(sys.modules, "librosa", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "librosa" else 1)
    path = tmp_path / name
    path.write_bytes(b"not audio at all" * 20)
    with pytest.raises(AudioFileError, match=r"not a readable audio file \(LibsndfileError"):
        load_audio(path, 16000)
    other = tmp_path / "take.m4a"
    other.write_bytes(b"not audio at all" * 20)
    with pytest.raises(AudioFileError, match=r"librosa is not installed; pip install"):
        load_audio(other, 16000)


def test_nan_or_infinite_samples_are_refused(tmp_path: Path) -> None:
    for bad in (np.nan, np.inf):
        audio = np.zeros(800, np.float32)
        audio[100] = bad
        sf.write(tmp_path / "bad.wav", audio, 16000, subtype="FLOAT")
        with pytest.raises(AudioFileError, match="NaN or infinite samples"):
            load_audio(tmp_path / "bad.wav", 16000)


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "full.wav"
    writer = AudioWriter(path, 16000)
    writer.write(np.zeros(400))

    def full(self, data):
        raise sf.LibsndfileError(2, "System error.")  # what libsndfile says on ENOSPC

    monkeypatch.setattr(sf.SoundFile, "write", full)
    with pytest.raises(AudioFileError, match=r"full.wav: writing failed after 400 samples .*disk "
                                             r"full\?.*what was written is kept"):
        writer.write(np.zeros(400))
    monkeypatch.undo()
    writer.close()
    assert sf.info(str(path)).frames == 400


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match="no such audio file"):
        load_audio(tmp_path / "missing.wav", 16000)
    with pytest.raises(AudioFileError, match="no such audio file"):
        load_audio(str(tmp_path / "missing.wav"), 16000)  # a path given as text
    sf.write(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(AudioFileError, match="no audio frames"):
        load_audio(tmp_path / "empty.wav", 16000)


@pytest.mark.parametrize("ext,subtype,tol", [("wav", None, 0.5 / 32768), ("wav", "FLOAT", 0),
                                             ("flac", None, 0.5 / 32768)])
def test_writer_round_trips_blocks(tmp_path: Path, ext: str, subtype: str | None, tol: float) -> None:
    rng = np.random.default_rng(1)
    blocks = [rng.uniform(-0.9, 0.9, size=n).astype(np.float32) for n in (100, 1, 513, 64)]
    path = tmp_path / f"out.{ext}"
    with AudioWriter(path, 16000, subtype=subtype) as writer:
        for i, block in enumerate(blocks):
            writer.write(block if i % 2 else block.tolist())  # arrays or any array-like
    data, sr = sf.read(path, dtype="float32")
    assert sr == 16000 and writer.frames_written == len(data) == 678
    assert np.max(np.abs(data - np.concatenate(blocks))) <= tol + 1e-7


def test_writer_raw_pcm_is_s16le(tmp_path: Path) -> None:
    stream = io.BytesIO()
    block = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 2.0], dtype=np.float32)
    with AudioWriter("-", 16000, stream=stream) as writer:
        writer.write(block)
    # x * 32768 rounded, clipped to the int16 range (full scale +1.0 becomes 32767)
    expected = b"".join(min(int(round(v * 32768)), 32767).to_bytes(2, "little", signed=True)
                        for v in np.clip(block, -1, 1))
    assert stream.getvalue() == expected


@pytest.mark.parametrize("shape", [(300,), (300, 1), (300, 2)])
def test_write_audio_takes_its_channels_from_the_array(tmp_path: Path, shape: tuple[int, ...]) -> None:
    audio = np.random.default_rng(4).uniform(-0.9, 0.9, size=shape)
    write_audio(str(tmp_path / "whole.wav"), audio.tolist(), 8000, subtype="FLOAT")  # any array-like
    data, sr = sf.read(tmp_path / "whole.wav", dtype="float32", always_2d=True)
    assert sr == 8000 and data.shape == (300, 1 if len(shape) == 1 else shape[1])
    np.testing.assert_allclose(data, audio.reshape(300, -1), atol=1e-7)


def test_raw_pcm_reaches_the_reader_block_by_block() -> None:
    """``generate -o - | aplay``: each block is flushed as it is written, not at the end."""
    class Pipe(io.BytesIO):
        def __init__(self) -> None:
            super().__init__()
            self.delivered: list[int] = []

        def flush(self) -> None:
            self.delivered.append(len(self.getvalue()))

    pipe = Pipe()
    with AudioWriter("-", 16000, stream=pipe) as writer:
        for n in (10, 1, 7):
            writer.write(np.zeros(n, dtype=np.float32))
            assert pipe.delivered[-1] == 2 * writer.frames_written


def test_mp3_on_an_old_libsndfile_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    formats = {k: v for k, v in sf.available_formats().items() if k != "MP3"}
    monkeypatch.setattr(sf, "available_formats", lambda: formats)
    assert output_format(tmp_path / "x.wav") == ("WAV", "PCM_16")
    with pytest.raises(AudioFileError, match=r"x\.mp3: this libsndfile .* cannot write MP3 \(1\.1 or newer"):
        AudioWriter(tmp_path / "x.mp3", 16000)
    assert not (tmp_path / "x.mp3").exists()


def test_writer_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AudioFileError, match=r"\.mp4"):
        AudioWriter(tmp_path / "x.mp4", 16000)
    with AudioWriter(tmp_path / "x.wav", 16000, channels=2) as writer:
        with pytest.raises(ValueError, match="2 channel"):
            writer.write(np.zeros(10))


WRITER_SCRIPT = textwrap.dedent("""
    import sys, time
    import numpy as np
    sys.path.insert(0, {root!r})
    from streamgen.audio.io import AudioWriter
    with AudioWriter(sys.argv[1], 16000) as writer:
        while True:
            writer.write(np.full(1600, 0.25, dtype=np.float32))
            print(writer.frames_written, flush=True)
            time.sleep(0.01)
""")


def run_writer_until_killed(path: Path, sig: int) -> int:
    """Start a writer process, kill it with ``sig`` after a few blocks; frames it reported."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER_SCRIPT.format(root=str(ROOT)), str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    reported = 0
    while reported < 8000:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        reported = int(line)
    proc.send_signal(sig)
    proc.wait(timeout=60)  # generous: a loaded CI machine can be slow to tear down
    return reported


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_wav_stays_valid_when_the_writer_is_interrupted(tmp_path: Path, sig: int) -> None:
    path = tmp_path / "live.wav"
    reported = run_writer_until_killed(path, sig)
    with wave.open(str(path)) as w:  # the stdlib reader trusts the header's sizes
        frames = w.getnframes()
        data = np.frombuffer(w.readframes(frames), dtype="<i2")
    assert frames >= reported and frames % 1600 == 0
    unlisted = path.stat().st_size - (44 + 2 * frames)
    # SIGKILL may land between a block's data and its header update: at most one block
    # is then beyond the header's count; on SIGINT the file is closed properly.
    assert unlisted == 0 if sig == signal.SIGINT else 0 <= unlisted <= 2 * 1600
    assert np.all(data == round(0.25 * 32768))


def test_flac_is_finalised_on_keyboard_interrupt(tmp_path: Path) -> None:
    path = tmp_path / "live.flac"
    reported = run_writer_until_killed(path, signal.SIGINT)
    info = sf.info(str(path))
    assert info.frames >= reported and info.frames % 1600 == 0
    assert np.allclose(sf.read(path)[0], 0.25, atol=1e-4)


def test_writer_rejects_blocks_of_the_wrong_shape_on_raw_pcm() -> None:
    stream = io.BytesIO()
    with AudioWriter("-", 16000, channels=1, stream=stream) as writer:
        with pytest.raises(ValueError, match="1 channel"):
            writer.write(np.zeros((4, 2), dtype=np.float32))
        with pytest.raises(ValueError, match="1 channel"):
            writer.write(np.zeros((4, 1, 1), dtype=np.float32))
        assert writer.frames_written == 0
    assert stream.getvalue() == b""


@pytest.mark.parametrize("target", ["file", "-"])
def test_writer_refuses_writes_after_close(tmp_path: Path, target: str) -> None:
    path = tmp_path / "out.wav" if target == "file" else "-"
    writer = AudioWriter(path, 16000, stream=io.BytesIO())
    writer.write(np.zeros(10, dtype=np.float32))
    writer.close()
    with pytest.raises(ValueError, match="closed"):
        writer.write(np.zeros(5, dtype=np.float32))
    assert writer.frames_written == 10


def test_close_reads_frames_written_back_after_an_interrupted_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.wav"
    with pytest.raises(KeyboardInterrupt):
        with AudioWriter(path, 16000) as writer:
            writer.write(np.full(100, 0.25, dtype=np.float32))

            flush = sf.SoundFile.flush

            def interrupted(self: sf.SoundFile) -> None:  # Ctrl-C lands after the data is written
                monkeypatch.setattr(sf.SoundFile, "flush", flush)  # once: close() flushes too
                raise KeyboardInterrupt

            monkeypatch.setattr(sf.SoundFile, "flush", interrupted)
            writer.write(np.full(50, 0.25, dtype=np.float32))
    assert writer.frames_written == sf.info(str(path)).frames == 150

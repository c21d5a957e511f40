"""Audio file I/O: load any audio file as float32 mono, write audio block by block.

``load_audio`` reads what libsndfile reads (WAV/FLAC/OGG, MP3 from libsndfile 1.1) with
soundfile and anything else through librosa's decoders (optional), mixes to mono and resamples
with soxr. ``AudioWriter`` writes WAV/FLAC/OGG/MP3 by extension, or raw s16le PCM to a binary
stream for the path ``-``. Every block
is flushed; WAV headers are rewritten after every block, so a WAV file is valid even if the
process is killed outright. FLAC/OGG/MP3 are finalised on close, which the context manager also
does on ``KeyboardInterrupt``.
"""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np
import soundfile as sf
import soxr

#: Extensions the loader recognises as audio when scanning folders.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

#: Container by extension for the writer, with its default sample subtype.
WRITE_FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
                 ".mp3": ("MP3", "MPEG_LAYER_III")}

_SFC_SET_UPDATE_HEADER_AUTO = 0x1061  # libsndfile: rewrite the header after every write


def to_pcm16(frames: np.ndarray) -> np.ndarray:
    """Float audio to int16 (x * 32768, rounded, clipped): one rule for files and stdout,
    the inverse of how soundfile reads PCM back (int / 32768)."""
    return np.clip(np.round(np.asarray(frames, dtype=np.float64) * 32768.0), -32768, 32767).astype("<i2")


class AudioFileError(ValueError):
    """An audio file that cannot be read or written; the message names the file and a fix."""


def resample(audio: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample float audio along the first axis (soxr, high quality)."""
    if orig_sr == target_sr:
        return audio
    return soxr.resample(audio, orig_sr, target_sr, quality="HQ").astype(np.float32)


def output_format(path: str | Path) -> tuple[str, str]:
    """The (container, sample subtype) the writer uses for ``path``, by its extension;
    AudioFileError for an extension it cannot write (MP3 needs libsndfile 1.1 or newer)."""
    suffix = Path(path).suffix.lower()
    if suffix not in WRITE_FORMATS:
        raise AudioFileError(f"{path}: cannot write {suffix or 'files without extension'}; use one of "
                             f"{', '.join(WRITE_FORMATS)} or '-' for raw PCM on stdout")
    fmt, subtype = WRITE_FORMATS[suffix]
    if fmt not in sf.available_formats():
        raise AudioFileError(f"{path}: this libsndfile ({sf.__libsndfile_version__}) cannot write "
                             f"{fmt} (1.1 or newer can); write .wav or .flac and convert it")
    return fmt, subtype


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return data, sr


def _read_librosa(path: Path) -> tuple[np.ndarray, int]:
    try:
        import librosa
    except ImportError as exc:
        raise AudioFileError(
            f"{path}: soundfile cannot read this format and librosa is not installed; "
            "pip install 'streamgen[train]' or convert the file to WAV/FLAC"
        ) from exc
    with warnings.catch_warnings():  # librosa warns before falling back to audioread
        warnings.simplefilter("ignore")
        data, sr = librosa.load(str(path), sr=None, mono=False, dtype=np.float32)
    return np.atleast_2d(data).T, int(sr)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError, AttributeError):  # None in sys.modules: import blocked
        return False


def _soundfile_reads(path: Path) -> bool:
    """Whether libsndfile reads files of ``path``'s kind (by extension): when it fails on one,
    the file is at fault, not a missing decoder."""
    suffix = path.suffix.lower().lstrip(".")
    return {"aif": "AIFF", "oga": "OGG", "opus": "OGG"}.get(suffix, suffix.upper()) in sf.available_formats()


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Read ``path`` as float32 mono at ``sample_rate`` (channels averaged, then resampled)."""
    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path}: no such audio file; check the path")
    errors = []
    readers = [_read_soundfile]
    if not _soundfile_reads(path) or _installed("librosa"):
        readers.append(_read_librosa)  # more formats (and decoders of last resort)
    for reader in readers:
        try:
            data, sr = reader(path)
            break
        except AudioFileError:
            raise
        except Exception as exc:  # decoders raise many types; report them all below
            errors.append(f"{type(exc).__name__} {exc}".strip().replace("\n", " "))
    else:
        raise AudioFileError(
            f"{path}: not a readable audio file ({'; '.join(errors)}); "
            "convert it to WAV or FLAC (e.g. ffmpeg -i IN OUT.wav) or remove it"
        )
    if data.shape[0] == 0:
        raise AudioFileError(f"{path}: the file holds no audio frames; remove it")
    if not np.isfinite(data).all():
        raise AudioFileError(f"{path}: holds NaN or infinite samples; export the audio again "
                             "(or replace them) and retry")
    mono = data.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(resample(mono, sr, sample_rate), dtype=np.float32)


class AudioWriter:
    """Write audio block by block to a WAV/FLAC/OGG file, or raw s16le PCM for ``path='-'``.

    Blocks are float arrays in [-1, 1], shape ``(frames,)`` or ``(frames, channels)``.
    ``subtype`` overrides the soundfile sample format (e.g. ``"FLOAT"`` for 32-bit WAV).
    Use as a context manager so the file is finalised even on ``KeyboardInterrupt``.
    """

    def __init__(
        self,
        path: str | Path,
        sample_rate: int,
        channels: int = 1,
        subtype: str | None = None,
        stream: BinaryIO | None = None,
    ) -> None:
        self.path = str(path)
        self.sample_rate = sample_rate
        self.channels = channels
        self.frames_written = 0
        self._file: sf.SoundFile | None = None
        self._stream: BinaryIO | None = None
        if self.path == "-":
            self._stream = stream if stream is not None else sys.stdout.buffer
            return
        fmt, default_subtype = output_format(self.path)
        self._pcm16 = (subtype or default_subtype) == "PCM_16"
        try:
            self._file = sf.SoundFile(
                self.path, "w", sample_rate, channels, subtype or default_subtype, format=fmt
            )
        except (sf.LibsndfileError, ValueError, TypeError, OSError) as exc:
            raise AudioFileError(f"{self.path}: cannot open for writing ({exc}); check the "
                                 "folder exists and the subtype suits the format") from exc
        if fmt == "WAV":
            # Keep the RIFF/data sizes current after every write, so a killed process
            # leaves a valid file. soundfile exposes no public call for this command.
            sf._snd.sf_command(self._file._file, _SFC_SET_UPDATE_HEADER_AUTO, sf._ffi.NULL, 1)

    def _frames(self, block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float32)
        if block.ndim == 1:
            block = block[:, None]
        if block.ndim != 2 or block.shape[1] != self.channels:
            raise ValueError(
                f"block of shape {block.shape} does not match {self.channels} channel(s); "
                "pass (frames,) or (frames, channels)"
            )
        return block

    def write(self, block: np.ndarray) -> None:
        """Append one block and flush it to the file or stream."""
        frames = self._frames(block)
        if self._stream is not None:
            self._stream.write(to_pcm16(frames).tobytes())
            self._stream.flush()
        elif self._file is not None:
            try:
                self._file.write(to_pcm16(frames) if self._pcm16 else frames)
                self._file.flush()
            except (sf.LibsndfileError, OSError) as exc:  # a full disk: "System error."
                raise AudioFileError(
                    f"{self.path}: writing failed after {self.frames_written} samples ({exc}); "
                    "is the disk full? Free space or write elsewhere (what was written is "
                    "kept)") from exc
        else:
            raise ValueError(f"{self.path}: writer is closed")
        self.frames_written += len(frames)

    def close(self) -> None:
        """Finalise the file (headers, last pages); idempotent. ``frames_written`` is then read
        back from the file: Ctrl-C can land after a block reached the file but before it was
        counted."""
        if self._file is not None:
            file, self._file = self._file, None
            try:
                file.close()
            except (sf.LibsndfileError, OSError, RuntimeError):
                pass  # a full disk: the header written last time stands
            try:
                self.frames_written = sf.info(self.path).frames
            except (sf.LibsndfileError, RuntimeError, OSError):
                pass  # keep the count
        if self._stream is not None:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                pass
            self._stream = None

    def __enter__(self) -> "AudioWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str | None = None) -> None:
    """Write a whole array to ``path`` (format by extension)."""
    audio = np.asarray(audio, dtype=np.float32)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with AudioWriter(path, sample_rate, channels, subtype) as writer:
        writer.write(audio)

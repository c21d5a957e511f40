"""Training data: a folder of audio files, mu-law encoded once and cached, sampled in windows.

Files are found recursively (``AUDIO_EXTENSIONS``) and split into training and validation by
file: the split listed in the folder's ``manifest.json`` (see ``streamgen.train.corpus``),
explicit lists, or a deterministic hash-ordered fraction. Each file is decoded, resampled and
mu-law encoded once; the uint8 classes are cached as ``.npy`` under a key made of the file's
absolute path, mtime, size and the sample rate, so later runs skip decoding. A folder packed by
``streamgen.train.pack`` (``pack.json``) is read directly, split included.

``open_training_data`` is the one entry: it skips unreadable files (naming each), refuses a
set with nothing usable left, and gives the data's identity: a sha256 over every track's name,
split and mu-law samples, the same for a folder and for a full pack of it, so a model's record
says which data it saw. A folder of one file has no validation (a warning says so); the split is
always by whole file, never inside one.

A window for an output length ``m`` is ``input_length(m) + 1`` consecutive samples: the
network reads the first ``input_length(m)`` and the targets are the last ``m`` (the target at
every output position is the input sample one step later).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from streamgen.audio.io import AUDIO_EXTENSIONS, AudioFileError, load_audio
from streamgen.audio.mulaw import mulaw_encode
from streamgen.train.corpus import MANIFEST, MANIFEST_FORMAT
from streamgen.train.pack import PACK_MANIFEST, read_pack

SPLITS = ("train", "validation")

#: The mu-law class of 0.0: what a window that starts before its track holds there.
SILENCE = int(mulaw_encode(np.zeros(1, dtype=np.float32))[0])


def default_cache_dir() -> Path:
    """``$STREAMGEN_CACHE``, else ``$XDG_CACHE_HOME/streamgen``, else ``~/.cache/streamgen``."""
    if os.environ.get("STREAMGEN_CACHE"):
        return Path(os.environ["STREAMGEN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "streamgen"


def find_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursive, hidden files skipped), sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such data folder; pass a folder of audio files")
    return sorted(
        p for p in root.rglob("*")
        if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def _stable_rank(path: Path, root: Path) -> str:
    return hashlib.sha256(path.relative_to(root).as_posix().encode()).hexdigest()


@dataclass(frozen=True)
class Split:
    train: list[Path]
    validation: list[Path]
    rule: str = "explicit file lists"
    hashed: bool = False  # split by path hash, so any subset of the files can be split alike


def split_files(
    root: str | Path,
    val_fraction: float = 0.1,
    train_files: Sequence[str | Path] | None = None,
    val_files: Sequence[str | Path] | None = None,
    files: Sequence[Path] | None = None,
) -> Split:
    """Split the audio under ``root`` by file.

    Explicit lists (relative to ``root`` or absolute) win; else ``root/manifest.json`` from the
    corpus builder; else the files (``files``, default all found under ``root``) sorted by a
    hash of their relative path, the first ``round(val_fraction * n)`` (at least one when the
    fraction is positive and n > 1) going to validation: deterministic, and independent of file
    order on disk.
    """
    root = Path(root)

    def resolve(items: Sequence[str | Path]) -> list[Path]:
        paths = [p if Path(p).is_absolute() else root / p for p in map(Path, items)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"listed audio files not found: {missing[:3]}; fix the file lists")
        return paths

    if train_files is not None or val_files is not None:
        train = resolve(train_files or [])
        val = resolve(val_files or [])
        if not train_files:
            chosen = set(val)
            train = [p for p in find_audio_files(root) if p not in chosen]
        return Split(train, val)
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            data = json.loads(manifest.read_text())
        except ValueError as exc:
            raise ValueError(f"{manifest} is not valid JSON ({exc}); fix it, or remove it to "
                             "split the folder's files by path hash") from None
        if isinstance(data, dict) and data.get("format") == MANIFEST_FORMAT:
            lists = [data.get(k) for k in ("train", "validation")]
            if not all(isinstance(v, list) and all(isinstance(p, str) for p in v) for v in lists):
                raise ValueError(f"{manifest}: 'train' and 'validation' must be lists of file "
                                 "paths; fix it, or remove it to split by path hash")
            return Split(resolve(lists[0]), resolve(lists[1]), f"the folder's {MANIFEST}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    files = find_audio_files(root) if files is None else sorted(files)
    if not files:
        raise FileNotFoundError(f"{root}: no audio files ({', '.join(AUDIO_EXTENSIONS)}) found")
    ordered = sorted(files, key=lambda p: _stable_rank(p, root))
    n_val = round(val_fraction * len(files))
    if val_fraction > 0 and len(files) > 1:
        n_val = max(n_val, 1)
    n_val = min(n_val, len(files) - 1)
    val = set(ordered[:n_val])
    return Split([p for p in files if p not in val], [p for p in files if p in val],
                 f"{val_fraction:g} of the files by path hash", hashed=True)


def load_encoded(path: str | Path, sample_rate: int, cache_dir: str | Path | None = None) -> np.ndarray:
    """Mu-law classes (uint8) of an audio file at ``sample_rate``, cached on disk."""
    path = Path(path).resolve()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    stat = path.stat()
    key = hashlib.sha256(
        f"{path}|{stat.st_mtime_ns}|{stat.st_size}|{sample_rate}|mulaw255".encode()
    ).hexdigest()[:32]
    file = cache / "encoded" / f"{key}.npy"
    if file.is_file():
        try:
            return np.load(file, allow_pickle=False)
        except (ValueError, OSError):
            file.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    classes = mulaw_encode(load_audio(path, sample_rate)).astype(np.uint8)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.stem}.{os.getpid()}.npy")
    np.save(tmp, classes, allow_pickle=False)
    os.replace(tmp, file)
    return classes


class EncodedAudio:
    """A set of mu-law encoded tracks that serves training windows and validation windows."""

    def __init__(self, names: Sequence[str], tracks: Sequence[np.ndarray]) -> None:
        """``tracks`` already encoded (uint8 mu-law classes), named as their source files."""
        self.names, self.tracks = list(names), list(tracks)
        self.files = [Path(n) for n in self.names]

    @property
    def total_samples(self) -> int:
        return sum(len(t) for t in self.tracks)

    def _usable(self, window: int) -> tuple[list[int], np.ndarray]:
        """Tracks with at least ``window`` samples and their counts of window starts."""
        ids = [i for i, t in enumerate(self.tracks) if len(t) >= window]
        if not ids:
            longest = max((len(t) for t in self.tracks), default=0)
            raise ValueError(f"no audio file holds a window of {window} samples (longest: "
                             f"{longest}); use a shorter output window or longer files")
        return ids, np.array([len(self.tracks[i]) - window + 1 for i in ids], dtype=np.int64)

    def draw_positions(self, rng: np.random.Generator, count: int, window: int, lead: int = 0,
                       lead_fraction: float = 0.0) -> np.ndarray:
        """``count`` (track, start) pairs, uniform over all window positions of all tracks.

        With ``lead_fraction`` > 0, that share of the windows instead starts 1 to ``lead``
        samples before a track (uniform over tracks): ``windows`` fills what lies before the
        track with the silence class, so the model learns to begin from silence. (No extra
        random numbers are drawn when it is 0: runs without it draw the same windows.)
        """
        ids, starts = self._usable(window)
        flat = rng.integers(0, int(starts.sum()), size=count)
        edges = np.cumsum(starts)
        which = np.searchsorted(edges, flat, side="right")
        offsets = flat - np.concatenate([[0], edges[:-1]])[which]
        positions = np.stack([np.array(ids)[which], offsets], axis=1)
        if lead_fraction > 0 and lead > 0:
            early = rng.random(count) < lead_fraction
            positions[early, 0] = rng.choice(ids, size=int(early.sum()))
            positions[early, 1] = -rng.integers(1, lead + 1, size=int(early.sum()))
        return positions

    def windows(self, positions: np.ndarray, input_length: int, output_length: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs ``(B, input_length)`` and next-sample targets ``(B, output_length)`` (int64);
        a window that starts before its track (negative start) holds the silence class there."""
        n = input_length + 1
        segs = np.stack([self.tracks[t][s : s + n] if s >= 0 else
                         np.concatenate([np.full(-s, SILENCE, np.uint8), self.tracks[t][: s + n]])
                         for t, s in positions])
        segs = segs.astype(np.int64)
        return segs[:, :input_length], segs[:, input_length + 1 - output_length :]

    def target_positions(
        self, first_target: int, input_length: int, output_length: int, every: int = 1
    ) -> np.ndarray:
        """Windows whose targets tile every track from sample ``first_target`` on (each
        ``every``-th block of ``output_length``). The same targets for any network whose
        ``input_length(output_length) - output_length < first_target``: a fair comparison."""
        if input_length - output_length >= first_target:
            raise ValueError(f"first_target {first_target} leaves too little context for "
                             f"{input_length} inputs per {output_length} outputs")
        out = []
        for i, t in enumerate(self.tracks):
            for target in range(first_target, len(t) - output_length + 1, output_length * every):
                out.append((i, target - input_length - 1 + output_length))
        return np.array(out, dtype=np.int64).reshape(-1, 2)

    def validation_positions(self, count: int, input_length: int, output_length: int) -> np.ndarray:
        """Up to ``count`` fixed windows whose targets tile the tracks, spread evenly."""
        window = input_length + 1
        candidates = [
            (i, s)
            for i, t in enumerate(self.tracks)
            for s in range(0, len(t) - window + 1, output_length)
        ]
        if not candidates:
            return np.zeros((0, 2), dtype=np.int64)
        take = np.linspace(0, len(candidates) - 1, min(count, len(candidates))).round().astype(int)
        return np.array([candidates[k] for k in np.unique(take)], dtype=np.int64)


@dataclass
class TrainingData:
    """The encoded training and validation tracks of one data folder, and what was skipped."""

    train: EncodedAudio
    validation: EncodedAudio
    sample_rate: int
    source: str  # "audio folder" or "packed corpus"
    split_rule: str
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped
    _sha256: str | None = field(default=None, init=False, repr=False, compare=False)

    def sets(self) -> dict[str, EncodedAudio]:
        return dict(zip(SPLITS, (self.train, self.validation)))

    def sha256(self) -> str:
        """A hash over every track's split, name and samples: which data, exactly (hashed once:
        a resume both records and checks it)."""
        if self._sha256 is None:
            digest = hashlib.sha256()
            for split, data in self.sets().items():
                for name, track in zip(data.names, data.tracks):
                    digest.update(f"{split}\0{name}\0{len(track)}\0".encode())
                    digest.update(np.ascontiguousarray(track, dtype=np.uint8).tobytes())
            self._sha256 = digest.hexdigest()
        return self._sha256

    def identity(self) -> dict[str, Any]:
        """What a training record stores about its data (JSON)."""
        return {"sha256": self.sha256(), "source": self.source, "split": self.split_rule,
                "sample_rate": self.sample_rate,
                **{f"{k}_files": len(v.tracks) for k, v in self.sets().items()},
                **{f"{k}_samples": v.total_samples for k, v in self.sets().items()},
                "skipped": sorted(self.skipped)}

    def refuse_unless_trained_on(self, training: Mapping[str, Any], root: str | Path,
                                 run: str | Path, fix: str) -> None:
        """ValueError unless this (from ``root``) is the data, split included, of the run in
        ``run`` (``training``: its stored training record); ``fix`` ends the message."""
        stored = (training.get("data") or {}).get("sha256")
        if stored and stored != self.sha256():
            raise ValueError(f"{root} holds other data (or another split) than the run in {run} "
                             f"was trained on (sha256 {self.sha256()[:12]}..., the run's "
                             f"{stored[:12]}...); {fix}")

    def summary(self) -> str:
        """One line: files, hours and split."""
        hours = {k: v.total_samples / self.sample_rate / 3600 for k, v in self.sets().items()}
        parts = ", ".join(f"{k} {len(v.tracks)} files {hours[k]:.2f} h" for k, v in self.sets().items())
        return (f"data: {self.source}, {parts} (split: {self.split_rule})"
                + (f"; {len(self.skipped)} unreadable files skipped" if self.skipped else ""))

    def subset(self, train_files: int | None) -> "TrainingData":
        """The first ``train_files`` training tracks (all of validation); ``None``: all."""
        if train_files is None:
            return self
        if train_files < 1:
            raise ValueError(f"a subset needs at least one training file, got {train_files}")
        keep = EncodedAudio(self.train.names[:train_files], self.train.tracks[:train_files])
        return TrainingData(keep, self.validation, self.sample_rate, self.source,
                            f"{self.split_rule}; first {len(keep.tracks)} training files", dict(self.skipped))


def open_training_data(
    root: str | Path,
    sample_rate: int = 16000,
    val_fraction: float = 0.1,
    train_files: Sequence[str | Path] | None = None,
    val_files: Sequence[str | Path] | None = None,
    cache_dir: str | Path | None = None,
    warn: Callable[[str], None] = lambda message: None,
) -> TrainingData:
    """Encode (or read packed) the tracks under ``root``, split, skipping unreadable files.

    Each skipped file and a missing validation set are reported through ``warn``; a ``ValueError``
    names the problem when no training audio is left.
    """
    root = Path(root)
    if (root / PACK_MANIFEST).is_file():
        if train_files is not None or val_files is not None:
            raise ValueError(f"{root} is a packed corpus with its own split; drop the file lists")
        manifest, tracks = read_pack(root)
        if manifest["sample_rate"] != sample_rate:
            raise ValueError(f"{root} was packed at {manifest['sample_rate']} Hz, not {sample_rate}; "
                             "pack the audio again at this rate")
        sets = {k: EncodedAudio(list(tracks[k]), list(tracks[k].values())) for k in SPLITS}
        data = TrainingData(sets["train"], sets["validation"], sample_rate, "packed corpus",
                            manifest["split"])
    else:
        split = split_files(root, val_fraction, train_files, val_files)
        skipped: dict[str, str] = {}
        encoded: dict[Path, np.ndarray] = {}
        for path in split.train + split.validation:
            try:
                encoded[path] = load_encoded(path, sample_rate, cache_dir)
            except (AudioFileError, OSError) as exc:
                skipped[str(path)] = str(exc)
                warn(f"skipping {path}: unreadable ({exc})")
        if skipped and split.hashed and encoded:  # split what is left, so validation is readable
            split = split_files(root, val_fraction, files=list(encoded))
        sets = {}
        for name, files in zip(SPLITS, (split.train, split.validation)):
            names = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in files if p in encoded]
            sets[name] = EncodedAudio(names, [encoded[p] for p in files if p in encoded])
        data = TrainingData(sets["train"], sets["validation"], sample_rate, "audio folder", split.rule, skipped)
    if not data.train.tracks:
        raise ValueError(f"{root}: no usable training audio ({len(data.skipped)} files unreadable); "
                         "add readable audio files or fix the split")
    if not data.validation.tracks:
        warn(f"{root}: no validation files ({len(data.train.tracks)} training files), so no "
             "validation loss; the split is by whole file: add audio files, with a validation "
             "fraction above 0")
    return data

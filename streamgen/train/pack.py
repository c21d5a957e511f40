"""Packed corpora: encoded training data in a few files small enough to transfer one by one.

A pack folder holds ``pack.json`` and parts ``part-000.npz``, ``part-001.npz``, ...: each part
is an npz whose members (``t00000.npy``, ...) are uint8 mu-law tracks, LZMA-compressed inside
the zip (``numpy.load`` reads them as any npz). Parts are filled in track order up to
``max_bytes`` each. ``pack.json`` records the format, sample rate, the split rule, the identity
of the data packed (``streamgen.train.data.TrainingData.sha256``: the same hash as training on
the source folder itself), and per part its file name, size, sha256 and tracks (name, split,
member key, sample count). ``read_pack`` checks every part's sha256 before use.
"""

from __future__ import annotations

import io
import json
import lzma
import os
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from streamgen.checkpoint import sha256_file

if TYPE_CHECKING:
    from streamgen.train.data import TrainingData

PACK_MANIFEST = "pack.json"
PACK_FORMAT = "streamgen-packed-corpus"
DEFAULT_MAX_BYTES = 60 * 2**20
ZIP_OVERHEAD = 200  # bytes per member beyond its compressed data: headers, central directory


def _npy_bytes(track: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(track, dtype=np.uint8), allow_pickle=False)
    return buffer.getvalue()


def _member_size(payload: bytes) -> int:
    """Bytes a member takes in a ZIP_LZMA archive: zipfile's LZMA1 stream plus headers."""
    return len(lzma.compress(payload, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA1}])) + ZIP_OVERHEAD


def _write_part(path: Path, members: list[tuple[str, bytes]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_LZMA) as archive:
        for key, payload in members:
            archive.writestr(f"{key}.npy", payload)
    os.replace(tmp, path)


def write_pack(data: "TrainingData", out_dir: str | Path, max_bytes: int = DEFAULT_MAX_BYTES) -> Path:
    """Pack ``data``'s tracks into ``out_dir`` in parts of at most ``max_bytes``; returns the
    manifest's path. ``out_dir`` must not hold a pack already."""
    out = Path(out_dir)
    if (out / PACK_MANIFEST).exists():
        raise FileExistsError(f"{out} already holds a packed corpus; choose another folder or remove it")
    out.mkdir(parents=True, exist_ok=True)
    parts: list[dict[str, Any]] = []
    members: list[tuple[str, bytes]] = []
    tracks: list[dict[str, Any]] = []
    size = 22  # the end-of-archive record

    def flush() -> None:
        nonlocal members, tracks, size
        path = out / f"part-{len(parts):03d}.npz"
        _write_part(path, members)
        written = path.stat().st_size
        if written > max_bytes:  # the size estimate is exact up to headers; never expected
            raise RuntimeError(f"{path} came out at {written} bytes, over {max_bytes}")
        parts.append({"file": path.name, "bytes": written, "sha256": sha256_file(path), "tracks": tracks})
        members, tracks, size = [], [], 22

    index = 0
    for split, encoded in data.sets().items():
        for name, track in zip(encoded.names, encoded.tracks):
            payload = _npy_bytes(track)
            need = _member_size(payload)
            if need + 22 > max_bytes:
                raise ValueError(f"{name} alone needs {need:,} bytes packed, over the {max_bytes:,} "
                                 "per part; raise --max-bytes or cut the file")
            if members and size + need > max_bytes:
                flush()
            key = f"t{index:05d}"
            members.append((key, payload))
            tracks.append({"name": name, "split": split, "key": key, "samples": len(track)})
            size += need
            index += 1
    if members:
        flush()
    manifest = {
        "format": PACK_FORMAT, "version": 1, "sample_rate": data.sample_rate, "encoding": "mu-law 8 bit",
        "split": data.split_rule, "data_sha256": data.sha256(), "max_bytes": max_bytes,
        "samples": {k: v.total_samples for k, v in data.sets().items()},
        "bytes": sum(p["bytes"] for p in parts), "skipped": sorted(data.skipped), "parts": parts,
    }
    path = out / PACK_MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def read_pack(root: str | Path) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """The manifest and ``{split: {track name: uint8 classes}}`` of a pack, parts verified."""
    root = Path(root)
    try:
        manifest = json.loads((root / PACK_MANIFEST).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{root / PACK_MANIFEST}: not valid JSON ({exc}); copy the pack again") from exc
    if manifest.get("format") != PACK_FORMAT or manifest.get("version") != 1:
        raise ValueError(f"{root / PACK_MANIFEST}: not a version-1 {PACK_FORMAT}; pack the data again")
    tracks: dict[str, dict[str, np.ndarray]] = {"train": {}, "validation": {}}
    for part in manifest["parts"]:
        path = root / part["file"]
        if not path.is_file() or sha256_file(path) != part["sha256"]:
            raise ValueError(f"{path}: missing or not the part the manifest lists (sha256); copy it again")
        with np.load(path, allow_pickle=False) as archive:
            for entry in part["tracks"]:
                tracks[entry["split"]][entry["name"]] = archive[entry["key"]]
    return manifest, tracks

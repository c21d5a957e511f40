"""Build the default training corpus offline: Bach chorales rendered on a piano.

The chorales come from music21's bundled corpus (``music21.corpus.chorales.Iterator``, one
score per BWV file). Each is written to MIDI with every part set to Acoustic Grand Piano
(General MIDI program 0), rendered with FluidSynth and the FluidR3 GM soundfont, mixed to
mono, trimmed of leading/trailing silence and peak-normalised to -1 dBFS at 16 kHz.

The split is fixed: chorales are sorted by BWV number (``bwv153.1`` -> ``(153, 1)``) and every
10th one (sorted positions 9, 19, 29, ...) goes to validation, the rest to training. The split
of a chorale does not depend on ``limit``. ``manifest.json`` in the output folder records the
split, durations and the tools used; ``streamgen.train.data`` reads it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from streamgen.audio.io import load_audio, write_audio

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "streamgen-corpus"
VALIDATION_EVERY = 10
PEAK = 10 ** (-1 / 20)  # -1 dBFS
SILENCE = 1e-3  # trim threshold, relative to full scale before normalising


def chorale_key(name: str) -> tuple[int, ...]:
    """Sort key of a chorale name: ``bach/bwv153.1`` -> ``(153, 1)``."""
    numbers = re.findall(r"\d+", Path(name).name)
    if not numbers:
        raise ValueError(f"chorale name {name!r} holds no BWV number")
    return tuple(int(n) for n in numbers)


def chorale_names() -> list[str]:
    """The bundled Bach chorales (``bach/bwvNNN.M``), unique, sorted by BWV number."""
    from music21.corpus import chorales

    names = set(chorales.Iterator(returnType="filename"))
    return sorted(names, key=chorale_key)


def split_of(position: int) -> str:
    """The fixed split of the chorale at ``position`` in BWV order."""
    return "validation" if position % VALIDATION_EVERY == VALIDATION_EVERY - 1 else "train"


def write_piano_midi(name: str, midi_path: Path) -> None:
    """Write chorale ``name`` to ``midi_path`` with every part on Acoustic Grand Piano.

    Repeats are expanded; a score whose repeats music21 cannot expand is played straight.
    """
    from music21 import bar, corpus, instrument, repeat

    score = corpus.parse(name)
    for part in score.parts:
        for inst in list(part.recurse().getElementsByClass(instrument.Instrument)):
            inst.activeSite.remove(inst)
        part.insert(0, instrument.Piano())
    try:
        score.write("midi", fp=str(midi_path))
    except repeat.ExpanderException:
        for measure in score.recurse().getElementsByClass("Measure"):
            for side in ("leftBarline", "rightBarline"):
                if isinstance(getattr(measure, side), bar.Repeat):
                    setattr(measure, side, None)
        for mark in list(score.recurse().getElementsByClass(repeat.RepeatExpression)):
            mark.activeSite.remove(mark)
        score.write("midi", fp=str(midi_path))


def render_midi(midi_path: Path, wav_path: Path, sample_rate: int, soundfont: Path) -> None:
    """Render ``midi_path`` to ``wav_path`` with FluidSynth (no audio driver, no shell)."""
    cmd = ["fluidsynth", "-ni", "-q", "-F", str(wav_path), "-r", str(sample_rate),
           str(soundfont), str(midi_path)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not wav_path.is_file():
        raise RuntimeError(f"fluidsynth failed on {midi_path}: {result.stderr.strip()}")


def normalise(audio: np.ndarray) -> np.ndarray:
    """Trim leading/trailing near-silence and scale the peak to -1 dBFS."""
    loud = np.flatnonzero(np.abs(audio) > SILENCE * max(np.abs(audio).max(), 1e-9))
    if loud.size == 0:
        return audio[:0]
    audio = audio[loud[0] : loud[-1] + 1]
    return (audio * (PEAK / np.abs(audio).max())).astype(np.float32)


def _render_one(args: tuple[str, str, int, str]) -> tuple[str, int] | str:
    """Worker: chorale -> normalised mono WAV; (relative wav path, frames) or why it failed."""
    try:
        return _render(*args)
    except Exception as exc:  # one bad score must not stop the corpus
        return f"{type(exc).__name__}: {exc}"


def _render(name: str, out_dir: str, sample_rate: int, soundfont: str) -> tuple[str, int]:
    out = Path(out_dir)
    stem = Path(name).name
    wav = out / "wav" / f"{stem}.wav"
    if not wav.is_file():
        midi = out / "midi" / f"{stem}.mid"
        write_piano_midi(name, midi)
        raw = out / "wav" / f".{stem}.raw.wav"
        render_midi(midi, raw, sample_rate, Path(soundfont))
        audio = normalise(load_audio(raw, sample_rate))
        tmp = out / "wav" / f".{stem}.tmp.wav"
        write_audio(tmp, audio, sample_rate)
        tmp.replace(wav)
        raw.unlink()
    import soundfile as sf

    return str(wav.relative_to(out)), sf.info(str(wav)).frames


def build_corpus(
    out_dir: str | Path,
    limit: int | None = None,
    *,
    sample_rate: int = 16000,
    soundfont: str | Path = SOUNDFONT,
    jobs: int | None = None,
) -> Path:
    """Render the Bach chorale corpus into ``out_dir`` and return its manifest's path.

    ``limit`` keeps the first ``limit`` chorales in BWV order (for quick tests). Files already
    rendered are kept, so an interrupted build resumes.
    """
    if shutil.which("fluidsynth") is None:
        raise FileNotFoundError("fluidsynth not found; install it (apt-get install fluidsynth)")
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise FileNotFoundError(f"soundfont {soundfont} not found; apt-get install fluid-soundfont-gm")
    out = Path(out_dir)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    (out / "midi").mkdir(parents=True, exist_ok=True)
    names = chorale_names()
    splits = {name: split_of(i) for i, name in enumerate(names)}
    chosen = names if limit is None else names[:limit]
    work = [(name, str(out), sample_rate, str(soundfont)) for name in chosen]
    if jobs == 1:
        results = list(map(_render_one, work))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(_render_one, work))
    files: dict[str, list[str]] = {"train": [], "validation": []}
    seconds = {"train": 0.0, "validation": 0.0}
    skipped = {}
    for name, result in zip(chosen, results):
        if isinstance(result, str):
            skipped[name] = result
            continue
        rel, frames = result
        files[splits[name]].append(rel)
        seconds[splits[name]] += frames / sample_rate
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "name": "bach-chorales-piano",
        "sample_rate": sample_rate,
        "source": "music21 bundled corpus, corpus.chorales.Iterator (BWV files)",
        "render": f"fluidsynth -ni -r {sample_rate} {soundfont.name}, all parts GM program 0",
        "normalisation": "mono, silence trimmed, peak -1 dBFS",
        "split_rule": f"sorted by BWV number; every {VALIDATION_EVERY}th (positions "
        f"{VALIDATION_EVERY - 1}, {2 * VALIDATION_EVERY - 1}, ...) is validation",
        "train": files["train"],
        "validation": files["validation"],
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "skipped": skipped,
    }
    path = out / MANIFEST
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    return path

"""What a listener hears from each model, beside held-out chorales (writes
benchmarks/results/quality.{json,md}).

    python benchmarks/quality.py --data data/bach16k                  # zoo default and wavenet-baseline
    python benchmarks/quality.py --data data/bach16k --models default runs/mine --clips 16 --seconds 8

Every model generates one batch of ``--clips`` streams with seed 0 and its recommended
sampling and start (``streamgen generate --model M --batch 16 --seed 0`` writes the same
clips). The held-out reference is the same number of clips from the validation chorales (the first files of the split, from 1 s in),
mu-law encoded and decoded as the models hear and play audio. Per clip
(``streamgen.audio.analysis.clip_quality``): the tonality check, a silent first second, the
time to the first sound, note onsets per second and distinct pitches.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamgen.audio.analysis import SILENT_RMS, clip_quality
from streamgen.audio.io import load_audio
from streamgen.audio.mulaw import mulaw_decode, mulaw_encode
from streamgen.bench.timing import machine_info
from streamgen.generation import AudioGenerator
from streamgen.train.data import split_files
from streamgen.zoo import load_model


def model_clips(name: str, count: int, seconds: float) -> tuple[list[np.ndarray], int, str]:
    """One batch of ``count`` streams, as ``streamgen generate --batch`` makes them; and how."""
    model, info = load_model(name)
    rate = info.sample_rate
    gen = AudioGenerator(model, batch=count, sampling=info.sampling, seed=0, start=info.start)
    return list(gen(int(seconds * rate))), rate, f"{info.sampling}, start {info.start}, {gen.engine.backend}"


def held_out_clips(data: Path, count: int, seconds: float, rate: int) -> list[np.ndarray]:
    """``count`` clips of the validation chorales from 1 s in, through 8-bit mu-law."""
    clips = []
    for path in split_files(data).validation[:count]:
        audio = np.asarray(load_audio(path, rate), dtype=np.float32)[rate : rate + int(seconds * rate)]
        clips.append(mulaw_decode(mulaw_encode(torch.from_numpy(audio))).numpy())
    return clips


def summarise(source: str, how: str, clips: list[np.ndarray], rate: int, map=map) -> dict:
    """The clips' checks (through ``map``: a process pool's, to share them out) and their
    summary."""
    checks = list(map(partial(clip_quality, sample_rate=rate), clips))
    onsets = [q.onsets_per_s for q in checks]
    pitches = [q.distinct_pitches for q in checks]
    return {"source": source, "how": how, "clips": len(clips),
            "tonal": sum(q.tonal for q in checks), "silent_first_second": sum(q.silent_first_second for q in checks),
            "median_first_sound_s": float(np.median([q.first_sound_s for q in checks])),
            "onsets_per_s": [float(np.median(onsets)), float(min(onsets)), float(max(onsets))],
            "distinct_pitches": [float(np.median(pitches)), int(min(pitches)), int(max(pitches))],
            "per_clip": [asdict(q) for q in checks]}


def spread_cells(row: dict) -> str:
    """A summary's onsets per second and distinct pitches as table cells: median (range)."""
    o, p = row["onsets_per_s"], row["distinct_pitches"]
    return f"{o[0]:.2f} ({o[1]:.2f}-{o[2]:.2f}) | {p[0]:g} ({p[1]}-{p[2]})"


def markdown(results: dict) -> str:
    lines = [f"# What a listener hears: {results['clips']} clips of {results['seconds']:g} s per source", "",
             f"Machine: {results['machine']['processor']}; `python benchmarks/quality.py`. Tonal: "
             "`harmonicity(...).is_tonal()`; silent start: first-second RMS under "
             f"{SILENT_RMS}; onsets: librosa's onset detector; pitches: semitones (C2-C6) that the "
             "predominant pitch (pYIN) holds for 0.1 s or more. Ranges are min-max.", "",
             "| source | tonal | silent first second | median first sound (s) | onsets/s: median (range) "
             "| distinct pitches: median (range) |", "|---|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        lines.append(f"| {r['source']} | {r['tonal']} of {r['clips']} | {r['silent_first_second']} of {r['clips']} "
                     f"| {r['median_first_sound_s']:.2f} | {spread_cells(r)} |")
    lines += ["", "How each model sampled: " + "; ".join(f"{r['source']}: `{r['how']}`" for r in results["rows"][1:]) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="the corpus folder (its validation chorales)")
    p.add_argument("--models", nargs="+", default=["default", "wavenet-baseline"], help="zoo names or folders")
    p.add_argument("--labels", nargs="+", help="names for the models in the table (default: as given)")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--stem", default="quality")
    args = p.parse_args()
    torch.set_num_threads(1)
    labels = args.labels or args.models
    rows = []
    for label, name in zip(labels, args.models):
        clips, rate, how = model_clips(name, args.clips, args.seconds)
        rows.append(summarise(label, how, clips, rate))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_clip"}), flush=True)
    # the chorales at the rate the models play (the last one's: the zoo's all share it)
    held_out = held_out_clips(args.data, args.clips, args.seconds, rate)
    rows.insert(0, summarise("held-out chorales", "8-bit mu-law", held_out, rate))
    results = {"clips": args.clips, "seconds": args.seconds, "models": dict(zip(labels, args.models)),
               "machine": machine_info("cpu"), "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"{args.stem}.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()

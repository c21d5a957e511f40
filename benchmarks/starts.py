"""How a stream's start history changes what the model plays first (writes
benchmarks/results/starts-<model>.{json,md}).

    python benchmarks/starts.py                      # shipped default, 16 seeds x 3 s
    python benchmarks/starts.py --top-p 0.93 0.94 --seeds 16 --seconds 3

For each top-p and each start (``zeros``: all-zero input vectors before the first sample;
``silence``: the silence class), generates one clip per seed and counts the clips whose
first second is silent (RMS under 0.01, -40 dBFS), the median time to the first 50 ms frame
above that level, and the clips that pass the tonality check.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from streamgen.audio.analysis import FRAME_S, SILENT_RMS, first_sound, harmonicity, silent_first_second
from streamgen.bench.timing import machine_info
from streamgen.generation import AudioGenerator
from streamgen.sampling import STARTS
from streamgen.zoo import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default")
    p.add_argument("--top-p", type=float, nargs="+", default=[0.93, 0.94])
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    torch.set_num_threads(1)
    model, info = load_model(args.model)
    rate = info.sample_rate
    rows = []
    for top_p in args.top_p:
        sampling = info.sampling_with({"top_p": top_p})
        for start in STARTS:
            onsets, silent, tonal = [], 0, 0
            for seed in range(args.seeds):
                gen = AudioGenerator(model, sampling=sampling, seed=seed, start=start)
                audio = gen(int(args.seconds * rate))[0]
                onsets.append(first_sound(audio, rate))
                silent += silent_first_second(audio, rate)
                tonal += harmonicity(audio, rate).is_tonal()
            rows.append({"top_p": top_p, "start": start, "clips": args.seeds,
                         "silent_first_second": silent, "median_first_sound_s": float(np.median(onsets)),
                         "tonal": tonal, "first_sound_s": onsets})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "first_sound_s"}), flush=True)
    stem = f"starts-{args.model}"
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"model": args.model, "seconds": args.seconds, "machine": machine_info("cpu"),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [f"# Start history: `{args.model}`, {args.seeds} seeds x {args.seconds:g} s",
             "", f"Machine: {results['machine']['processor']}; `python benchmarks/starts.py`. "
             f"Silent: first-second RMS under {SILENT_RMS}; first sound: first {FRAME_S * 1000:.0f} ms "
             f"frame above it; tonal: `harmonicity(...).is_tonal()`. Sampling: the model's own, "
             f"`{info.sampling}`, with the top-p of each row.", "",
             "| top-p | start | silent first second | median first sound (s) | tonal |",
             "|---:|---|---:|---:|---:|"]
    lines += [f"| {r['top_p']} | {r['start']} | {r['silent_first_second']} of {r['clips']} "
              f"| {r['median_first_sound_s']:.2f} | {r['tonal']} of {r['clips']} |" for r in rows]
    (args.out / f"{stem}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

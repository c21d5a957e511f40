"""What a listener hears from one model under each sampling setting (writes
benchmarks/results/sweep-<model>.{json,md}).

    python benchmarks/sampling_sweep.py --model default                    # the card's settings
    python benchmarks/sampling_sweep.py --model default --settings 0.85:0.94 1:0.9 --clips 16

Each setting (temperature:top-p) generates one batch of ``--clips`` streams seeded
``--first-seed`` with the model's start, and each clip gets the quality benchmark's checks
(``streamgen.audio.analysis.clip_quality``: tonality, a silent first second, onsets, distinct
pitches). Stream b plays what ``streamgen generate --model M --seed FIRST+b`` plays alone. The
default seeds (16 on) leave out the quality benchmark's clips (seeds 0-15), so a setting
chosen here is then checked on clips it was not chosen on.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from quality import spread_cells, summarise
from streamgen.bench.timing import machine_info
from streamgen.generation import AudioGenerator
from streamgen.zoo import load_model

#: temperature:top-p, the default card's sweep
SETTINGS = ["0.85:0.94", "0.9:0.94", "0.8:0.94", "0.85:0.97", "1:0.94", "1:0.92", "1:0.9",
            "1:0.85", "1:0.8"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="default", help="zoo name or folder")
    p.add_argument("--settings", nargs="+", default=SETTINGS, help="temperature:top-p each")
    p.add_argument("--clips", type=int, default=48)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--first-seed", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="processes for the clips' checks")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()
    model, info = load_model(args.model)
    recommended = (info.sampling.temperature, info.sampling.top_p)
    rows = []
    with ProcessPoolExecutor(args.workers) as pool:
        for setting in args.settings:
            temperature, top_p = (float(v) for v in setting.split(":"))
            sampling = replace(info.sampling, temperature=temperature, top_p=top_p)
            t = time.perf_counter()
            gen = AudioGenerator(model, batch=args.clips, sampling=sampling,
                                 seed=args.first_seed, start=info.start)
            clips = list(gen(int(args.seconds * info.sample_rate)))
            # the checks in worker processes, clip by clip (pYIN dominates)
            row = summarise(sampling.describe(), f"{sampling}, start {info.start}",
                            clips, info.sample_rate, map=pool.map)
            row.update(temperature=temperature, top_p=top_p,
                       recommended=(temperature, top_p) == recommended,
                       wall_s=time.perf_counter() - t)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "per_clip"}), flush=True)
    results = {"model": args.model, "clips": args.clips, "seconds": args.seconds,
               "seeds": [args.first_seed, args.first_seed + args.clips - 1],
               "start": info.start, "machine": machine_info("cpu"),
               "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows}
    name = Path(args.model).name
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"sweep-{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.out / f"sweep-{name}.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lo, hi = results["seeds"]
    lines = [f"# Sampling sweep of `{results['model']}`: {results['clips']} clips of "
             f"{results['seconds']:g} s per setting", "",
             f"Machine: {results['machine']['processor']}; `python benchmarks/sampling_sweep.py "
             f"--model {results['model']}`. Seeds {lo}-{hi} (one batch per setting, stream b "
             f"seeded {lo} + b), start `{results['start']}`; the checks of "
             "`benchmarks/quality.py`. Ranges are min-max.", "",
             "| temperature | top-p | tonal | silent first second | onsets/s: median (range) "
             "| distinct pitches: median (range) |", "|---:|---:|---:|---:|---:|---:|"]
    for r in results["rows"]:
        mark = " (recommended)" if r["recommended"] else ""
        lines.append(f"| {r['temperature']:g}{mark} | {r['top_p']:g} | {r['tonal']} of "
                     f"{r['clips']} | {r['silent_first_second']} of {r['clips']} | "
                     f"{spread_cells(r)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    torch.set_num_threads(1)
    np.seterr(all="ignore")
    main()

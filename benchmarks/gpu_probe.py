"""A timing probe of the Triton executor's variants, one row per (model, batch, sampling,
warps, weight storage): sizes the optimisation work in one short device call (the committed
figures come from benchmarks/gpu.py).

    python benchmarks/gpu_probe.py [--out DIR] [--rows a,b,...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from streamgen.bench.suite import PAPER_SEQUNET, generation_rate
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.gpu.triton_executor import TritonExecutor
from streamgen.nn import build_network
from streamgen.zoo import load_model

# name: (model, batch, sampling, steps, warps (None: the executor's choice), weight dtype);
# "graphs-*" rows time the graphs executor instead (engine dtype bf16, warps unused)
ROWS = {
    "default-b1-w8": ("default", 1, "top_p", 8192, 8, torch.float32),
    "default-b1-w16": ("default", 1, "top_p", 8192, 16, torch.float32),
    "default-b1-w8-greedy": ("default", 1, "greedy", 8192, 8, torch.float32),
    "default-b1-w4": ("default", 1, "top_p", 8192, 4, torch.float32),
    "default-b8": ("default", 8, "top_p", 4096, None, torch.float32),
    "default-b64": ("default", 64, "top_p", 4096, None, torch.float32),
    "default-b132": ("default", 132, "top_p", 4096, None, torch.float32),
    "paper-b1-w8": ("paper", 1, "top_p", 1024, 8, torch.float32),
    "paper-b1-w16": ("paper", 1, "top_p", 1024, 16, torch.float32),
    "paper-b1-w8-bf16": ("paper", 1, "top_p", 1024, 8, torch.bfloat16),
    "graphs-default-b4096": ("default", 4096, "top_p", 256, None, torch.bfloat16),
    "graphs-default-b16384": ("default", 16384, "top_p", 128, None, torch.bfloat16),
    "graphs-paper-b4096": ("paper", 4096, "top_p", 128, None, torch.bfloat16),
    # the default's shape widened: candidates for a larger GPU model (issue 13)
    "wide64-b1": ("wide64", 1, "top_p", 4096, None, torch.float32),
    "wide128-b1": ("wide128", 1, "top_p", 2048, None, torch.float32),
}


def logit_error(model: torch.nn.Module, weight_dtype: torch.dtype) -> float:
    """Max |logit difference| of the Triton executor (weights stored as ``weight_dtype``)
    against the torch backend, teacher-forced over 600 random steps."""
    x = torch.randint(0, model.num_classes, (1, 600), device="cuda")
    outs = []
    for backend in ("torch", "triton"):
        engine = StreamingEngine(model, 1, backend=backend, capacity="period")
        out = torch.empty(1, 600, model.num_classes, device="cuda")
        engine.feed(x, out)
        outs.append(out)
    return (outs[0] - outs[1]).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-check", action="store_true", help="skip the logit error check")
    args = ap.parse_args()
    default, info = load_model("default")
    shape = {"levels": 10, "depth": 2, "kernel_size": 5}
    models = {"default": default.eval().cuda(),
              "paper": build_network(*PAPER_SEQUNET).eval().cuda(),
              "wide64": build_network("sequnet", {"channels": 64, **shape}).eval().cuda(),
              "wide128": build_network("sequnet", {"channels": 128, **shape}).eval().cuda()}
    samplings = {"greedy": SamplingConfig(greedy=True), "top_p": info.sampling}
    results = []
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    for name in args.rows.split(","):
        model, batch, sampling, steps, warps, wdtype = ROWS[name]
        TritonExecutor.num_warps, TritonExecutor.weight_dtype = warps, wdtype
        t = time.perf_counter()
        try:
            if name.startswith("graphs"):
                row = generation_rate(models[model], batch=batch, device="cuda",
                                      backend="graphs", n=steps, repeats=args.repeats,
                                      sampling=samplings[sampling], capacity="period",
                                      dtype=torch.bfloat16, warmup_steps=models[model].period)
            else:
                row = generation_rate(models[model], batch=batch, device="cuda",
                                      backend="triton", n=steps, repeats=args.repeats,
                                      sampling=samplings[sampling], capacity="period")
            if batch == 1 and model == "default" and not args.no_check:
                row["max_logit_error_vs_torch"] = logit_error(models[model], wdtype)
        except Exception as e:  # noqa: BLE001 - a probe records every failure
            row = {"error": f"{type(e).__name__}: {e}"[:400]}
        row.update(name=name, wall_s=time.perf_counter() - t)
        results.append(row)
        rate = f"{row['samples_per_s']:12,.0f}/s" if "samples_per_s" in row else row["error"]
        err = row.get("max_logit_error_vs_torch")
        print(f"{name:22s} {rate}  (wall {row['wall_s']:.1f} s)"
              + (f" logit err {err:.2e}" if err is not None else ""), flush=True)
    TritonExecutor.num_warps, TritonExecutor.weight_dtype = None, torch.float32
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "probe.json").write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()

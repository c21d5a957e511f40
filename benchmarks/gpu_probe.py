"""A timing probe of the GPU executors' variants, one row per (model, batch, sampling, backend,
kernel settings): sizes the optimisation work in one short device call (the committed figures
come from benchmarks/gpu.py).

    python benchmarks/gpu_probe.py [--out DIR] [--name STEM] [--rows a,b,...]

Each row is printed as it ends and the rows so far written to DIR/STEM.json.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from streamgen.bench.suite import PAPER_SEQUNET, PAPER_WAVENET, generation_rate
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.gpu.cuda_executor import CudaExecutor
from streamgen.engine.gpu.graphs import GraphExecutor
from streamgen.engine.gpu.grid_executor import GridExecutor
from streamgen.engine.program import graph_period
from streamgen.engine.sampling import Sampler
from streamgen.engine.gpu.triton_executor import TritonExecutor
from streamgen.nn import build_network
from streamgen.zoo import load_model


@dataclass(frozen=True)
class Row:
    model: str
    batch: int
    sampling: str
    steps: int
    backend: str = "triton"
    warps: int | None = None  # triton: warps per program (None: the executor's choice)
    block_o: int | None = None  # triton: a gated layer's outputs per tile (None: the executor's)
    weights: torch.dtype = torch.float32  # triton: weight storage; graphs: the engine's dtype
    threads: int | None = None  # numba-cuda(-grid): threads per block (None: the executor's)
    unroll: int | None = None  # numba-cuda: window elements per lane in flight
    mapping: str = "lanes"  # numba-cuda: how a gated layer's work is split
    groups: int | None = None  # numba-cuda-grid: blocks per stream (None: the executor's)
    barrier: str = "counter"  # numba-cuda-grid: grid_kernels.BARRIERS
    prefetch: bool = True  # numba-cuda-grid: next layer's weights while it waits
    whole: bool = False  # numba-cuda-grid: every block computes the embedding and head whole
    fused: bool = False  # graphs: each gated layer's product and gating as one Triton kernel
    fused_sampler: bool = True  # torch, graphs: sample with one Triton kernel (else torch's ops)


BF16 = torch.bfloat16
GRID = "numba-cuda-grid"
ROWS = {
    # the grid kernel (each stream's step over many blocks): its barriers, loads, shares
    "grid-paper-b1": Row("paper", 1, "top_p", 4096, GRID),
    "grid-paper-b1-coop": Row("paper", 1, "top_p", 4096, GRID, barrier="cooperative"),
    "grid-paper-b1-bcast": Row("paper", 1, "top_p", 4096, GRID, barrier="broadcast"),
    "grid-paper-b1-noprefetch": Row("paper", 1, "top_p", 4096, GRID, prefetch=False),
    "grid-paper-b1-t512": Row("paper", 1, "top_p", 4096, GRID, threads=512),
    "grid-paper-b1-t128": Row("paper", 1, "top_p", 4096, GRID, threads=128),
    "grid-paper-b1-g180": Row("paper", 1, "top_p", 4096, GRID, groups=180),
    "grid-paper-b1-g45": Row("paper", 1, "top_p", 4096, GRID, groups=45),
    "grid-paper-b1-greedy": Row("paper", 1, "greedy", 4096, GRID),
    "grid-paperwavenet-b1": Row("paperwavenet", 1, "top_p", 2048, GRID),
    "grid-paper-b4": Row("paper", 4, "top_p", 4096, GRID),
    "grid-default-b1": Row("default", 1, "top_p", 16384, GRID),
    "grid-default-b1-coop": Row("default", 1, "top_p", 16384, GRID, barrier="cooperative"),
    "grid-default-b1-bcast": Row("default", 1, "top_p", 16384, GRID, barrier="broadcast"),
    "grid-wide128-b1": Row("wide128", 1, "top_p", 8192, GRID),
    # a stream's blocks as one thread-block cluster at its hardware barrier (Hopper)
    "grid-default-b1-cluster": Row("default", 1, "top_p", 16384, GRID, barrier="cluster"),
    "grid-default-b1-cluster-t128": Row("default", 1, "top_p", 16384, GRID, barrier="cluster",
                                        threads=128),
    "grid-default-b1-cluster-g4": Row("default", 1, "top_p", 16384, GRID, barrier="cluster",
                                      groups=4),
    "grid-default-b1-cluster-greedy": Row("default", 1, "greedy", 16384, GRID,
                                          barrier="cluster"),
    "grid-default-b1-cluster-whole": Row("default", 1, "top_p", 16384, GRID, barrier="cluster",
                                         whole=True),
    "grid-default-b1-whole": Row("default", 1, "top_p", 16384, GRID, whole=True),
    "grid-paper-b1-whole": Row("paper", 1, "top_p", 4096, GRID, whole=True),
    "grid-default-b8-cluster": Row("default", 8, "top_p", 8192, GRID, barrier="cluster"),
    "grid-paper-b1-cluster": Row("paper", 1, "top_p", 2048, GRID, barrier="cluster"),
    "grid-wide64-b1-cluster": Row("wide64", 1, "top_p", 8192, GRID, barrier="cluster"),
    "default-b1-w8": Row("default", 1, "top_p", 8192, warps=8),
    "default-b1-w16": Row("default", 1, "top_p", 8192, warps=16),
    "default-b1-w8-greedy": Row("default", 1, "greedy", 8192, warps=8),
    # 16 outputs a tile against 32 (neither spills with Triton 3.5 to 3.9)
    "default-b1-o16": Row("default", 1, "top_p", 8192, warps=16, block_o=16),
    "default-b1-w16-greedy": Row("default", 1, "greedy", 8192, warps=16),
    "default-b1-o16-greedy": Row("default", 1, "greedy", 8192, warps=16, block_o=16),
    "paper-b1-o16": Row("paper", 1, "top_p", 1024, warps=16, block_o=16),
    "default-b8": Row("default", 8, "top_p", 4096),
    "default-b64": Row("default", 64, "top_p", 4096),
    "paper-b1-w16": Row("paper", 1, "top_p", 1024, warps=16),
    "paper-b1-w8-bf16": Row("paper", 1, "top_p", 1024, warps=8, weights=BF16),
    # the numba-cuda kernel: threads per block and unroll
    "nbc-default-b1": Row("default", 1, "top_p", 16384, "numba-cuda"),
    "nbc-default-b1-t256": Row("default", 1, "top_p", 16384, "numba-cuda", threads=256),
    "nbc-default-b1-t256-u8": Row("default", 1, "top_p", 16384, "numba-cuda", threads=256,
                                  unroll=8),
    "nbc-default-b1-t256-u10": Row("default", 1, "top_p", 16384, "numba-cuda", threads=256,
                                   unroll=10),
    "nbc-default-b1-t128-u10": Row("default", 1, "top_p", 16384, "numba-cuda", threads=128,
                                   unroll=10),
    "nbc-default-b1-t256-u10-greedy": Row("default", 1, "greedy", 16384, "numba-cuda",
                                          threads=256, unroll=10),
    "nbc-default-b1-u2": Row("default", 1, "top_p", 16384, "numba-cuda", unroll=2),
    "nbc-default-b1-u8": Row("default", 1, "top_p", 16384, "numba-cuda", unroll=8),
    "nbc-default-b1-u10": Row("default", 1, "top_p", 16384, "numba-cuda", unroll=10),
    "nbc-default-b1-greedy": Row("default", 1, "greedy", 16384, "numba-cuda"),
    "nbc-default-b8": Row("default", 8, "top_p", 8192, "numba-cuda"),
    "nbc-default-b64": Row("default", 64, "top_p", 4096, "numba-cuda"),
    "nbc-default-b132": Row("default", 132, "top_p", 4096, "numba-cuda"),
    "nbc-default-b1-rows": Row("default", 1, "top_p", 16384, "numba-cuda", mapping="rows"),
    "nbc-default-b1-rows-t512": Row("default", 1, "top_p", 16384, "numba-cuda", threads=512,
                                    mapping="rows"),
    "nbc-default-b1-rows-u4": Row("default", 1, "top_p", 16384, "numba-cuda", unroll=4,
                                  mapping="rows"),
    "nbc-default-b1-rows-greedy": Row("default", 1, "greedy", 16384, "numba-cuda",
                                      mapping="rows"),
    "nbc-default-b64-rows": Row("default", 64, "top_p", 4096, "numba-cuda", mapping="rows"),
    "nbc-paper-b1-rows": Row("paper", 1, "top_p", 2048, "numba-cuda", mapping="rows"),
    "nbc-wide64-b1-rows": Row("wide64", 1, "top_p", 8192, "numba-cuda", mapping="rows"),
    "nbc-paper-b1": Row("paper", 1, "top_p", 2048, "numba-cuda"),
    # the paper's comparison at batch 1, each executor running both networks
    "nbc-paperwavenet-b1": Row("paperwavenet", 1, "top_p", 1024, "numba-cuda"),
    "graphs-paper-b1": Row("paper", 1, "top_p", 1024, "graphs", weights=torch.float32),
    "graphs-paperwavenet-b1": Row("paperwavenet", 1, "top_p", 1024, "graphs",
                                  weights=torch.float32),
    "nbc-paper-b1-t256": Row("paper", 1, "top_p", 2048, "numba-cuda", threads=256),
    # the default's shape widened: candidates for a larger GPU model (issue 13)
    "nbc-wide64-b1": Row("wide64", 1, "top_p", 8192, "numba-cuda"),
    "nbc-wide128-b1": Row("wide128", 1, "top_p", 4096, "numba-cuda"),
    "wide64-b1": Row("wide64", 1, "top_p", 4096),
    "graphs-default-b4096": Row("default", 4096, "top_p", 256, "graphs", weights=BF16),
    "graphs-default-b16384": Row("default", 16384, "top_p", 128, "graphs", weights=BF16),
    "graphs-default-b65536": Row("default", 65536, "top_p", 128, "graphs", weights=BF16),
    "graphs-default-b4096-fused": Row("default", 4096, "top_p", 256, "graphs", weights=BF16,
                                      fused=True),
    "graphs-default-b65536-fused": Row("default", 65536, "top_p", 128, "graphs", weights=BF16,
                                       fused=True),
    "graphs-paper-b4096-fused": Row("paper", 4096, "top_p", 128, "graphs", weights=BF16,
                                    fused=True),
    # the fused sampler against torch's ops (a sort over every stream's classes each step)
    "graphs-default-b4096-torchsampler": Row("default", 4096, "top_p", 256, "graphs",
                                             weights=BF16, fused_sampler=False),
    "graphs-default-b65536-torchsampler": Row("default", 65536, "top_p", 128, "graphs",
                                              weights=BF16, fused_sampler=False),
    "torch-default-b1": Row("default", 1, "top_p", 512, "torch"),
    "torch-default-b1-torchsampler": Row("default", 1, "top_p", 512, "torch",
                                         fused_sampler=False),
    "graphs-paper-b16384": Row("paper", 16384, "top_p", 128, "graphs", weights=BF16),
    "graphs-paper-b65536": Row("paper", 65536, "top_p", 128, "graphs", weights=BF16),
    "graphs-paper-b4096": Row("paper", 4096, "top_p", 128, "graphs", weights=BF16),
}


def configure(row: Row) -> None:
    """Set the executors' class-level knobs for ``row`` (reset by ``configure(Row(...))``)."""
    TritonExecutor.num_warps, TritonExecutor.weight_dtype = row.warps, row.weights
    TritonExecutor.block_o = row.block_o
    CudaExecutor.threads, CudaExecutor.unroll = row.threads, row.unroll
    CudaExecutor.mapping = row.mapping
    GridExecutor.threads, GridExecutor.groups = row.threads, row.groups
    GridExecutor.barrier, GridExecutor.prefetch = row.barrier, row.prefetch
    GridExecutor.whole_ends = row.whole
    GraphExecutor.fused_gate = row.fused
    Sampler.fuse = row.fused_sampler


def logit_error(model: torch.nn.Module, backend: str) -> float:
    """Max |logit difference| of ``backend`` against the torch backend, teacher-forced over
    600 random steps."""
    x = torch.randint(0, model.num_classes, (1, 600), device="cuda")
    outs = []
    for name in ("torch", backend):
        engine = StreamingEngine(model, 1, backend=name, capacity="period")
        out = torch.empty(1, 600, model.num_classes, device="cuda")
        engine.feed(x, out)
        outs.append(out)
    return (outs[0] - outs[1]).abs().max().item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--out", type=Path, default=Path("."))
    ap.add_argument("--name", default="probe", help="the results file's stem")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-check", action="store_true", help="skip the logit error check")
    args = ap.parse_args()
    names = args.rows.split(",")
    unknown = [name for name in names if name not in ROWS]
    if unknown:  # before any model is built: a typo costs no device time
        ap.error(f"unknown rows {', '.join(unknown)}; the rows are the keys of ROWS in {__file__}")
    if not torch.cuda.is_available():
        ap.error("no CUDA GPU visible to torch; the probe times the GPU executors")
    default, info = load_model("default")
    shape = {"levels": 10, "depth": 2, "kernel_size": 5}
    models = {"default": default.eval().cuda(),
              "paper": build_network(*PAPER_SEQUNET).eval().cuda(),
              "paperwavenet": build_network(*PAPER_WAVENET).eval().cuda(),
              "wide64": build_network("sequnet", {"channels": 64, **shape}).eval().cuda(),
              "wide128": build_network("sequnet", {"channels": 128, **shape}).eval().cuda()}
    samplings = {"greedy": SamplingConfig(greedy=True), "top_p": info.sampling}
    results = []
    args.out.mkdir(parents=True, exist_ok=True)
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    for name in names:
        spec = ROWS[name]
        configure(spec)
        model = models[spec.model]
        t = time.perf_counter()
        try:
            graphs = spec.backend == "graphs"
            row = generation_rate(model, batch=spec.batch, device="cuda", backend=spec.backend,
                                  n=spec.steps, repeats=args.repeats,
                                  sampling=samplings[spec.sampling], capacity="period",
                                  dtype=spec.weights if graphs else torch.float32,
                                  warmup_steps=graph_period(model.period) if graphs else 0)
            if spec.batch == 1 and (spec.model == "default" or spec.backend == GRID) \
                    and not args.no_check:
                row["max_logit_error_vs_torch"] = logit_error(model, spec.backend)
        except Exception as e:  # noqa: BLE001 - a probe records every failure
            row = {"error": f"{type(e).__name__}: {e}"[:400]}
        gc.collect()  # an engine's objects refer to each other: free its rings before the next
        torch.cuda.empty_cache()
        row.update(name=name, wall_s=time.perf_counter() - t)
        results.append(row)
        rate = f"{row['samples_per_s']:12,.0f}/s" if "samples_per_s" in row else row["error"]
        err = row.get("max_logit_error_vs_torch")
        print(f"{name:22s} {rate}  (wall {row['wall_s']:.1f} s)"
              + (f" logit err {err:.2e}" if err is not None else ""), flush=True)
        # after every row: a run cut short by its time limit keeps what it measured
        (args.out / f"{args.name}.json").write_text(json.dumps(results, indent=1, default=str))
    configure(Row("default", 1, "top_p", 0))


if __name__ == "__main__":
    main()

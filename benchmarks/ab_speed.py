"""Generation speed of the shipped default, for A/B runs of two checkouts side by side.

    for i in 1 2 3; do
      PYTHONPATH=/path/to/old/checkout python benchmarks/ab_speed.py old
      python benchmarks/ab_speed.py new
    done

Prints ``LABEL SAMPLING SAMPLES_PER_S`` for plain sampling and the model's recommended one on
the numba backend: one thread (``--threads``), a 4,096-sample warm-up, then the median of 7
blocks of 16,384 samples (``--batch`` streams, all counted: 16,384 / batch steps a block).
``--torch-threads`` sets torch's intra-op threads (a library user's default is every core).
``--cpu-time`` divides by the process's CPU time instead of wall time (steadier on a shared
machine; not with more than one thread, whose CPU time adds up).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.zoo import load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("label")
    p.add_argument("--model", default="default")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="the numba streams' threads")
    p.add_argument("--torch-threads", type=int, default=1)
    p.add_argument("--cpu-time", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.torch_threads)
    clock = time.process_time if args.cpu_time else time.perf_counter
    model, info = load_model(args.model)
    for sampling in (SamplingConfig(), info.sampling):
        engine = StreamingEngine(model, args.batch, backend="numba", threads=args.threads)
        sampler = engine.sampler(sampling, seed=0)
        steps = max(1, 16384 // args.batch)
        engine.generate(max(1, 4096 // args.batch), sampler)
        rates = []
        for _ in range(7):
            start = clock()
            engine.generate(steps, sampler)
            rates.append(steps * args.batch / (clock() - start))
        print(args.label, sampling.describe(), round(statistics.median(rates)))


if __name__ == "__main__":
    main()

"""``python -m streamgen.bench.train_step SPEC``: time one training step, report peak memory.

Run in a fresh process so that the peak resident memory belongs to this step alone.
"""

from __future__ import annotations

import json
import resource
import sys

import torch
from torch.nn import functional as F

from streamgen.bench.timing import time_call
from streamgen.nn import build_network
from streamgen.nn.layers import one_hot_channels


def main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    device = torch.device(spec["device"])
    model = build_network(spec["kind"], spec["config"]).to(device)
    out_len = model.training_output_length(spec["out_len"])
    n_in = model.input_length(out_len)
    x = torch.randint(0, model.num_classes, (1, n_in + 1), device=device)
    onehot = one_hot_channels(x[:, :-1], model.num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(onehot)[..., -out_len:]
        loss = F.cross_entropy(logits, x[:, -out_len:])
        loss.backward()
        opt.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timing = time_call(step, device=device, repeats=spec["repeats"])
    result = {"seconds_median": timing.median, "seconds_runs": timing.runs, "threads": torch.get_num_threads(),
              "out_len": out_len,
              "input_len": n_in, "output_samples_per_s": out_len / timing.median}
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        result["rss_before_mb"] = rss_before / 1024
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])

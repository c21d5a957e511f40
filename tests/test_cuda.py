"""The engine on a CUDA GPU (skipped, with the reason, on machines without one)."""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_
from engine_reference import reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.nn import SeqUNet, SeqUNetConfig, WaveNet, WaveNetConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
CLASSES = 32


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["sequnet", "wavenet"])
def test_cuda_engine_equals_offline(kind: str, batch: int, rng: torch.Generator) -> None:
    if kind == "sequnet":
        model = SeqUNet(SeqUNetConfig(8, 4, 2, 5, classes=CLASSES))
    else:
        model = WaveNet(WaveNetConfig(2, 4, 2, 6, 5, 12, classes=CLASSES))
    randomize_(model, rng)
    x = torch.randint(0, CLASSES, (batch, 70), generator=rng)
    engine = StreamingEngine(model.cuda().eval(), batch)
    assert engine.backend == "torch" and engine.device.type == "cuda"
    out = torch.empty(batch, 70, CLASSES, device="cuda")
    engine.feed(x.cuda(), out)
    engine.reset([0])
    want = reference_logits(model.cpu(), x)
    assert (out.cpu().double() - want).abs().max().item() < 1e-4


def test_cuda_half_precision_is_close(rng: torch.Generator) -> None:
    model = SeqUNet(SeqUNetConfig(8, 4, 2, 5, classes=CLASSES))
    randomize_(model, rng)
    x = torch.randint(0, CLASSES, (2, 60), generator=rng)
    engine = StreamingEngine(model.cuda().eval(), 2, dtype=torch.float16)
    out = torch.empty(2, 60, CLASSES, device="cuda", dtype=torch.float16)
    engine.feed(x.cuda(), out)
    assert (out.float().cpu().double() - reference_logits(model.cpu(), x)).abs().max().item() < 5e-2


def test_cuda_generation_is_reproducible(rng: torch.Generator) -> None:
    model = SeqUNet(SeqUNetConfig(8, 3, 1, 3, classes=CLASSES)).cuda().eval()
    runs = []
    for _ in range(2):
        engine = StreamingEngine(model, 2)
        runs.append(engine.generate(200, engine.sampler(SamplingConfig(top_p=0.9), seed=3)).cpu())
    assert torch.equal(runs[0], runs[1])

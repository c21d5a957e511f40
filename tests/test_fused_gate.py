"""The fused gated-layer kernel (``streamgen.engine.gpu.fused_gate``) through Triton's
interpreter: against the float64 product and gating on strided views, over tile edges, and
inside the graphs executor against the offline pass. float32 only: the interpreter's
``tl.dot`` gets bfloat16 wrong (numpy has no bfloat16); tests/test_cuda.py checks bfloat16 on
a GPU."""

from __future__ import annotations

import pytest
import torch

from conftest import randomize_, triton_interpreter_refusal
from engine_reference import reference_logits
from streamgen.engine import StreamingEngine
from streamgen.nn import SeqUNet, SeqUNetConfig

pytestmark = pytest.mark.skipif(triton_interpreter_refusal() is not None,
                                reason=str(triton_interpreter_refusal()))


# (streams, window elements, channels): one tile; streams and channels over several tiles,
# windows not a multiple of the 32-element step; one channel; a width of 64 exactly
SHAPES = [(5, 40, 7), (70, 300, 33), (3, 9, 1), (17, 64, 64)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-n{}-C{}".format(*s))
def test_fused_gate_equals_the_float64_product_and_gating(shape: tuple,
                                                          rng: torch.Generator) -> None:
    from streamgen.engine.gpu.fused_gate import fused_gated

    batch, n, channels = shape
    ring = torch.randn(batch, 2 * n + 11, generator=rng)
    x = ring[:, 3 : 3 + n]  # a window inside a ring: rows strided
    w = torch.randn(n, 2 * channels, generator=rng) * 0.3
    b = torch.randn(2 * channels, generator=rng)
    identity = torch.randn(batch, channels + 5, generator=rng)[:, 2 : 2 + channels]
    slots = torch.zeros(batch, channels + 9)
    out = slots[:, 4 : 4 + channels]
    fused_gated(x, w, b, identity, out)
    pre = x.double() @ w.double() + b.double()
    want = identity.double() + torch.tanh(pre[:, :channels]) * torch.sigmoid(pre[:, channels:])
    assert (out.double() - want).abs().max().item() < 1e-5
    assert (slots[:, :4] == 0).all() and (slots[:, 4 + channels :] == 0).all()  # nothing else


@pytest.mark.parametrize("kernel", [3, 5])
def test_graphs_with_fused_gates_equal_offline(kernel: int, monkeypatch: pytest.MonkeyPatch,
                                               rng: torch.Generator) -> None:
    """Plain, down and up layers (even and odd taps) through the fused kernel, recorded
    segments replayed."""
    monkeypatch.setattr("streamgen.engine.gpu.graphs.GraphExecutor.fused_gate", True)
    model = SeqUNet(SeqUNetConfig(6, 3, 2, kernel, classes=16))
    randomize_(model, rng)
    model.eval()
    engine = StreamingEngine(model, 2, backend="graphs")
    n = 3 * engine.program.graph_period + 11
    x = torch.randint(0, 16, (2, n), generator=rng)
    out = torch.empty(2, n, 16)
    for i in range(0, n, 97):
        engine.feed(x[:, i : i + 97], out[:, i : i + 97])
    assert sum(r.replays for r in engine.executor.recorded.values()) > 0
    assert (out.double() - reference_logits(model, x)).abs().max().item() < 1e-4


def test_fused_gates_need_triton_where_it_runs(monkeypatch: pytest.MonkeyPatch,
                                               rng: torch.Generator) -> None:
    monkeypatch.setattr("streamgen.engine.gpu.graphs.GraphExecutor.fused_gate", True)
    monkeypatch.setattr("streamgen.engine.gpu.interpreting", lambda: False)
    with pytest.raises(ValueError, match="fused_gate runs Triton kernels: on a CUDA device"):
        StreamingEngine(SeqUNet(SeqUNetConfig(4, 2, 1, 3, classes=16)), 1, backend="graphs")

"""Step plans: their invariants over many networks, and the README's printed example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from conftest import randomize_
from streamgen.engine.clock import top_level
from streamgen.engine.plan import HEAD, Advance, Copy, Head, Input, Layer, Taps
from streamgen.engine.program import build_program, native_inputs
from streamgen.engine.ring import FrameRing
from streamgen.engine.steps import Dense, OneHotConv, Rectified, TapConv
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig
from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig

NETWORKS = [SeqUNet(SeqUNetConfig(c, levels, depth, k, classes=16))
            for c, levels, depth, k in [(4, 1, 1, 3), (6, 2, 2, 5), (5, 4, 3, 7), (3, 6, 1, 9)]]
NETWORKS += [WaveNet(WaveNetConfig(2, 3, 2, 6, 5, 7, classes=16)),
             TCN(TCNConfig(channels=16, levels=3, kernel_size=4, classes=16))]
NETWORKS += [PlainSeqUNet(PlainSeqUNetConfig(c, levels, k, 0.0, classes=12))
             for c, levels, k in [(5, 1, 3), (6, 3, 5), (12, 4, 3)]]


@pytest.mark.parametrize("model", NETWORKS, ids=lambda m: f"{m.kind}-{m.receptive_field}")
def test_every_frame_is_written_whole_then_advanced_once_per_tick(model) -> None:
    """Within a step: a ring's next frame gets every column written (exactly once) before it
    is advanced; it is advanced iff its level runs; a layer reads a ring whose level runs
    only after its advance (else its history); the head input is written whole."""
    program = build_program(model, 1, inputs=native_inputs(model))
    assert len(program.plan) == model.period
    for phase, plan in enumerate(program.plan):
        top = top_level(phase, getattr(model.config, "levels", 1)) if model.period > 1 else 0
        assert isinstance(plan[0], Input) and isinstance(plan[-1], Head)
        written: dict[str, list[int]] = {}
        advanced = {program.input_ring}
        for op in plan[1:-1]:
            if isinstance(op, Advance):
                cols = sorted(written.pop(op.ring, []))
                assert cols == list(range(program.rings[op.ring].channels)), (phase, op)
                assert op.ring not in advanced, f"{op.ring} advanced twice at phase {phase}"
                advanced.add(op.ring)
            else:
                dst, col = (op.dst, op.col) if isinstance(op, Layer) else (op.dst, op.dst_col)
                src = op.ring if isinstance(op, Layer) else op.src
                assert src in advanced or program.info[src].level > top, \
                    f"{op} reads {src} before its newest frame exists"
                written.setdefault(dst, []).extend(range(col, col + op.width))
        head = sorted(written.pop(HEAD, []))
        assert head == list(range(program.head_in.shape[1]))
        assert not written, f"frames written but never advanced at phase {phase}: {written}"
        for name, info in program.info.items():
            assert (name in advanced) == (info.level <= top), (phase, name, info.level, top)


def test_readme_prints_a_real_plan() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"print\(build_program\(SeqUNet\(SeqUNetConfig\(32, 2, 1, 5\)\), batch=1\)"
                      r"\.plan\[1\]\)\n(.*?)```", readme, re.S)
    assert block, "the README's plan example is missing"
    shown = "\n".join(line.strip() for line in block.group(1).strip().splitlines())
    assert shown == str(build_program(SeqUNet(SeqUNetConfig(32, 2, 1, 5)), 1).plan[1])
    per = build_program(SeqUNet(SeqUNetConfig(32, 2, 1, 5)), 1).macs_per_step()
    assert f"{per[0]:,} and {per[1]:,}" in readme.replace("\n  ", " ")


def test_ops_print_what_they_do() -> None:
    assert str(Layer("a", "b", 8, 8)) == "layer a -> b [8:16]"
    assert str(Copy("a", "b", 0, 4, 2)) == "copy a [0:2] -> b [4:6]"
    assert str(Advance("a")) == "advance a"


def test_top_level_is_the_trailing_ones_capped_at_the_coarsest_level(np_rng) -> None:
    """The level a step reaches: its clock's trailing one bits, at most the coarsest level
    (the programs ask only within a period, where the cap never binds; a direct caller may
    ask at any time)."""
    for levels in range(1, 7):
        for t in np_rng.integers(0, 1 << 20, size=200).tolist() + list(range(4 << levels)):
            ones = len(bin(t)) - len(bin(t).rstrip("1"))
            assert top_level(t, levels) == min(ones, levels - 1), (t, levels)
    assert top_level(0b0111, 3) == 2 and top_level(0b1111, 2) == 1


def _ring(window: int, channels: int, batch: int = 2) -> FrameRing:
    return FrameRing(batch, window, channels, dtype=torch.float64, device="cpu", capacity=window + 4)


def test_kernels_without_up_taps_refuse_even_and_odd_costs() -> None:
    conv = TapConv(torch.ones(3, 2, 2), None, _ring(2, 2))
    onehot = OneHotConv(torch.nn.Conv1d(5, 3, 2), _ring(2, 1), classes=5, dtype=torch.float64)
    for kernel in (conv, onehot):
        for taps in (Taps.EVEN, Taps.ODD):
            with pytest.raises(ValueError, match="stride-2 up layer"):
                kernel.macs(taps)
    assert conv.macs() == 2 * 2 * 3 and onehot.macs() == 2 * 3


def test_kernels_refuse_rings_that_do_not_match_their_convolution() -> None:
    weight = torch.ones(3, 2, 3)  # (out, in, k)
    with pytest.raises(ValueError, match="span"):
        TapConv(weight, None, _ring(3, 4))  # span right, channels wrong
    with pytest.raises(ValueError, match="span"):
        TapConv(weight, None, _ring(2, 2))  # channels right, span wrong
    onehot = torch.nn.Conv1d(5, 3, 2)
    with pytest.raises(ValueError, match="span"):
        OneHotConv(onehot, _ring(2, 3), classes=5, dtype=torch.float64)
    with pytest.raises(ValueError, match="span"):
        OneHotConv(onehot, _ring(3, 1), classes=5, dtype=torch.float64)


def test_rectified_applies_its_leaky_slope(rng: torch.Generator) -> None:
    conv = torch.nn.Conv1d(4, 6, 1).double()
    randomize_(conv, rng)
    x = torch.randn(3, 4, generator=rng, dtype=torch.float64)
    dense = Dense(conv, x)

    class Kernel:  # Dense over a fixed input, as a kernel with compute(out, taps)
        def compute(self, out: torch.Tensor, taps: Taps = Taps.ALL) -> None:
            dense.compute(x, out)

    expected = x @ conv.weight.detach()[:, :, 0].T + conv.bias.detach()
    assert (expected < 0).any()
    for slope in (0.0, 0.2):
        out = torch.empty(3, 6, dtype=torch.float64)
        Rectified(Kernel(), slope).compute(out)
        torch.testing.assert_close(out, torch.where(expected > 0, expected, slope * expected))


def test_a_model_or_input_kind_without_a_program_is_one_error() -> None:
    with pytest.raises(TypeError, match="no streaming program for Conv1d; known kinds: .*'sequnet'"):
        build_program(torch.nn.Conv1d(2, 2, 3), 1)
    sequnet = SeqUNet(SeqUNetConfig(4, 2, 1, 3))
    with pytest.raises(ValueError, match=r"a sequnet streams inputs of kind \('classes',\), not 'frames'"):
        build_program(sequnet, 1, inputs="frames")
    plain = PlainSeqUNet(PlainSeqUNetConfig(channels=4, levels=2, kernel_size=3))
    with pytest.raises(ValueError, match=r"streams inputs of kind \('frames',\), not 'classes'"):
        build_program(plain, 1)
    assert build_program(plain, 1, inputs="frames").inputs == "frames"

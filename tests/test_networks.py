"""The four networks: their definitions written out, reference parameter counts, causality,
receptive fields, shapes, config rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import random_onehot, randomize_
from network_spec import spec_outputs
from streamgen.nn import (
    TCN,
    PlainSeqUNet,
    PlainSeqUNetConfig,
    SeqUNet,
    SeqUNetConfig,
    TCNConfig,
    WaveNet,
    WaveNetConfig,
    build_network,
)
from streamgen.nn.layers import (GatedResidual, conv_output_length, crop_front, decimate_keep_last,
                                 one_hot_channels, sample_and_hold)

CLASSES = 16


def test_paper_sequnet_parameter_count() -> None:
    model = SeqUNet(SeqUNetConfig(channels=180, levels=11, depth=2, kernel_size=5))
    assert abs(model.num_parameters() - 26.87e6) / 26.87e6 < 1e-3
    # Hand count: input conv, 3 gated layers per encoder level, D bottleneck layers, an up
    # layer plus D layers of doubled input per decoder level, head.
    c, k, levels, depth = 180, 5, 11, 2
    gated = 2 * (c * c * k + c)
    gated_cond = 2 * (2 * c * c * k + c)
    expected = (
        (256 * c * k + c)
        + (levels - 1) * (depth + 1) * gated
        + depth * gated
        + (levels - 1) * (gated + depth * gated_cond)
        + (c * 256 + 256)
    )
    assert model.num_parameters() == expected


def test_paper_wavenet_parameter_count_and_receptive_field() -> None:
    model = WaveNet(WaveNetConfig(blocks=4, layers=13))
    assert abs(model.num_parameters() - 8.14e6) / 8.14e6 < 1e-3
    assert model.receptive_field == 32765


def test_parameters_registered_in_data_flow_order() -> None:
    model = SeqUNet(SeqUNetConfig(channels=4, levels=3, depth=1, kernel_size=3))
    names = [n for n, _ in model.named_parameters()]
    order = ["input_conv", "encoder.0", "encoder.1", "bottleneck", "decoder.0", "decoder.1", "head"]
    firsts = [next(i for i, n in enumerate(names) if n.startswith(p)) for p in order]
    assert firsts == sorted(firsts)
    assert "encoder.0.convs.0.filter.weight" in names and "decoder.1.up.gate.bias" in names


def sequnet(channels: int, levels: int, depth: int, k: int) -> SeqUNet:
    return SeqUNet(SeqUNetConfig(channels, levels, depth, k, classes=CLASSES))


def plain_sequnet(channels: int, levels: int, k: int) -> PlainSeqUNet:
    return PlainSeqUNet(PlainSeqUNetConfig(channels, levels, k, dropout=0.5, classes=CLASSES))


# Widths of 16+ keep the odds that every channel of a ReLU is off at one time step (which
# would hide a real dependency from the gradient) below 2**-16.
CAUSAL_CASES = [
    ("sequnet", lambda: sequnet(16, 3, 1, 3)),
    ("sequnet", lambda: sequnet(16, 4, 2, 5)),
    ("sequnet", lambda: sequnet(20, 2, 3, 3)),
    ("sequnet", lambda: sequnet(16, 1, 2, 5)),
    ("wavenet", lambda: WaveNet(WaveNetConfig(2, 3, 2, 8, 8, 20, classes=CLASSES))),
    ("wavenet", lambda: WaveNet(WaveNetConfig(1, 4, 3, 6, 6, 20, classes=CLASSES))),
    ("tcn", lambda: TCN(TCNConfig(channels=20, levels=3, kernel_size=2, classes=CLASSES))),
    ("tcn", lambda: TCN(TCNConfig(channels=20, levels=2, kernel_size=3, classes=CLASSES))),
    ("tcn", lambda: TCN(TCNConfig(channels=20, levels=4, kernel_size=5, classes=CLASSES))),
    ("plain_sequnet", lambda: plain_sequnet(16, 1, 3)),
    ("plain_sequnet", lambda: plain_sequnet(16, 2, 3)),
    ("plain_sequnet", lambda: plain_sequnet(16, 3, 7)),
    ("plain_sequnet", lambda: plain_sequnet(16, 4, 5)),
]


def dependency_matrix(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(T_out, T_in) boolean: output j has a non-zero derivative w.r.t. input step i."""
    x = x.clone().requires_grad_(True)
    y = model(x)
    rows = []
    for j in range(y.shape[-1]):
        (g,) = torch.autograd.grad(y[0, :, j].sum(), x, retain_graph=True)
        rows.append(g[0].abs().sum(0) != 0)
    return torch.stack(rows)


@pytest.mark.parametrize("kind,factory", CAUSAL_CASES)
def test_causality_and_receptive_field(kind: str, factory, rng: torch.Generator) -> None:
    model = factory().double().eval()
    randomize_(model, rng)
    period = model.period
    n_out_wanted = 3 * period + 2
    n_in = model.input_length(n_out_wanted)
    x = random_onehot(1, n_in, CLASSES, rng)
    deps = dependency_matrix(model, x)
    n_out = deps.shape[0]
    assert n_out == model.output_length(n_in) >= n_out_wanted
    spans = []
    for j in range(n_out):
        t = n_in - n_out + j  # absolute input index aligned with output j
        assert not deps[j, t + 1 :].any(), f"output {j} depends on the future"
        assert deps[j, t], f"output {j} does not depend on its own time step"
        earliest = int(deps[j].nonzero().min())
        spans.append(t - earliest + 1)
    assert max(spans) == model.receptive_field
    if model.period == 1:
        assert set(spans) == {model.receptive_field}


@pytest.mark.parametrize("levels,depth,k", [(1, 1, 3), (3, 2, 5), (5, 1, 3), (4, 3, 3)])
def test_sequnet_shapes_and_training_window(levels: int, depth: int, k: int, rng) -> None:
    model = sequnet(3, levels, depth, k).eval()
    for requested in [1, 5, model.period, 3 * model.period + 1]:
        out_len = model.training_output_length(requested)
        assert out_len % model.period == 0 and out_len >= requested
        n_in = model.input_length(out_len)
        y = model(random_onehot(2, n_in, CLASSES, rng).float())
        assert y.shape[:2] == (2, CLASSES)
        assert y.shape[-1] == model.output_length(n_in) >= out_len
        # one input fewer does not give the window
        assert model.output_length(n_in - 1) < out_len
    for n_in in range(model.input_length(1), model.input_length(1) + 2 * model.period + 3):
        assert model(random_onehot(1, n_in, CLASSES, rng).float()).shape[-1] == model.output_length(n_in)


@pytest.mark.parametrize("kind", ["wavenet", "tcn"])
def test_single_rate_shapes(kind: str, rng) -> None:
    cfg = {"wavenet": dict(blocks=2, layers=3, residual_channels=4, dilation_channels=4,
                           skip_channels=4, classes=CLASSES),
           "tcn": dict(channels=4, levels=3, classes=CLASSES)}[kind]
    model = build_network(kind, cfg).eval()
    for out_len in [1, 7, 20]:
        n_in = model.input_length(out_len)
        assert model(random_onehot(1, n_in, CLASSES, rng).float()).shape == (1, CLASSES, out_len)
        assert model.output_length(n_in) == out_len


def test_build_network_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown network kind"):
        build_network("transformer", {})
    with pytest.raises(ValueError, match="unknown SeqUNetConfig fields"):
        build_network("sequnet", {"width": 3})
    for config in (SeqUNetConfig, PlainSeqUNetConfig):
        with pytest.raises(ValueError, match="kernel_size must be odd and >= 3, got 4"):
            config(kernel_size=4)


@pytest.mark.parametrize("plain", [False, True], ids=["gated", "plain"])
@pytest.mark.parametrize("k", [3, 5, 7, 9])
@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_sequnet_newest_outputs_ignore_older_history(k: int, levels: int, plain: bool, rng) -> None:
    """Any input length gives the same newest outputs: the stride-2 convolutions stay phased
    like the decimated identity (both keep the newest frame) whatever history precedes."""
    from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig

    model = (PlainSeqUNet(PlainSeqUNetConfig(4, levels, k, 0.0, classes=CLASSES)) if plain
             else sequnet(4, levels, 2, k)).double().eval()
    randomize_(model, rng)
    n = model.input_length(3 * model.period)
    x = random_onehot(1, n + 8, CLASSES, rng)
    full = model(x)
    for length in range(max(n - 8, model.input_length(1)), n + 8):
        y = model(x[..., x.shape[-1] - length :])
        assert y.shape[-1] == model.output_length(length) >= 1
        newest = min(y.shape[-1], 3)
        assert (y[..., -newest:] - full[..., -newest:]).abs().max().item() < 1e-12


# (kind, config): widths equal to the class count, odd kernels 3 to 9, one to four levels,
# WaveNet kernels of 2 and 3, a TCN with and without a 1x1 on its first residual path
SPEC_CASES = [
    ("sequnet", dict(channels=16, levels=3, depth=1, kernel_size=3)),
    ("sequnet", dict(channels=5, levels=4, depth=2, kernel_size=5)),
    ("sequnet", dict(channels=3, levels=1, depth=2, kernel_size=7)),
    ("sequnet", dict(channels=4, levels=2, depth=3, kernel_size=9)),
    ("plain_sequnet", dict(channels=16, levels=3, kernel_size=3, dropout=0.5)),
    ("plain_sequnet", dict(channels=6, levels=4, kernel_size=5, dropout=0.5)),
    ("plain_sequnet", dict(channels=4, levels=1, kernel_size=7, dropout=0.5)),
    ("wavenet", dict(blocks=2, layers=3, kernel_size=2, residual_channels=5, dilation_channels=4,
                     skip_channels=6)),
    ("wavenet", dict(blocks=1, layers=4, kernel_size=3, residual_channels=16, dilation_channels=16,
                     skip_channels=16)),
    ("tcn", dict(channels=16, levels=3, kernel_size=2, dropout=0.5)),
    ("tcn", dict(channels=6, levels=2, kernel_size=3, dropout=0.5)),
]


def spec_input(kind: str, steps: int, rng: torch.Generator) -> torch.Tensor:
    """``(1, CLASSES, steps)``: one-hot classes, or piano-roll frames (any keys at once)."""
    if kind == "plain_sequnet":
        return (torch.rand(1, CLASSES, steps, generator=rng) < 0.3).double()
    return random_onehot(1, steps, CLASSES, rng)


@pytest.mark.parametrize("kind,cfg", SPEC_CASES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(SPEC_CASES)])
def test_forward_pass_is_the_networks_definition_written_out(kind: str, cfg: dict, rng) -> None:
    """The offline forward pass (which the engine is checked against) equals each network's
    definition written out in absolute time (tests/network_spec.py) in float64, output for
    output, at every time the definition gives an output for: no more, no fewer."""
    model = build_network(kind, {**cfg, "classes": CLASSES}).double().eval()
    randomize_(model, rng)
    length = model.period * (-(-model.input_length(model.period + 3) // model.period) + 1)
    x = spec_input(kind, length, rng)
    want, times = spec_outputs(model, x[0])
    with torch.no_grad():
        got = model(x)[0].numpy()
    assert times == list(range(length - len(times), length))  # every newest time, none skipped
    assert got.shape == want.shape and got.shape[1] >= model.period + 3
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind,cfg", SPEC_CASES[1::3], ids=[k for k, _ in SPEC_CASES[1::3]])
def test_forward_from_start_is_the_definition_after_zero_history(kind: str, cfg: dict, rng) -> None:
    """One output per step of a stream that starts at the first input: the definition over
    zero vectors before it, on the level grid of the stream's own clock, for any number of
    steps (not only whole periods)."""
    model = build_network(kind, {**cfg, "classes": CLASSES}).double().eval()
    randomize_(model, rng)
    assert model.period == (2 ** (cfg["levels"] - 1) if "sequnet" in kind else 1)
    steps = 3 * model.period + 5
    x = spec_input(kind, steps, rng)
    history = model.period * -(-model.receptive_field // model.period)  # whole periods of zeros
    want, times = spec_outputs(model, torch.cat([torch.zeros(1, CLASSES, history, dtype=torch.float64), x], -1)[0])
    with torch.no_grad():
        got = model.forward_from_start(x)[0].numpy()
    assert times[-steps:] == list(range(history, history + steps)) and got.shape == (CLASSES, steps)
    np.testing.assert_allclose(got, want[:, -steps:], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [3, 5, 7])
def test_gated_layer_lengths_match_its_convolutions(k: int, rng) -> None:
    """A layer's length rules are its convolutions' (an up layer from a single frame on), and
    ``input_length`` is the fewest inputs for ``m`` outputs."""
    for kind in ("plain", "down", "up"):
        layer = GatedResidual(3, k, kind).double()
        for n in range(1 if kind == "up" else k, k + 12):
            x = torch.randn(1, 3, n, generator=rng, dtype=torch.float64)
            assert layer(x).shape[-1] == layer.output_length(n), (kind, n)
        for m in range(1, 12):
            n = layer.input_length(m)
            assert layer.output_length(n) >= m > layer.output_length(n - 1), (kind, m)


def test_layer_helpers_refuse_and_encode(rng) -> None:
    """The layers' refusals, their identity paths' resampling and length rules on a few
    values by hand, and the one-hot input."""
    for k in (4, 1):
        with pytest.raises(ValueError, match=f"kernel_size must be odd and >= 3, got {k}"):
            GatedResidual(3, k)
    for kind in ("down", "up"):
        with pytest.raises(ValueError, match="only plain layers take a conditioning input"):
            GatedResidual(3, 3, kind, cond_channels=3)
    with pytest.raises(ValueError, match="cannot crop length 4 to 5: sequence too short"):
        crop_front(torch.zeros(2, 4), 5)
    for n, kept in ((6, [1, 3, 5]), (5, [0, 2, 4])):  # the newest step is always kept
        assert decimate_keep_last(torch.arange(n)).tolist() == kept
    assert sample_and_hold(torch.tensor([4, 7, 9])).tolist() == [4, 4, 7, 7, 9]
    assert [conv_output_length(kind, 5, 4) for kind in ("plain", "down", "up")] == [0, 0, 4]
    index = torch.randint(0, 7, (3, 11), generator=rng)
    for dtype in (torch.float32, torch.float64):
        onehot = one_hot_channels(index, 7, dtype)
        assert onehot.dtype == dtype
        assert torch.equal(onehot, torch.nn.functional.one_hot(index, 7).transpose(1, 2).to(dtype))


@pytest.mark.parametrize("network,smallest,refused,message", [
    (SeqUNet, dict(levels=1, depth=1, channels=1), [("levels", 0), ("depth", 0), ("channels", 0)],
     "must be >= 1"),
    (PlainSeqUNet, dict(levels=1, channels=1, dropout=0.0),
     [("levels", 0), ("channels", 0), ("dropout", 1.0), ("dropout", -0.1)],
     "need levels >= 1, channels >= 1, 0 <= dropout < 1"),
    (WaveNet, dict(blocks=1, layers=1, kernel_size=2), [("blocks", 0), ("layers", 0), ("kernel_size", 1)],
     "need blocks, layers >= 1 and kernel_size >= 2"),
    (TCN, dict(levels=1, kernel_size=2, dropout=0.0),
     [("levels", 0), ("kernel_size", 1), ("dropout", 1.0), ("dropout", -0.1)],
     "need levels >= 1, kernel_size >= 2, 0 <= dropout < 1"),
], ids=["sequnet", "plain_sequnet", "wavenet", "tcn"])
def test_configs_take_their_smallest_values_and_refuse_one_below(network, smallest: dict, refused: list,
                                                                 message: str, rng) -> None:
    """Each field's smallest value builds a network that runs (and gives no output from too
    few inputs); one step below, a dropout of 1 or below 0, is refused."""
    model = network(network.config_class(**smallest, classes=CLASSES)).eval()
    n = model.input_length(3)
    assert model(random_onehot(1, n, CLASSES, rng).float()).shape == (1, CLASSES, model.output_length(n))
    assert model.output_length(n) >= 3 and model.output_length(model.input_length(1) - 1) == model.output_length(1) == 0
    for field, value in refused:
        with pytest.raises(ValueError, match=message):
            network.config_class(**{**smallest, field: value})

"""Work per step: hand counts for every network kind; amortised, flat in the Seq-U-Net's depth
and linear in WaveNet's layers."""

from __future__ import annotations

import pytest

from streamgen.engine.cost import macs_per_step, mean_macs
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig
from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig


def test_paper_sequnet_cost_against_hand_counts() -> None:
    """The paper measured 6.1M MACs per sample on the reference step mode, which runs a dense
    conv over the one-hot input and the full transposed conv (k outputs over k inputs) on
    every coarse tick. This engine looks the input up and evaluates only the taps each fine
    output needs."""
    c, k, levels, depth, classes = 180, 5, 11, 2, 256
    plain, cond, down = depth * 2 * c * c * k, depth * 2 * c * 2 * c * k, 2 * c * c * k
    reference = 256 * c * k + c * classes + depth * 2 * c * c * k / 2 ** (levels - 1)
    ours = k * c + c * classes + depth * 2 * c * c * k / 2 ** (levels - 1)
    for i in range(levels - 1):
        reference += (plain + cond) / 2**i + (down + 2 * k * k * c * c) / 2 ** (i + 1)
        ours += (plain + cond) / 2**i + (down + 2 * c * c * (3 + 2)) / 2 ** (i + 1)
    assert abs(reference - 6.1e6) / 6.1e6 < 0.01
    assert mean_macs(SeqUNet(SeqUNetConfig(c, levels, depth, k))) == ours
    assert ours < 0.76 * reference


def test_paper_wavenet_cost_matches_reference_measurement() -> None:
    model = WaveNet(WaveNetConfig(4, 13))
    assert abs(mean_macs(model) - 8.1e6) / 8.1e6 < 0.05


@pytest.mark.parametrize("cfg", [(2, 3, 2, 6, 5, 12, 32), (1, 2, 3, 4, 7, 9, 16), (4, 13, 2, 128, 128, 512, 256)])
def test_wavenet_cost_against_hand_counts(cfg: tuple) -> None:
    """Every step: the start convolution as a column lookup (R), each of the N layers' dilated
    filter and gate (k R x 2D) and skip (D x S), a residual on all but the last (D x R), and
    the head (S x S, S x classes)."""
    blocks, layers, k, r, d, s, classes = cfg
    n = blocks * layers
    hand = r + n * (k * r * 2 * d + d * s) + (n - 1) * d * r + s * s + s * classes
    model = WaveNet(WaveNetConfig(blocks, layers, k, r, d, s, classes))
    assert macs_per_step(model) == [hand]


@pytest.mark.parametrize("cfg", [(6, 3, 3, 32), (32, 3, 2, 32), (64, 8, 3, 256), (5, 1, 4, 8)])
def test_tcn_cost_against_hand_counts(cfg: tuple) -> None:
    """Every step: the first block's conv1 as k column lookups and its residual as one (the
    projection's column, or the one-hot itself where the width is the class count), conv2 and
    both convolutions of the later blocks (k C x C each), the head (C x classes)."""
    c, levels, k, classes = cfg
    hand = k * c + c + k * c * c + (levels - 1) * 2 * k * c * c + c * classes
    assert macs_per_step(TCN(TCNConfig(c, levels, k, classes=classes))) == [hand]


@pytest.mark.parametrize("cfg", [(6, 3, 3, 8), (4, 1, 5, 7), (10, 4, 5, 10), (3, 5, 7, 12)])
def test_plain_sequnet_cost_against_hand_counts(cfg: tuple) -> None:
    """Each step of the period, by the levels whose clock ticks (level ``l`` when
    ``(t + 1) % 2**l == 0``): the encoder's conv and the decoder's conv over ``[up; skip]``,
    the transposed conv's (k+1)/2 even taps on a coarse tick and (k-1)/2 odd ones between,
    the down conv when the next level ticks, the bottleneck on the top level, the head every
    step. The first conv reads the frames (``classes`` channels) densely."""
    c, levels, k, keys = cfg
    widths = [keys] + [c] * (levels - 1)
    hand = []
    for t in range(2 ** (levels - 1)):
        ticks = [(t + 1) % 2**l == 0 for l in range(levels)]
        macs = c * keys
        for l in range(levels - 1):
            if ticks[l]:
                macs += k * widths[l] * c + k * 2 * c * c
                macs += ((k + 1) // 2 if ticks[l + 1] else (k - 1) // 2) * c * c
            if ticks[l + 1]:
                macs += k * c * c
        hand.append(macs + (k * widths[-1] * c if ticks[-1] else 0))
    assert macs_per_step(PlainSeqUNet(PlainSeqUNetConfig(c, levels, k, classes=keys))) == hand


def test_sequnet_amortised_cost_is_flat_in_levels() -> None:
    costs = [mean_macs(SeqUNet(SeqUNetConfig(32, levels, 2, 5))) for levels in range(4, 12)]
    fields = [SeqUNet(SeqUNetConfig(32, levels, 2, 5)).receptive_field for levels in range(4, 12)]
    assert fields[-1] > 100 * fields[0]  # the receptive field grows 2x per level...
    assert costs[-1] < 1.1 * costs[2]  # ...while the amortised cost converges
    assert all(b >= a for a, b in zip(costs, costs[1:]))  # and never shrinks


def test_wavenet_cost_grows_with_layers() -> None:
    costs = [mean_macs(WaveNet(WaveNetConfig(1, layers, 2, 32, 32, 64))) for layers in (8, 16)]
    assert costs[1] > 1.8 * costs[0] - 64 * 64 - 64 * 256


def test_clock_wrap_burst() -> None:
    per = macs_per_step(SeqUNet(SeqUNetConfig(32, 8, 2, 5)))
    assert len(per) == 128
    assert max(per) == per[-1]  # every level runs when the clock wraps
    assert per[0] == min(per)  # only level 0 on even steps
    assert max(per) > 3 * (sum(per) / len(per))

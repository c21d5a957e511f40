"""Multiply-accumulates per step of the streaming engine, summed over the ops of its plans.

For a Seq-U-Net the work depends on the clock phase (level ``l`` runs once every ``2**l``
steps): ``macs_per_step`` lists one period, so its mean is the amortised cost and its
maximum the clock-wrap burst. Single-rate networks cost the same every step.
"""

from __future__ import annotations

from torch import nn

from streamgen.engine.program import build_program, native_inputs


def macs_per_step(model: nn.Module) -> list[int]:
    """MACs of each step over one clock period (one-hot lookups count one per output), fed
    the network's own kind of input (``native_inputs``)."""
    return build_program(model, 1, inputs=native_inputs(model)).macs_per_step()


def mean_macs(model: nn.Module) -> float:
    per = macs_per_step(model)
    return sum(per) / len(per)

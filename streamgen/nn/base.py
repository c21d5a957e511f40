"""What every network shares: a JSON-able dataclass config and the length arithmetic."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    """Base of the networks' configs: plain fields, round-trips through JSON."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown {cls.__name__} fields {unknown}; known: {sorted(names)}")
        return cls(**data)


class StreamableNetwork(nn.Module):
    """A causal network over one-hot classes ``(B, classes, T_in) -> (B, classes, T_out)``.

    Outputs are right-aligned with the input: the last output predicts the sample after the
    last input. Subclasses define the length arithmetic from their layers.
    """

    kind: ClassVar[str]
    config_class: ClassVar[type[NetworkConfig]]
    config: NetworkConfig

    @property
    def period(self) -> int:
        """Samples per cycle of the slowest clock (1 for single-rate networks)."""
        return 1

    @property
    def num_classes(self) -> int:
        return self.config.classes  # type: ignore[attr-defined]

    def output_length(self, input_length: int) -> int:
        raise NotImplementedError

    def input_length(self, output_length: int) -> int:
        raise NotImplementedError

    @cached_property
    def receptive_field(self) -> int:
        """Longest span of inputs (this sample included) that any output depends on.

        The span of a multi-rate network depends on the output's phase on the level clock,
        so it is the maximum over one period of output positions.
        """
        return max(self.input_length(m) - m + 1 for m in range(1, self.period + 1))

    def training_output_length(self, requested: int) -> int:
        """Round an output window up to a multiple of ``period`` (every clock phase weighted equally)."""
        return -(-requested // self.period) * self.period

    def drop_unread_history(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` (..., T) without its oldest inputs that no complete output frame reads.

        A stride-2 convolution is phased from its first input and a decimation from its
        last: after this crop both keep the newest frame, so the newest outputs do not depend
        on how much older history is passed (any ``T`` gives ``output_length(T)`` outputs).
        """
        outputs = self.output_length(x.shape[-1])
        return x[..., x.shape[-1] - self.input_length(outputs) :] if outputs else x

    def forward_from_start(self, x: torch.Tensor) -> torch.Tensor:
        """One output per input step ``(B, C, T) -> (B, classes, T)``, as a stream starting at ``x[..., 0]``.

        Zero vectors stand before the first step (the causal zero padding), and the level
        clock is fixed from the first step: level ``l`` has frames at ``(t + 1) % 2**l == 0``.
        Zero vectors appended up to a multiple of ``period`` place that grid and are never
        read by the outputs kept.
        """
        steps = x.shape[-1]
        n_out = self.training_output_length(steps)
        pad_front = self.input_length(n_out) - n_out
        y = self(F.pad(x, (pad_front, n_out - steps)))
        return y[..., y.shape[-1] - n_out : y.shape[-1] - n_out + steps]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SingleRateNetwork(StreamableNetwork):
    """A network whose every layer runs at the sample rate: one output per input beyond the
    receptive field."""

    def output_length(self, input_length: int) -> int:
        return max(input_length - self.receptive_field + 1, 0)

    def input_length(self, output_length: int) -> int:
        return output_length + self.receptive_field - 1


class MultiRateNetwork(StreamableNetwork):
    """A U-Net of ``config.levels`` levels: level ``l`` runs at 1/2**l of the input rate."""

    @property
    def period(self) -> int:
        """Steps between two frames of the coarsest level: 2**(levels-1)."""
        return 2 ** (self.config.levels - 1)  # type: ignore[attr-defined]

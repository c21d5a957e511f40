"""What every network shares: a JSON-able dataclass config and the length arithmetic."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from torch import nn


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

    @property
    def receptive_field(self) -> int:
        raise NotImplementedError

    def training_output_length(self, requested: int) -> int:
        """Output window used for training, at least ``requested``."""
        return requested

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class SingleRateNetwork(StreamableNetwork):
    """A network whose every layer runs at the sample rate: one output per input beyond the
    receptive field."""

    def output_length(self, input_length: int) -> int:
        return max(input_length - self.receptive_field + 1, 0)

    def input_length(self, output_length: int) -> int:
        return output_length + self.receptive_field - 1

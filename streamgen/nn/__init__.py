"""The networks: pure ``nn.Module``s with dataclass configs (no I/O, no streaming state)."""

from __future__ import annotations

from typing import Any

from streamgen.nn.base import NetworkConfig, StreamableNetwork
from streamgen.nn.sequnet import SeqUNet, SeqUNetConfig
from streamgen.nn.symbolic import PlainSeqUNet, PlainSeqUNetConfig
from streamgen.nn.tcn import TCN, TCNConfig
from streamgen.nn.wavenet import WaveNet, WaveNetConfig

NETWORKS: dict[str, type[StreamableNetwork]] = {
    cls.kind: cls for cls in (SeqUNet, WaveNet, TCN, PlainSeqUNet)
}


def build_network(kind: str, config: dict[str, Any] | NetworkConfig) -> StreamableNetwork:
    """Build a network of ``kind`` (``sequnet``, ``wavenet``, ``tcn``, ``plain_sequnet``) from its config."""
    if kind not in NETWORKS:
        raise ValueError(f"unknown network kind {kind!r}; choose one of {sorted(NETWORKS)}")
    cls = NETWORKS[kind]
    if isinstance(config, dict):
        config = cls.config_class.from_dict(config)
    return cls(config)  # type: ignore[call-arg]


__all__ = [
    "NETWORKS",
    "NetworkConfig",
    "StreamableNetwork",
    "SeqUNet",
    "SeqUNetConfig",
    "PlainSeqUNet",
    "PlainSeqUNetConfig",
    "WaveNet",
    "WaveNetConfig",
    "TCN",
    "TCNConfig",
    "build_network",
]

"""Multiply-accumulates per step of the streaming engine, from the layer definitions.

For a Seq-U-Net the work depends on the clock phase (level ``l`` runs once every ``2**l``
steps): ``macs_per_step`` lists one period, so its mean is the amortised cost and its
maximum the clock-wrap burst. Single-rate networks cost the same every step.
"""

from __future__ import annotations

from torch import nn

from streamgen.nn import TCN, SeqUNet, WaveNet


def _gated(layer, taps: int | None = None) -> int:
    """filter + gate products of one output frame of a GatedResidual."""
    cin = layer.channels + layer.cond_channels
    return 2 * layer.channels * cin * (taps if taps is not None else layer.kernel_size)


def _sequnet_step(model: SeqUNet, top: int) -> int:
    cfg = model.config
    c, k, last = cfg.channels, cfg.kernel_size, cfg.levels - 1
    macs = k * c + c * cfg.classes  # input lookups, head
    for l in range(min(top, last - 1) + 1):
        enc = model.encoder[l]
        macs += sum(_gated(layer) for layer in enc.convs)
        if l + 1 <= top:
            macs += _gated(enc.down)
        dec = model.decoder[last - 1 - l]
        macs += _gated(dec.up, (k + 1) // 2 if l + 1 <= top else (k - 1) // 2)
        macs += sum(_gated(layer) for layer in dec.convs)
    if top == last:
        macs += sum(_gated(layer) for layer in model.bottleneck)
    return macs


def macs_per_step(model: nn.Module) -> list[int]:
    """MACs of each step over one clock period."""
    if isinstance(model, SeqUNet):
        from streamgen.engine.sequnet_program import trailing_ones

        last = model.config.levels - 1
        return [_sequnet_step(model, min(trailing_ones(t), last)) for t in range(model.period)]
    if isinstance(model, WaveNet):
        cfg = model.config
        r, d, s = cfg.residual_channels, cfg.dilation_channels, cfg.skip_channels
        per_layer = 2 * d * r * cfg.kernel_size + d * r + d * s
        return [r + len(model.layers) * per_layer + s * s + s * cfg.classes]
    if isinstance(model, TCN):
        cfg = model.config
        macs = cfg.channels * cfg.classes
        for i, block in enumerate(model.blocks):
            cin = cfg.classes if i == 0 else cfg.channels
            conv1 = cfg.kernel_size * cfg.channels * (1 if i == 0 else cin)  # one-hot: lookups
            macs += conv1 + cfg.kernel_size * cfg.channels**2
            if block.downsample is not None:
                macs += cfg.channels
        return [macs]
    raise TypeError(f"no cost model for {type(model).__name__}")


def mean_macs(model: nn.Module) -> float:
    per = macs_per_step(model)
    return sum(per) / len(per)

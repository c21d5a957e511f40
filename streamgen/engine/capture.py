"""Ring contents from one offline forward pass.

Running the network once over a history (with forward pre-hooks recording each ring's source
input) gives every ring's frames at any time in a range, exactly as the step program would
have built them. This is how the engine starts from zero history (a history of all-zero input
vectors) and how it primes from a long prompt without stepping through it.
"""

from __future__ import annotations

import torch

from streamgen.engine.clock import newest_frame_time, one_hot, zero_index
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.nn.layers import crop_front


class Capture:
    """Ring windows and logits for every time in ``[t_last - span + 1, t_last]``."""

    def __init__(
        self, program: StepProgram, history: torch.Tensor, t_last: int, span: int = 1,
        before: int | None = None,
    ) -> None:
        """``history``: (B, N) int64 classes (``zero_index`` = the zero vector), or (B, N, F)
        float frames for a program fed frames, ending at time ``t_last``; older history than
        the receptive field is ignored, missing history is the input index ``before``
        (default: zero vectors), or zero frames."""
        model, period = program.model, program.period
        pad_right = (-(t_last + 1)) % period + period  # end on the coarsest grid, a period ahead
        self.t_end = t_last + pad_right
        self.t_first = t_last - span + 1
        n_in = model.input_length(pad_right + span)
        n_hist = n_in - pad_right
        self.program = program
        param = next(model.parameters())
        model_input = self._model_input(history.cpu(), n_hist, pad_right, before)
        model_input = model_input.to(device=param.device, dtype=param.dtype)
        handles = []
        sequences: dict[str, torch.Tensor] = {}
        for name, info in program.info.items():
            if info.source is None:
                continue

            def hook(module, args, name=name, cond=info.cond, level=info.level):
                x = args[0]
                if cond:
                    x = torch.cat([x, crop_front(args[1], x.shape[-1])], dim=1)
                sequences[name] = self._trim(x, level, program.rings[name].window_size)

            handles.append(info.source.register_forward_pre_hook(hook))
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = model(model_input)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        self.sequences = sequences
        self.logits = out[..., out.shape[-1] - pad_right - span : out.shape[-1] - pad_right]

    def _model_input(self, history: torch.Tensor, n_hist: int, pad_right: int,
                     before: int | None) -> torch.Tensor:
        """The offline pass's input ``(B, F, n_hist + pad_right)``: missing history, the
        newest ``n_hist`` of ``history``, then ``pad_right`` zero vectors (they cannot reach
        the captured range: the network is causal). Keeps class indices in ``self.index``."""
        batch, classes = history.shape[0], self.program.classes
        kept = history[:, max(history.shape[1] - n_hist, 0) :]
        missing = max(n_hist - history.shape[1], 0)
        if self.program.inputs == "frames":
            self.index = None
            zeros = [torch.zeros(batch, n, classes, dtype=kept.dtype) for n in (missing, pad_right)]
            return torch.cat([zeros[0], kept, zeros[1]], dim=1).transpose(1, 2)
        zero = zero_index(classes)
        self.index = torch.cat([torch.full((batch, missing), zero if before is None else before),
                                kept, torch.full((batch, pad_right), zero)], dim=1)
        return one_hot(self.index, classes).transpose(1, 2)

    def _trim(self, x: torch.Tensor, level: int, window: int) -> torch.Tensor:
        """Keep the frames some window in the range needs (x's last frame is at ``t_end``)."""
        oldest = newest_frame_time(self.t_first, level) - (window - 1) * 2**level
        keep = (self.t_end - oldest) // 2**level + 1
        if x.shape[-1] < keep:
            raise RuntimeError(f"capture too short: {x.shape[-1]} frames < {keep}")
        return x[..., -keep:].detach().clone()

    def window(self, name: str, t: int) -> torch.Tensor:
        """``(B, window, channels)`` frames ring ``name`` holds after step ``t``."""
        if not self.t_first <= t <= self.t_end - self.program.period:
            raise ValueError(f"time {t} outside the captured range")
        ring = self.program.rings[name]
        if name == INPUT_RING:
            end = self.index.shape[1] - (self.t_end - t)
            return self.index[:, end - ring.window_size : end].unsqueeze(-1)
        level = self.program.info[name].level
        seq = self.sequences[name]
        e0 = (self.t_end - newest_frame_time(t, level)) // 2**level
        n = seq.shape[-1]
        return seq[..., n - e0 - ring.window_size : n - e0].transpose(1, 2)

    def logits_at(self, t: int) -> torch.Tensor:
        """``(B, classes)`` logits of step ``t`` (predicting the sample after it)."""
        if not self.t_first <= t < self.t_first + self.logits.shape[-1]:
            raise ValueError(f"time {t} outside the captured range")
        return self.logits[..., t - self.t_first]

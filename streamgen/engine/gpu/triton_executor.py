"""The Triton executor: a program's plans run by one persistent kernel launch per block.

The latency regime (batch 1 to ``flat.MAX_BATCH``): one Triton program per stream walks the
placed plans of ``streamgen.engine.gpu.placed`` (every address resolved by the ring schedule)
for a whole block of steps, sampling included, so a block of hundreds of samples costs one
launch instead of about 60 small kernels per step. Like the numba executor it runs Seq-U-Net
plans in float32, over the program's own rings (moved into one flat buffer; ``FrameRing.data``
and ``head_in`` become views of it), so capture, reset, prime and state save/restore are shared
with the torch executor. The rings must repeat with the clock (``capacity="period"``): a
block starts by aligning them to the schedule and ends by setting their positions from it.

It runs on a CUDA device, or on the CPU through Triton's interpreter (``TRITON_INTERPRET=1``
set before triton is first imported: the mode holds for the whole process), which is how the
tests check it without a GPU.
"""

from __future__ import annotations

import torch

from streamgen.engine.gpu import interpreting, triton_available
from streamgen.engine.gpu.flat import Block, PlacedExecutor, refusal
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.tables import refuse_unless_runnable


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, 1 << max(n - 1, 0).bit_length()))


class TritonExecutor(PlacedExecutor):
    """float32 Seq-U-Net plans on a CUDA device (or the Triton interpreter on the CPU)."""

    name = "triton"
    #: Warps per program; None: 16 for layer tiles of 8k weights or more, else 4. On an H200
    #: the default model streamed 18.4k samples/s at batch 1 with 16 against 17.2k with 8, the
    #: paper-size one 1,278 against 1,169 (one run).
    num_warps: int | None = None
    #: A gated layer's outputs per tile; None: half the layer width, 16 to 32. Neither spills
    #: (``tests/triton_compile.py``, Triton 3.5 to 3.9); 16 against 32 is a probe row to time.
    block_o: int | None = None

    @staticmethod
    def unsupported(program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        return refusal(
            program, "triton", on_cpu=interpreting(), cpu_mode="TRITON_INTERPRET=1",
            missing=None if triton_available() else
            "the triton backend needs triton (pip install triton; CUDA builds of torch ship it)")

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        from streamgen.engine.gpu import triton_kernels

        self._kernels = triton_kernels
        super().__init__(program)
        flat, dev = self.flat, program.device

        def f32(t: torch.Tensor) -> torch.Tensor:
            return t.detach().to(dev, torch.float32).contiguous()

        tables = flat.tables
        self.embed, self.embed_bias = f32(tables.embed_table), f32(tables.embed_bias)
        self.head_w, self.head_b = f32(tables.head_weight), f32(tables.head_bias)
        block_o, block_k = _pow2(tables.width // 2, 16, 32), _pow2(flat.widest, 32, 256)
        self.warps = self.num_warps or (16 if block_o * block_k >= 8192 else 4)
        self.blocks = dict(
            BLOCK_O=self.block_o or block_o,
            BLOCK_K=block_k,
            BLOCK_C=_pow2(program.classes, 16, 1 << 16),
            BLOCK_H=_pow2(flat.head_width, 16, 32),
            BLOCK_W=_pow2(int(tables.windows[tables.index_ring]), 2, 1 << 10),
            BLOCK_R=min(32, _pow2(program.classes, 16, 1 << 16)),
        )
        self._dummy_f = torch.zeros(1, dtype=torch.float32, device=dev)
        self._dummy_i = torch.zeros(1, dtype=torch.int64, device=dev)

    def launch(self, block: Block) -> None:
        p, flat, cfg = self.program, self.flat, block.sampling
        self._kernels.run_block[(p.batch,)](
            flat.rows, flat.starts, block.n, block.t0, self.schedule.period,
            flat.frames, p.rings[INPUT_RING].data, flat.weights,
            self.embed, self.embed_bias, self.embed.shape[1], p.classes + 1,
            self.head_w, self.head_b, flat.head_at, flat.head_width,
            block.logits, p.classes, p.batch,
            block.xs if block.xs is not None else self._dummy_i,
            block.out if block.out is not None else self._dummy_f,
            block.noise if block.noise is not None else self._dummy_f, block.noise_at,
            float(cfg.temperature) if cfg else 1.0, int(cfg.top_k) if cfg else 0,
            float(cfg.top_p) if cfg else 1.0,
            GENERATE=cfg is not None, WRITE_OUT=block.write_out,
            GREEDY=bool(cfg and cfg.greedy), TOP_K=bool(cfg and cfg.top_k),
            TOP_P=bool(cfg and cfg.top_p < 1.0),
            num_warps=self.warps,
            **self.blocks,
        )

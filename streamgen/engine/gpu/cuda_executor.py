"""The numba-cuda executor: a program's plans run by one persistent kernel launch per block,
one thread block per stream (``streamgen.engine.gpu.cuda_kernels``).

It runs the placed plans the Triton executor runs (``streamgen.engine.gpu.flat``), float32
Seq-U-Nets, and WaveNets too, on rings that repeat with the clock, for the latency regime
(batch 1 to ``flat.MAX_BATCH``). On a machine without a GPU it runs through numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1`` before numba is first imported, with ``cudasim``'s shuffles), one
Python thread per CUDA thread: slowly, so the tests use small models and small blocks.
"""

from __future__ import annotations

import numpy as np
import torch

from streamgen.engine.gpu import numba_cuda_available, simulating
from streamgen.engine.gpu.flat import WAVENET_COLUMNS, Block, PlacedExecutor, refusal
from streamgen.engine.program import INPUT_RING, StepProgram
from streamgen.engine.tables import refuse_unless_runnable

#: Threads per block on a GPU, and through the simulator (a Python thread each).
THREADS, SIM_THREADS = 256, 64


def _numpy_shim() -> None:
    """numba-cuda releases that still call ``np.row_stack`` (removed in numpy 2.3) get its
    replacement, ``np.vstack``."""
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack


class NumbaCudaExecutor(PlacedExecutor):
    """What the numba-cuda kernels' executors share: numba's ``cuda`` module (the simulator's
    with ``cudasim``'s additions on a machine without a GPU), the WaveNet widths, the kernel
    arguments both kernels take alike, the kernels' views of tensors, and stand-ins for the
    arguments a launch does not use."""

    @staticmethod
    def _refusal(program: StepProgram, backend: str) -> str | None:
        """Why the numba-cuda kernel ``backend`` cannot run ``program`` (None if it can)."""
        return refusal(
            program, backend, on_cpu=simulating(), cpu_mode="NUMBA_ENABLE_CUDASIM=1",
            wavenet=True, missing=None if numba_cuda_available() else
            f"the {backend} backend needs numba-cuda (pip install numba-cuda[cu12])")

    def __init__(self, program: StepProgram) -> None:
        _numpy_shim()
        super().__init__(program)
        self._sim = simulating()
        if self._sim:
            from streamgen.engine.gpu import cudasim

            cudasim.install()
        from numba import cuda

        self._cuda = cuda
        dev, tables = program.device, self.flat.tables
        self._wn = self.flat.wavenet.cpu().numpy()
        hidden = tables.hidden_weight
        #: The most dilation channels and the widest skip sum or head layer of the WaveNet
        #: layers ((0, 0): a Seq-U-Net), compile-time constants of both kernels.
        self.wavenet_widths = (int(self._wn[:, 3].max()),
                               max(int(self._wn[:, 4].max()), hidden.shape[0])) \
            if len(self._wn) else (0, 0)
        self._hidden_width = 0 if hidden is None else hidden.shape[0]
        self._dummy = dict(
            xs=torch.zeros(1, 1, dtype=torch.int64, device=dev),
            out_logits=torch.zeros(1, 1, 1, dtype=torch.float32, device=dev),
            out_samples=torch.zeros(1, 1, dtype=torch.int64, device=dev),
            noise=torch.zeros(1, 1, 1, dtype=torch.float32, device=dev),
        )

    def _shared_tensors(self) -> dict[str, torch.Tensor]:
        """The kernel arguments both kernels take alike: the placed rows, the flat buffers,
        the embedding, the head's bias, a WaveNet head's first bias and the WaveNet layer
        table (dummies for a Seq-U-Net)."""
        flat, tables, f32 = self.flat, self.flat.tables, self._f32
        none = torch.zeros(1)
        return dict(
            rows=flat.rows.view(-1), starts=flat.starts, frames=flat.frames,
            index=self.program.rings[INPUT_RING].data.view(-1), weights=flat.weights,
            embed=f32(tables.embed_table).view(-1), embed_bias=f32(tables.embed_bias),
            head_b=f32(tables.head_bias),
            hid_b=f32(tables.hidden_bias if tables.hidden_weight is not None else none),
            wn=flat.wavenet if len(self._wn) else torch.zeros(
                1, len(WAVENET_COLUMNS), dtype=torch.int64, device=self.program.device),
        )

    def _keep(self, tensors: dict[str, torch.Tensor]) -> None:
        """Hold the kernel's arguments and their views (``_tensors`` keeps them alive: a view
        owns no memory)."""
        self._tensors = tensors
        self._fixed = {k: self._array(v) for k, v in tensors.items()}

    def _array(self, t: torch.Tensor):
        """``t`` as the kernel takes it: a device array view on a GPU, a numpy view in the
        simulator (both share ``t``'s memory)."""
        return t.numpy() if self._sim else self._cuda.as_cuda_array(t.detach())

    def _arg(self, name: str, t: torch.Tensor | None):
        """``t``, or the stand-in ``name`` for an argument this launch does not use."""
        return self._array(t if t is not None else self._dummy[name])

    def _f32(self, t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(self.program.device, torch.float32).contiguous()

    @staticmethod
    def _mode(block: Block) -> int:
        """The kernels' launch mode for ``block`` (``cuda_kernels.FEED``, ...)."""
        from streamgen.engine.gpu import cuda_kernels as ck

        if block.sampling is not None:
            return ck.GENERATE
        return ck.FEED_OUT if block.write_out else ck.FEED

    @staticmethod
    def _sampling(block: Block) -> tuple:
        """The kernels' sampling arguments: greedy, temperature, top-k, top-p."""
        cfg = block.sampling
        return (bool(cfg and cfg.greedy), np.float32(cfg.temperature if cfg else 1.0),
                int(cfg.top_k) if cfg else 0, np.float32(cfg.top_p if cfg else 1.0))

    def _stream(self):
        """Torch's current stream on the program's device, for numba's launches."""
        return self._cuda.external_stream(
            torch.cuda.current_stream(self.program.device).cuda_stream)


class CudaExecutor(NumbaCudaExecutor):
    """float32 Seq-U-Net and WaveNet plans on a CUDA device (or numba's CUDA simulator on the
    CPU)."""

    name = "numba-cuda"
    #: Threads per block (None: ``THREADS``, or ``SIM_THREADS`` in the simulator), the unroll
    #: (None: the kernel's choice) and how a gated layer's work is split
    #: (``cuda_kernels.MAPPINGS``).
    threads: int | None = None
    unroll: int | None = None
    mapping: str = "lanes"

    @classmethod
    def unsupported(cls, program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        return cls._refusal(program, "numba-cuda")

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        self.transposed_weights = self.mapping == "rows"
        super().__init__(program)
        from streamgen.engine.gpu import cuda_kernels

        self._ck = cuda_kernels
        flat, tables, f32 = self.flat, self.flat.tables, self._f32
        threads = self.threads or (SIM_THREADS if self._sim else THREADS)
        widths = {int(r[6]) for r in flat.rows.cpu().numpy() if r[0] == cuda_kernels.OP_GATED}
        self.threads_per_block = threads
        self.kernel = cuda_kernels.build(threads, flat.max_rows, program.classes,
                                         max(widths, default=1), self.unroll, self.mapping,
                                         uniform=len(widths) == 1, wavenet=self.wavenet_widths)
        hidden = tables.hidden_weight
        self._keep(dict(
            self._shared_tensors(),
            # the head's weights as (C, classes): a thread per class reads them coalesced; a
            # WaveNet head's first 1x1 as (C, hidden) likewise (a dummy for a Seq-U-Net)
            head_wt=f32(tables.head_weight.t()).view(-1),
            hid_wt=f32(hidden.t() if hidden is not None else torch.zeros(1)).view(-1),
        ))

    def launch(self, block: Block) -> None:
        mode, p = self._mode(block), self.program
        if self._sim:
            from streamgen.engine.gpu.cudasim import concurrent_blocks

            with concurrent_blocks():
                self._launch(self.kernel[p.batch, self.threads_per_block, 0], block, mode)
            return
        self._launch(self.kernel[p.batch, self.threads_per_block, self._stream()], block, mode)

    def _launch(self, kernel, block: Block, mode: int) -> None:
        p, flat, a, ck, arg = self.program, self.flat, self._fixed, self._ck, self._arg

        kernel(
            a["rows"], a["starts"], block.n, block.t0, self.schedule.period,
            a["frames"], a["index"], a["weights"],
            a["embed"], a["embed_bias"], flat.tables.embed_table.shape[1], p.classes + 1,
            a["head_wt"], a["head_b"], flat.head_at, flat.head_width,
            a["hid_wt"], a["hid_b"], self._hidden_width, a["wn"],
            self._array(block.logits), p.classes,
            arg("xs", block.xs),
            arg("out_logits", block.out if mode == ck.FEED_OUT else None),
            arg("out_samples", block.out if mode == ck.GENERATE else None),
            arg("noise", block.noise), block.noise_at, mode, *self._sampling(block),
        )

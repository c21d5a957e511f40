"""The numba-cuda grid executor: each stream's steps shared out among many thread blocks of one
persistent launch (``streamgen.engine.gpu.grid_kernels``), for networks too wide for one block
to read their weights in time (the paper-size Seq-U-Net at batch 1).

It runs the placed plans of float32 Seq-U-Nets and WaveNets on rings that repeat with the
clock, like the one-block kernel (``cuda_executor``), so the paper's comparison at batch 1 can
use it for both networks. At a grid barrier every block of the launch must be resident at
once (they wait for each other), so a stream gets at most its share of the multiprocessors,
one block each (``blocks_per_stream``); with ``barrier="cluster"`` (Hopper) a stream's blocks
are one thread-block cluster of at most ``cluster.MAX_BLOCKS``. On a machine without a GPU
it runs through numba's CUDA simulator with every block at once
(``cudasim.concurrent_blocks``): slowly, so the tests use tiny models, blocks of one warp and
three blocks per stream.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from streamgen.engine.gpu import cluster, grid_plan
from streamgen.engine.gpu.cuda_executor import NumbaCudaExecutor
from streamgen.engine.gpu.flat import Block
from streamgen.engine.program import StepProgram
from streamgen.engine.sampling import Sampler
from streamgen.engine.tables import BackendError, refuse_unless_runnable

#: Threads per block on a GPU, and through the simulator (a Python thread each); blocks per
#: stream through the simulator.
THREADS, SIM_THREADS, SIM_GROUPS = 256, 32, 3


def multiprocessors(device: torch.device) -> int:
    """The streaming multiprocessors of CUDA ``device`` (in the simulator: as many as
    ``SIM_GROUPS`` blocks for each of 64 streams)."""
    if device.type != "cuda":
        return 64 * SIM_GROUPS
    return torch.cuda.get_device_properties(device).multi_processor_count


def blocks_per_stream(channels: int, batch: int, multiprocessors: int) -> int:
    """Blocks per stream for gated layers of at most ``channels`` output channels: as many as
    the multiprocessors give each of ``batch`` streams (one block each), fewer where that
    leaves every block the same number of channels (180 channels on 132 multiprocessors: 90
    blocks of 2, not 48 of 2 and 84 of 1 that wait for them)."""
    per = -(-channels // max(1, multiprocessors // batch))
    return -(-channels // per)


def capability(device: torch.device) -> tuple[int, int] | None:
    """The compute capability of CUDA ``device`` (None: the simulator's)."""
    return torch.cuda.get_device_capability(device) if device.type == "cuda" else None


class GridExecutor(NumbaCudaExecutor):
    """float32 Seq-U-Net and WaveNet plans, each stream's step shared out among ``groups``
    thread blocks on a CUDA device (or numba's CUDA simulator on the CPU)."""

    name = "numba-cuda-grid"
    #: Threads per block (None: ``THREADS``, or ``SIM_THREADS`` in the simulator), blocks per
    #: stream (None: ``blocks_per_stream``, at most ``cluster.MAX_BLOCKS`` with the cluster
    #: barrier, or ``SIM_GROUPS`` in the simulator), the barrier (``grid_kernels.BARRIERS``)
    #: and whether the next layer's weights are loaded while the block waits for the others;
    #: ``whole_ends``: every block computes the embedding and a Seq-U-Net's head whole, two
    #: barriers a step fewer for a little more work (opt-in until timed).
    threads: int | None = None
    groups: int | None = None
    barrier: str = "counter"
    prefetch: bool = True
    whole_ends: bool = False

    @classmethod
    def unsupported(cls, program: StepProgram) -> str | None:
        """Why this executor cannot run ``program`` (None if it can)."""
        reason = cls._refusal(program, "numba-cuda-grid")
        if reason:
            return reason
        if cls.barrier == "cluster":  # no stream waits for another: any batch runs
            reason = cluster.unavailable(capability(program.device))
            if reason or (cls.groups or 1) <= cluster.MAX_BLOCKS:
                return reason
            return (f"the numba-cuda-grid backend's cluster barrier takes at most "
                    f"{cluster.MAX_BLOCKS} blocks per stream, not {cls.groups}")
        most = multiprocessors(program.device)
        if program.batch > most:
            return (f"the numba-cuda-grid backend runs at most {most} streams here (a "
                    f"multiprocessor each at least), not {program.batch}")
        return None

    def __init__(self, program: StepProgram) -> None:
        refuse_unless_runnable(self.unsupported(program))
        super().__init__(program)
        from streamgen.engine.gpu import grid_kernels

        self._kernels = grid_kernels
        flat, dev, tables = self.flat, program.device, self.flat.tables
        rows, starts, wn = flat.rows.cpu().numpy(), flat.starts.cpu().numpy(), self._wn
        gated = rows[rows[:, 0] == grid_kernels.OP_GATED]
        # the widest layer (output channels; window elements), gated or WaveNet
        channels = int(max(gated[:, 6].max(initial=1), wn[:, 3].max(initial=1)))
        window = int(max(flat.widest, (wn[:, 0] * wn[:, 2]).max(initial=1)))
        wavenet = self.wavenet_widths
        self.threads_per_block = self.threads or (SIM_THREADS if self._sim else THREADS)
        clustered = self.barrier == "cluster"
        sms = multiprocessors(dev)
        self.groups_per_stream = self.groups or (SIM_GROUPS if self._sim else blocks_per_stream(
            channels, program.batch,
            min(sms, cluster.MAX_BLOCKS * program.batch) if clustered else sms))
        self.blocks = program.batch * self.groups_per_stream
        # more blocks than multiprocessors (``groups`` set so) share them, registers too,
        # unless clusters that wait for no other may wait for their turn
        resident = 1 if clustered else -(-self.blocks // sms)
        self.kernel = grid_kernels.build(
            self.threads_per_block, self.groups_per_stream, flat.max_rows, program.classes,
            channels, window, self.barrier, self.prefetch, wavenet, resident, self.whole_ends)
        scratch = wavenet[0] + 2 * wavenet[1] if len(wn) else 1
        head = grid_plan.Span("frames", flat.head_at, flat.head_at + flat.head_width)
        whole, whole_head = grid_kernels.whole_ops(self.whole_ends, len(wn) > 0)
        need = grid_plan.barriers(rows, starts, head, whole, wait_after_head=not whole_head)
        # besides the plan's: after every head shared out, within every WaveNet layer and head
        inside = (rows[:, 0] == grid_kernels.OP_WAVENET).sum() + (
            2 if len(wn) else 0 if whole_head else 1) * (len(starts) - 1)
        #: Grid barriers per step, on average over the period.
        self.barriers_per_step = float(need.sum() + inside) / (len(starts) - 1)

        def i32(values) -> torch.Tensor:
            return torch.as_tensor(values, dtype=torch.int32, device=dev)

        f32, hidden = self._f32, tables.hidden_weight
        self._keep(dict(
            self._shared_tensors(),
            need=i32(need), ahead=i32(grid_plan.next_layer(rows, starts)),
            # (classes, C): a warp per class; (C, classes) for a head computed whole, a thread
            # per class
            head_w=f32(tables.head_weight.t() if whole_head else tables.head_weight).view(-1),
            # a WaveNet head's first 1x1 (hidden, C); its h, skip sum and hidden layer per
            # stream (dummies for a Seq-U-Net)
            hid_w=f32(hidden if hidden is not None else torch.zeros(1)).view(-1),
            scratch=torch.zeros(program.batch * scratch, dtype=torch.float32, device=dev),
            glog=torch.zeros(2 * program.batch * program.classes, dtype=torch.float32,
                             device=dev),
            bar=torch.zeros(grid_kernels.RELEASES + self.blocks, dtype=torch.int64, device=dev),
        ))

    def launch(self, block: Block) -> None:
        # the barrier counts from zero in every launch; a block's giving up stays flagged
        self._tensors["bar"][self._kernels.ARRIVALS:].zero_()
        # numba compiles the kernel at its first launch for each argument types
        with (cluster.compiled_in_clusters(self.groups_per_stream)
              if self.barrier == "cluster" else nullcontext()):
            if self._sim:
                from streamgen.engine.gpu.cudasim import concurrent_blocks

                with concurrent_blocks():
                    self._launch(self.kernel[self.blocks, self.threads_per_block, 0], block)
                return
            self._launch(self.kernel[self.blocks, self.threads_per_block, self._stream()],
                         block)

    def _check(self) -> None:
        """Raise if a block gave up waiting at a polling barrier, or the blocks did not run
        in clusters of a stream's (the flag stays set: every later launch's results are void
        too). Once per engine call: reading it waits for the GPU."""
        if self.barrier == "cooperative":
            return
        k = self._kernels
        flag = self._tensors["bar"][k.GAVE_UP].item()
        if flag == k.NOT_CLUSTERED:
            raise BackendError(
                "the GPU did not run the numba-cuda-grid kernel in clusters of "
                f"{self.groups_per_stream} blocks (numba-cuda left out its cluster dimensions): "
                "use barrier='counter'")
        if flag:
            raise BackendError(
                "the numba-cuda-grid kernel's blocks did not all run at once "
                f"({self.blocks} blocks at a {self.barrier} barrier): use fewer blocks per "
                "stream (GridExecutor.groups) or barrier='cooperative'")

    def feed_block(self, xs: torch.Tensor, out: torch.Tensor | None, logits: torch.Tensor,
                   t0: int) -> None:
        super().feed_block(xs, out, logits, t0)
        self._check()

    def generate_block(self, n: int, sampler: Sampler, out: torch.Tensor, logits: torch.Tensor,
                       t0: int, x: torch.Tensor) -> None:
        super().generate_block(n, sampler, out, logits, t0, x)
        self._check()

    def _launch(self, kernel, block: Block) -> None:
        from streamgen.engine.gpu import cuda_kernels as ck

        p, flat, a, arg, mode = self.program, self.flat, self._fixed, self._arg, self._mode(block)
        out_logits = block.out if mode == ck.FEED_OUT else self._dummy["out_logits"]
        kernel(
            a["rows"], a["starts"], a["need"], a["ahead"], block.n, block.t0,
            self.schedule.period, a["frames"], a["index"], a["weights"],
            a["embed"], a["embed_bias"], flat.tables.embed_table.shape[1], p.classes + 1,
            a["head_w"], a["head_b"], flat.head_at, flat.head_width,
            a["hid_w"], a["hid_b"], self._hidden_width, a["wn"], a["scratch"],
            self._array(block.logits), a["glog"], a["bar"], p.classes,
            arg("xs", block.xs),
            self._array(out_logits.view(-1)),  # flat
            arg("out_samples", block.out if mode == ck.GENERATE else None),
            arg("noise", block.noise), block.noise_at, mode, *self._sampling(block),
        )

"""The numba-cuda grid kernel (each stream's step shared out among blocks) on the CPU, through
numba's CUDA simulator with every block at once (``cudasim.concurrent_blocks``).

Tiny Seq-U-Nets and WaveNets, blocks of one warp, two or three blocks per stream: shares of
two channels with a block left without any, windows longer than a block's threads, a width
equal to the class count, more classes than threads. Teacher-forced logits are compared with
the float64 offline pass, free-running samples with the torch backend's for the same seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import KERNEL_SAMPLINGS, feed_in_chunks, generated, random_sequnet, randomize_
from engine_reference import reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.gpu import numba_cuda_available, simulating
from streamgen.nn import TCN, TCNConfig, WaveNet, WaveNetConfig

cuda = pytest.importorskip("numba.cuda")  # a module global: the simulator swaps it for its own
pytestmark = [
    pytest.mark.skipif(not numba_cuda_available(), reason="numba.cuda is not installed"),
    pytest.mark.skipif(numba_cuda_available() and not simulating(),
                       reason="numba compiles CUDA kernels for the GPU here: test_cuda covers it"),
]
TOL = 1e-4
EXECUTOR = "streamgen.engine.gpu.grid_executor.GridExecutor"


# (channels, levels, depth, kernel, classes, batch, chunk, blocks per stream)
CONFIGS = [
    (4, 2, 1, 3, 16, 1, 7, 3),  # shares of 2 channels: the third block has none
    (8, 2, 1, 5, 16, 2, 1, 3),  # windows of 40 elements over 32 threads; two streams
    (16, 2, 1, 3, 16, 1, 13, 2),  # a width equal to the class count
    (5, 3, 2, 7, 40, 1, 5, 2),  # more classes than threads; shares of 3 and 2 channels
]


@pytest.mark.parametrize("cfg", CONFIGS,
                         ids=lambda c: "C{}-L{}-D{}-k{}-cls{}-b{}-chunk{}-G{}".format(*c))
def test_grid_engine_equals_offline(cfg: tuple, monkeypatch: pytest.MonkeyPatch,
                                    rng: torch.Generator) -> None:
    *net, classes, batch, chunk, groups = cfg
    monkeypatch.setattr(f"{EXECUTOR}.groups", groups)
    model = random_sequnet(tuple(net), classes, rng)
    n = 2 * model.period + 5  # every phase, a ring rewind and a partial block
    x = torch.randint(0, classes, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend="numba-cuda-grid", capacity="period")
    assert engine.backend == "numba-cuda-grid"
    assert engine.executor.groups_per_stream == groups
    out = feed_in_chunks(engine, x, chunk)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


@pytest.mark.parametrize("barrier,prefetch", [("cooperative", True), ("broadcast", True),
                                              ("counter", False), ("cluster", True)])
def test_grid_engine_barriers_and_loads(barrier: str, prefetch: bool,
                                        monkeypatch: pytest.MonkeyPatch,
                                        rng: torch.Generator) -> None:
    """The other barriers (a cluster per stream: two clusters of three blocks); weights
    loaded only when their row comes; and rings primed off the schedule, a stream reset
    mid-run."""
    monkeypatch.setattr(f"{EXECUTOR}.barrier", barrier)
    monkeypatch.setattr(f"{EXECUTOR}.prefetch", prefetch)
    model = random_sequnet((6, 2, 1, 5), 16, rng)
    x = torch.randint(0, 16, (2, 16), generator=rng)
    engine = StreamingEngine(model, 2, backend="numba-cuda-grid", capacity="period")
    engine.prime(x[:, :8])
    engine.reset([1])
    out = feed_in_chunks(engine, x[:, 8:], 5)
    want = reference_logits(model, x, starts=[0, 8])[:, 8:]
    assert (out.double() - want).abs().max().item() < TOL


@pytest.mark.parametrize("sampling", KERNEL_SAMPLINGS, ids=lambda s: s.describe())
def test_grid_generates_the_same_samples_as_torch(sampling: SamplingConfig,
                                                  rng: torch.Generator) -> None:
    """40 classes over 32 threads and 3 blocks; every block samples the class by itself."""
    model = random_sequnet((4, 2, 1, 3), 40, rng)
    with torch.no_grad():
        model.head.weight.mul_(4.0)  # peaked distributions: nuclei of a few classes
    want = generated(model, "torch", 2, sampling, 11, (4, 5), capacity="period")
    assert torch.equal(generated(model, "numba-cuda-grid", 2, sampling, 11, (4, 5),
                                 capacity="period"), want)
    assert len(want.unique()) > 1 or sampling.greedy


# WaveNets (blocks, layers, kernel, residual, dilation, skip channels): kernels 2 and 3,
# dilation channels over 3 blocks (shares of 2: the third block's one), one layer
WAVENETS = [(1, 3, 2, 4, 5, 6), (2, 2, 3, 3, 4, 5), (1, 1, 2, 2, 3, 4)]


@pytest.mark.parametrize("cfg", WAVENETS, ids=lambda c: "B{}-L{}-k{}-R{}-D{}-S{}".format(*c))
def test_grid_runs_wavenets_equal_to_offline(cfg: tuple, rng: torch.Generator) -> None:
    """Each layer's h shared out by dilation channels, a barrier, then its residual and skip
    outputs shared out; the two-layer head likewise."""
    model = WaveNet(WaveNetConfig(*cfg, classes=40))
    randomize_(model, rng)
    model.eval()
    x = torch.randint(0, 40, (2, 2 * cfg[1] + 7), generator=rng)
    engine = StreamingEngine(model, 2, backend="numba-cuda-grid", capacity="period")
    out = feed_in_chunks(engine, x, 5)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


@pytest.mark.parametrize("barrier", ["counter", "cluster"])
def test_grid_wavenet_samples_equal_torch(barrier: str, monkeypatch: pytest.MonkeyPatch,
                                          rng: torch.Generator) -> None:
    monkeypatch.setattr(f"{EXECUTOR}.barrier", barrier)
    model = WaveNet(WaveNetConfig(1, 2, 2, 3, 4, 5, classes=16))
    randomize_(model, rng, scale=2.0)
    want = generated(model.eval(), "torch", 1, SamplingConfig(top_p=0.9), 3, (4, 5),
                     capacity="period")
    assert torch.equal(generated(model, "numba-cuda-grid", 1, SamplingConfig(top_p=0.9), 3,
                                 (4, 5), capacity="period"), want)
    assert len(want.unique()) > 1


def test_grid_refuses_what_it_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                         rng: torch.Generator) -> None:
    tcn = TCN(TCNConfig(channels=4, levels=2, kernel_size=3, classes=16))
    with pytest.raises(ValueError, match="plans of gated layers.*backend='torch'"):
        StreamingEngine(tcn, 1, backend="numba-cuda-grid", capacity="period")
    monkeypatch.setattr("streamgen.engine.gpu.grid_executor.multiprocessors", lambda dev: 4)
    with pytest.raises(ValueError, match="runs at most 4 streams here"):
        StreamingEngine(random_sequnet((4, 2, 1, 3), 16, rng), 5, backend="numba-cuda-grid",
                        capacity="period")


@pytest.mark.parametrize("kind,barrier", [("sequnet", "counter"), ("sequnet", "cluster"),
                                          ("wavenet", "counter")])
def test_grid_whole_ends_equal_offline_and_torch(kind: str, barrier: str,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 rng: torch.Generator) -> None:
    """Every block computing the embedding and a Seq-U-Net's head whole (no barrier after
    either; the head's logits in the block's own memory, carried between launches): logits
    against the float64 pass across launches, samples against torch's."""
    monkeypatch.setattr(f"{EXECUTOR}.whole_ends", True)
    monkeypatch.setattr(f"{EXECUTOR}.barrier", barrier)
    if kind == "sequnet":
        model = random_sequnet((5, 3, 1, 3), 40, rng)
    else:
        model = WaveNet(WaveNetConfig(1, 2, 2, 3, 4, 5, classes=40))
        randomize_(model, rng)
        model.eval()
    x = torch.randint(0, 40, (2, 19), generator=rng)
    engine = StreamingEngine(model, 2, backend="numba-cuda-grid", capacity="period")
    # fewer a step than with shared ends (a WaveNet's layers wait for everything before them)
    want_barriers = 0 if kind == "wavenet" else 2
    out = feed_in_chunks(engine, x, 7)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL
    whole = engine.executor.barriers_per_step
    monkeypatch.setattr(f"{EXECUTOR}.whole_ends", False)
    shared = StreamingEngine(model, 2, backend="numba-cuda-grid",
                             capacity="period").executor.barriers_per_step
    assert shared - whole >= want_barriers - 1e-9
    monkeypatch.setattr(f"{EXECUTOR}.whole_ends", True)
    sampling = SamplingConfig(top_p=0.9)
    assert torch.equal(generated(model, "numba-cuda-grid", 2, sampling, 7, (4, 5),
                                 capacity="period"),
                       generated(model, "torch", 2, sampling, 7, (4, 5), capacity="period"))


def test_grid_refuses_clusters_it_cannot_have(monkeypatch: pytest.MonkeyPatch,
                                              rng: torch.Generator) -> None:
    model = random_sequnet((4, 2, 1, 3), 16, rng)
    monkeypatch.setattr(f"{EXECUTOR}.barrier", "cluster")
    monkeypatch.setattr(f"{EXECUTOR}.groups", 9)
    with pytest.raises(ValueError, match=r"cluster barrier takes at most 8 blocks per stream, "
                                         r"not 9; use the torch backend"):
        StreamingEngine(model, 1, backend="numba-cuda-grid", capacity="period")
    monkeypatch.setattr(f"{EXECUTOR}.groups", None)
    monkeypatch.setattr("streamgen.engine.gpu.grid_executor.capability", lambda dev: (8, 6))
    with pytest.raises(ValueError, match=r"clusters need a GPU of compute capability 9.0 or "
                                         r"later, not 8.6; use the torch backend"):
        StreamingEngine(model, 1, backend="numba-cuda-grid", capacity="period")


def test_grid_says_so_when_its_blocks_are_not_clustered(monkeypatch: pytest.MonkeyPatch,
                                                        rng: torch.Generator) -> None:
    """Launched in clusters of one block (numba-cuda dropping the kernel's cluster
    dimensions), each block would pass the barrier alone: the kernel stops at once and the
    engine call says so in one line."""
    monkeypatch.setattr(f"{EXECUTOR}.barrier", "cluster")
    monkeypatch.setattr("streamgen.engine.gpu.cluster.launch_blocks", lambda: 1)
    engine = StreamingEngine(random_sequnet((4, 2, 1, 3), 16, rng), 1,
                             backend="numba-cuda-grid", capacity="period")
    with pytest.raises(ValueError, match=r"did not run the numba-cuda-grid kernel in clusters "
                                         r"of 3 blocks .*barrier='counter'$"):
        engine.feed(torch.zeros(1, 2, dtype=torch.int64))


def test_blocks_per_stream_share_channels_evenly() -> None:
    from streamgen.engine.gpu.grid_executor import blocks_per_stream

    assert blocks_per_stream(180, 1, 132) == 90  # 2 channels each
    assert blocks_per_stream(32, 1, 132) == 32
    assert blocks_per_stream(180, 2, 132) == 60  # 66 each would leave 3 channels to some
    assert blocks_per_stream(180, 200, 132) == 1


def test_simulated_blocks_run_at_once_with_their_own_shared_memory() -> None:
    """Each block writes, the grid syncs, each block reads the others' values; shared arrays
    are the block's own."""
    from streamgen.engine.gpu.cudasim import concurrent_blocks, install

    install()

    @cuda.jit
    def probe(vals, seen, mine):
        b, t = cuda.blockIdx.x, cuda.threadIdx.x
        s = cuda.shared.array(1, np.int64)
        if t == 0:
            s[0] = 10 * b
            vals[b] = b + 1
        cuda.cg.this_grid().sync()
        total = 0
        for j in range(cuda.gridDim.x):
            total += vals[j]
        seen[b, t] = total
        mine[b, t] = s[0]

    vals = np.zeros(3, np.int64)
    seen, mine = np.zeros((3, 32), np.int64), np.zeros((3, 32), np.int64)
    with concurrent_blocks():
        probe[3, 32](vals, seen, mine)
    assert (seen == 6).all()
    assert (mine == 10 * np.arange(3)[:, None]).all()


def test_simulated_clusters_wait_for_their_own_blocks_only() -> None:
    """Four blocks in clusters of two: a block's wait returns only once its cluster's other
    block (here a slow one) has arrived, and never waits for the other cluster, which passes
    its barrier one time more."""
    import time

    from streamgen.engine.gpu import cluster
    from streamgen.engine.gpu.cudasim import concurrent_blocks, install

    install()
    arrive, wait, size = cluster.device_functions()

    @cuda.jit
    def probe(vals, seen, sizes):
        b, t = cuda.blockIdx.x, cuda.threadIdx.x
        if b % 2 == 1 and t == 0:
            time.sleep(0.05)  # the cluster's second block comes late
        if t == 0:
            vals[b] = b + 1
        arrive()
        wait()
        seen[b, t] = vals[b ^ 1]  # the other block of the cluster
        sizes[b, t] = size()
        if b >= 2:  # the second cluster only
            arrive()
            wait()

    vals = np.zeros(4, np.int64)
    seen, sizes = np.zeros((4, 32), np.int64), np.zeros((4, 32), np.int64)
    with cluster.compiled_in_clusters(2), concurrent_blocks():
        probe[4, 32](vals, seen, sizes)
    assert (seen == np.array([2, 1, 4, 3])[:, None]).all()
    assert (sizes == 2).all()


@pytest.mark.parametrize("barrier", ["counter", "broadcast"])
def test_barriers_give_up_when_a_block_never_comes(barrier: str,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   rng: torch.Generator) -> None:
    """A grid whose blocks are not all resident would spin forever at the barrier: every
    block gives up after its polls, flags it, and the engine call says so in one line."""
    from streamgen.engine.gpu.cudasim import concurrent_blocks, install
    from streamgen.engine.gpu.grid_kernels import _grid_barrier

    install()
    arrive, wait = _grid_barrier(barrier, patience=50)

    @cuda.jit
    def probe(bar, done):
        arrive(bar, 1, cuda.gridDim.x + 1, cuda.threadIdx.x)  # a block that never comes
        wait(bar, 1, cuda.gridDim.x + 1, cuda.threadIdx.x)
        done[cuda.blockIdx.x, cuda.threadIdx.x] = 1

    bar, done = np.zeros(4, np.int64), np.zeros((2, 32), np.int64)
    with concurrent_blocks():
        probe[2, 32](bar, done)
    assert bar.tolist() == [1, 2, 0, 0] and done.all()  # gave up, two arrivals, no release

    from streamgen.engine.gpu.grid_executor import GridExecutor

    monkeypatch.setattr(f"{EXECUTOR}.barrier", barrier)
    engine = StreamingEngine(random_sequnet((4, 2, 1, 3), 16, rng), 1,
                             backend="numba-cuda-grid", capacity="period")
    monkeypatch.setattr(GridExecutor, "_launch",
                        lambda self, kernel, block: self._tensors["bar"][0].fill_(1))
    with pytest.raises(ValueError, match=rf"did not all run at once \(3 blocks at a {barrier} "
                                         r"barrier\).*barrier='cooperative'$"):
        engine.feed(torch.zeros(1, 2, dtype=torch.int64))

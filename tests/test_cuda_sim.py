"""The numba-cuda executor's kernel on the CPU, through numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``, set by conftest where no GPU is visible), with the warp shuffles
of ``streamgen.engine.gpu.cudasim``.

The simulator runs the very kernel the GPU compiles, a Python thread per CUDA thread: slowly,
so the models are tiny and the blocks 64 threads (two warps; one test takes one warp).
Teacher-forced logits are compared with the float64 offline pass, free-running samples with
the torch backend's for the same seed, for Seq-U-Nets and (numba-cuda only) WaveNets.
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


# (channels, levels, depth, kernel, classes, batch, chunk): kernels 3/5/7, a width equal to
# the class count, more classes than threads (two per thread), batch 1 and 2, chunks of 1
# and of primes
CONFIGS = [
    (4, 1, 1, 3, 16, 1, 7),
    (6, 2, 2, 5, 16, 2, 1),
    (5, 3, 1, 7, 16, 1, 13),
    (8, 2, 1, 3, 8, 1, 5),
    (3, 2, 1, 5, 80, 1, 11),
]


MAPPINGS = ["lanes", "rows"]  # cuda_kernels.MAPPINGS, without importing numba.cuda here


@pytest.fixture(params=MAPPINGS)
def mapping(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way of splitting a gated layer's work (``cuda_kernels.MAPPINGS``)."""
    monkeypatch.setattr("streamgen.engine.gpu.cuda_executor.CudaExecutor.mapping", request.param)
    return request.param


@pytest.mark.parametrize("cfg", CONFIGS,
                         ids=lambda c: "C{}-L{}-D{}-k{}-cls{}-b{}-chunk{}".format(*c))
def test_numba_cuda_engine_equals_offline(cfg: tuple, mapping: str, rng: torch.Generator) -> None:
    *net, classes, batch, chunk = cfg
    model = random_sequnet(tuple(net), classes, rng)
    n = 2 * model.period + 5  # every phase, a ring rewind and a partial block
    x = torch.randint(0, classes, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend="numba-cuda", capacity="period")
    assert engine.backend == "numba-cuda"
    out = feed_in_chunks(engine, x, chunk)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


def test_numba_cuda_in_one_warp_after_prime_and_reset(mapping: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       rng: torch.Generator) -> None:
    """Blocks of one warp; rings primed by the offline capture (off the ring schedule) and a
    stream reset mid-run stay exact."""
    monkeypatch.setattr("streamgen.engine.gpu.cuda_executor.CudaExecutor.threads", 32)
    model = random_sequnet((6, 2, 1, 5), 16, rng)
    x = torch.randint(0, 16, (2, 16), generator=rng)
    engine = StreamingEngine(model, 2, backend="numba-cuda", capacity="period")
    assert engine.executor.threads_per_block == 32
    engine.prime(x[:, :8])
    engine.reset([1])
    out = feed_in_chunks(engine, x[:, 8:], 5)
    want = reference_logits(model, x, starts=[0, 8])[:, 8:]
    assert (out.double() - want).abs().max().item() < TOL


@pytest.mark.parametrize("sampling", KERNEL_SAMPLINGS, ids=lambda s: s.describe())
def test_numba_cuda_generates_the_same_samples_as_torch(sampling: SamplingConfig, mapping: str,
                                                        rng: torch.Generator) -> None:
    """40 classes: the nucleus candidates come from both warps of a block."""
    model = random_sequnet((4, 2, 1, 3), 40, rng)
    with torch.no_grad():
        model.head.weight.mul_(4.0)  # peaked distributions: nuclei of a few classes
    want = generated(model, "torch", 2, sampling, 11, (5, 7), capacity="period")
    assert torch.equal(generated(model, "numba-cuda", 2, sampling, 11, (5, 7),
                                 capacity="period"), want)
    assert len(want.unique()) > 1 or sampling.greedy


# WaveNets (blocks, layers, kernel, residual, dilation, skip channels): kernels 2 and 3, one
# block and two (the skip sum's first and last layers in different blocks), a single layer
WAVENETS = [(1, 3, 2, 4, 5, 6), (2, 2, 3, 3, 4, 5), (1, 1, 2, 2, 3, 4)]


@pytest.mark.parametrize("cfg", WAVENETS, ids=lambda c: "B{}-L{}-k{}-R{}-D{}-S{}".format(*c))
def test_numba_cuda_runs_wavenets_equal_to_offline(cfg: tuple, rng: torch.Generator) -> None:
    model = WaveNet(WaveNetConfig(*cfg, classes=16))
    randomize_(model, rng)
    model.eval()
    x = torch.randint(0, 16, (1, 2 * cfg[1] + 7), generator=rng)
    engine = StreamingEngine(model, 1, backend="numba-cuda", capacity="period")
    out = feed_in_chunks(engine, x, 5)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


def test_numba_cuda_wavenet_samples_equal_torch(rng: torch.Generator) -> None:
    model = WaveNet(WaveNetConfig(1, 2, 2, 3, 4, 5, classes=16))
    randomize_(model, rng, scale=2.0)
    want = generated(model.eval(), "torch", 2, SamplingConfig(top_p=0.9), 3, (4, 5),
                     capacity="period")
    assert torch.equal(generated(model, "numba-cuda", 2, SamplingConfig(top_p=0.9), 3, (4, 5),
                                 capacity="period"), want)
    assert len(want.unique()) > 1


def test_numba_cuda_refuses_what_it_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                               rng: torch.Generator) -> None:
    tcn = TCN(TCNConfig(channels=4, levels=2, kernel_size=3, classes=16))
    with pytest.raises(ValueError, match="plans of gated layers.*backend='torch'"):
        StreamingEngine(tcn, 1, backend="numba-cuda", capacity="period")
    refusal = r"capacity='period'\); use the torch backend \(backend='torch', --backend torch\)$"
    with pytest.raises(ValueError, match=refusal):
        StreamingEngine(random_sequnet((4, 2, 1, 3), 16, rng), 1, backend="numba-cuda",
                        capacity="double")
    monkeypatch.setattr("streamgen.engine.gpu.cuda_executor.simulating", lambda: False)
    with pytest.raises(ValueError, match="runs on a CUDA device, not 'cpu'"):
        StreamingEngine(random_sequnet((4, 2, 1, 3), 16, rng), 1, backend="numba-cuda",
                        capacity="period")


@pytest.mark.parametrize("threads", [64, 40])
def test_simulated_warp_collectives_reduce_and_scan_like_numpy(threads: int) -> None:
    """The kernels' warp reductions and scan, two warps (the second whole or of 8 lanes): as
    their shuffles compute them on the simulator (``cudasim.SHUFFLED``) and as the kernels run
    there (one barrier each), bit for bit, and like numpy."""
    from streamgen.engine.gpu import cuda_kernels as ck
    from streamgen.engine.gpu.cudasim import SHUFFLED, install

    install()
    ways = {"replayed": (ck.warp_sum, ck.warp_max, ck.warp_argmax, ck.warp_scan),
            "shuffled": tuple(SHUFFLED[name] for name in ("warp_sum", "warp_max",
                                                          "warp_argmax", "warp_scan"))}
    rng = np.random.default_rng(threads)
    ties = rng.integers(-5, 5, threads).astype(np.float32)  # argmax keeps the lowest index
    spread = (rng.standard_normal(threads) * 10 ** rng.uniform(-3, 3, threads)).astype(np.float32)
    idx = np.arange(threads, dtype=np.int64)
    for v in (ties, spread):
        got = {}
        for way, (wsum, wmax, wargmax, wscan) in ways.items():

            @cuda.jit
            def probe(v, idx, sums, maxes, best, scans):
                t = cuda.threadIdx.x
                sums[t] = wsum(v[t])
                maxes[t] = wmax(v[t])
                best[t] = wargmax(v[t], idx[t])[1]
                scans[t] = wscan(idx[t] % 3 + v[t], t % 32)

            got[way] = outs = (np.zeros(threads, np.float32), np.zeros(threads, np.float32),
                               np.zeros(threads, np.int64), np.zeros(threads, np.float32))
            probe[1, threads](v, idx, *outs)
        for replayed, shuffled in zip(got["replayed"], got["shuffled"]):
            assert np.array_equal(replayed, shuffled)
        sums, maxes, best, scans = got["replayed"]
        for w in range(threads // 32):  # whole warps (a partial one's shuffles read their own)
            lanes = slice(32 * w, 32 * w + 32)
            assert np.allclose(sums[lanes], v[lanes].sum(dtype=np.float64), rtol=1e-5)
            assert np.all(maxes[lanes] == v[lanes].max())
            assert np.all(best[lanes] == 32 * w + np.argmax(v[lanes]))
            assert np.allclose(scans[lanes], np.cumsum(idx[lanes] % 3 + v[lanes], dtype=np.float64),
                               rtol=1e-5, atol=1e-3)


def _pass(barrier) -> None:
    """One round of ``barrier``: a ``cudasim.SplitBarrier``'s two halves, or ``wait``."""
    if hasattr(barrier, "arrive"):
        barrier.arrive()
    barrier.wait()


@pytest.mark.parametrize("kind", ["Barrier", "SplitBarrier"])
def test_simulated_barriers_hold_every_round_and_break_on_abort(kind: str) -> None:
    """``cudasim.Barrier`` (grid and block barriers) and ``SplitBarrier`` (a cluster's arrive
    and wait): no thread leaves a round before every one has arrived, over many rounds; an
    abort wakes the waiters with ``BrokenBarrierError``, and later waits raise it."""
    import threading
    import time

    from streamgen.engine.gpu import cudasim

    kind = getattr(cudasim, kind)
    parties, rounds = 13, 200
    barrier, arrived, seen, counting = kind(parties), [0] * rounds, [], threading.Lock()

    def run() -> None:
        for r in range(rounds):
            with counting:
                arrived[r] += 1
            _pass(barrier)
            seen.append(arrived[r])

    threads = [threading.Thread(target=run, daemon=True) for _ in range(parties)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(seen) == parties * rounds and set(seen) == {parties}
    assert len(getattr(barrier, "_gates", ())) <= 2  # a split barrier keeps no old rounds

    barrier, errors = kind(3), []

    def wait() -> None:
        try:
            _pass(barrier)
        except threading.BrokenBarrierError as e:
            errors.append(e)

    waiters = [threading.Thread(target=wait, daemon=True) for _ in range(2)]
    for t in waiters:
        t.start()
    time.sleep(0.2)
    barrier.abort()
    barrier.abort()  # a second failing thread aborts again
    for t in waiters:
        t.join(10)
    assert len(errors) == 2 and not any(t.is_alive() for t in waiters)
    with pytest.raises(threading.BrokenBarrierError):
        _pass(barrier)

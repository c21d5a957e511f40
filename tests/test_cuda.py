"""The engine on a CUDA GPU (skipped, with the reason, on machines without one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import generated, randomize_
from engine_reference import reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.engine import available_backends
from streamgen.engine.gpu import numba_cuda_available, triton_available
from streamgen.nn import SeqUNet, SeqUNetConfig, WaveNet, WaveNetConfig

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
CLASSES = 32


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("kind", ["sequnet", "wavenet"])
def test_cuda_engine_equals_offline(kind: str, batch: int, rng: torch.Generator) -> None:
    if kind == "sequnet":
        model = SeqUNet(SeqUNetConfig(8, 4, 2, 5, classes=CLASSES))
    else:
        model = WaveNet(WaveNetConfig(2, 4, 2, 6, 5, 12, classes=CLASSES))
    randomize_(model, rng)
    x = torch.randint(0, CLASSES, (batch, 70), generator=rng)
    engine = StreamingEngine(model.cuda().eval(), batch, backend="torch")
    assert engine.device.type == "cuda"
    out = torch.empty(batch, 70, CLASSES, device="cuda")
    engine.feed(x.cuda(), out)
    engine.reset([0])
    want = reference_logits(model.cpu(), x)
    assert (out.cpu().double() - want).abs().max().item() < 1e-4


def test_cuda_half_precision_is_close(rng: torch.Generator) -> None:
    model = SeqUNet(SeqUNetConfig(8, 4, 2, 5, classes=CLASSES))
    randomize_(model, rng)
    x = torch.randint(0, CLASSES, (2, 60), generator=rng)
    engine = StreamingEngine(model.cuda().eval(), 2, dtype=torch.float16)
    out = torch.empty(2, 60, CLASSES, device="cuda", dtype=torch.float16)
    engine.feed(x.cuda(), out)
    assert (out.float().cpu().double() - reference_logits(model.cpu(), x)).abs().max().item() < 5e-2


def test_cuda_generation_is_reproducible(rng: torch.Generator) -> None:
    model = SeqUNet(SeqUNetConfig(8, 3, 1, 3, classes=CLASSES)).cuda().eval()
    runs = []
    for _ in range(2):
        engine = StreamingEngine(model, 2)
        runs.append(engine.generate(200, engine.sampler(SamplingConfig(top_p=0.9), seed=3)).cpu())
    assert torch.equal(runs[0], runs[1])


# -- the Triton executor at real sizes ----------------------------------------------------
needs_triton = pytest.mark.skipif(not triton_available(), reason="triton is not installed")


@needs_triton
def test_cuda_noise_is_the_cpus_noise() -> None:
    """The sampler's noise drawn on the GPU by Triton's kernel: the CPU's numbers within
    float32 rounding of the logs (the uniforms are the same bits), at a large batch."""
    from streamgen.engine.noise import gumbel_into
    from streamgen.engine.sampling import Sampler

    sampler = Sampler(SamplingConfig(), 4096, 256, seed=2**40 + 7, device="cuda")
    got = torch.empty(3, 4096, 256, device="cuda")
    sampler.draw(2**32 - 1, got, stream=5)
    want = gumbel_into(2**40 + 7, 2**32 - 1, 5, np.empty((3, 4096, 256), np.float32))
    eps = np.finfo(np.float32).eps
    assert (np.abs(got.cpu().numpy() - want) <= 8 * eps * np.maximum(np.abs(want), 1)).all()


@needs_triton
@pytest.mark.parametrize("sampling", [SamplingConfig(), SamplingConfig(top_p=0.94),
                                      SamplingConfig(temperature=0.8, top_k=20, top_p=0.9)],
                         ids=lambda s: s.describe())
def test_cuda_fused_sampler_draws_torchs_samples(sampling: SamplingConfig,
                                                 rng: torch.Generator) -> None:
    """The fused kernel (its noise drawn in place) against torch's ops over the noise kernel's
    block, at 4,096 streams of 256 classes and steps across 2^32: the same classes, but for
    draws on the nucleus' edge, where the two sum the mass in different orders (at most 1 in
    10,000)."""
    from streamgen.engine.sampling import Sampler

    samplers = [Sampler(sampling, 4096, 256, seed=-5, device="cuda", fused=f)
                for f in (False, True)]
    for s in samplers:
        s.step = 2**32 - 8
    want, got = (torch.empty(4096, dtype=torch.int64, device="cuda") for _ in range(2))
    differ = 0
    for _ in range(16):
        logits = (torch.randn(4096, 256, generator=rng) * 2).cuda()
        samplers[0].sample(logits, want)
        samplers[1].sample(logits, got)
        differ += (want != got).sum().item()
    assert differ <= 6 and not {"noise", "scores", "mask"} & set(vars(samplers[1]))


DEFAULT = (32, 10, 2, 5)  # the shipped default's shape
PAPER = (180, 11, 2, 5)  # the paper-size Seq-U-Net


def _sequnet(cfg: tuple, rng: torch.Generator, classes: int = 256) -> SeqUNet:
    model = SeqUNet(SeqUNetConfig(*cfg, classes=classes))
    randomize_(model, rng, scale=0.2)
    return model.eval()


@pytest.mark.skipif(not (triton_available() or numba_cuda_available()),
                    reason="neither triton nor numba-cuda is installed")
def test_cuda_auto_picks_a_kernel_for_small_batches_and_graphs_beyond(rng: torch.Generator) -> None:
    kernels = [n for n, ok in (("triton", triton_available()),
                               ("numba-cuda", numba_cuda_available()),
                               ("numba-cuda-grid", numba_cuda_available())) if ok]
    wavenet_kernels = [n for n in kernels if n.startswith("numba-cuda")]  # not auto's choice
    fastest = "numba-cuda" if "numba-cuda" in kernels else "triton"
    model = _sequnet((8, 4, 2, 5), rng, CLASSES).cuda()
    assert StreamingEngine(model, 1).backend == fastest
    assert StreamingEngine(model, 64).backend == fastest
    assert StreamingEngine(model, 65).backend == "graphs"
    assert StreamingEngine(model, 1, dtype=torch.bfloat16).backend == "graphs"
    assert StreamingEngine(model, 65, capacity="double").backend == "torch"
    wavenet = WaveNet(WaveNetConfig(2, 4, 2, 6, 5, 12, classes=CLASSES)).cuda()
    assert StreamingEngine(wavenet, 1).backend == "graphs"
    assert available_backends(wavenet, "cuda") == ["torch", *wavenet_kernels, "graphs"]
    assert available_backends(model, "cuda") == ["torch", *kernels, "graphs"]


#: The persistent kernels of the latency regime (numba-cuda with each way of splitting a
#: gated layer, cuda_kernels.MAPPINGS; the grid kernel with each barrier,
#: grid_kernels.BARRIERS), each skipped where its tool is missing.
needs_numba_cuda = pytest.mark.skipif(not numba_cuda_available(),
                                      reason="numba-cuda is not installed")
needs_clusters = pytest.mark.skipif(
    not numba_cuda_available() or not torch.cuda.is_available()
    or torch.cuda.get_device_capability() < (9, 0),
    reason="numba-cuda or a GPU with thread-block clusters (Hopper or later) is missing")
KERNELS = [pytest.param("triton", marks=needs_triton),
           pytest.param("numba-cuda", marks=needs_numba_cuda),
           pytest.param("numba-cuda/rows", marks=needs_numba_cuda),
           pytest.param("numba-cuda-grid", marks=needs_numba_cuda),
           pytest.param("numba-cuda-grid/cooperative", marks=needs_numba_cuda),
           pytest.param("numba-cuda-grid/cluster", marks=needs_clusters),
           pytest.param("numba-cuda-grid/cluster+whole", marks=needs_clusters)]
VARIANTS = {"numba-cuda": "streamgen.engine.gpu.cuda_executor.CudaExecutor.mapping",
            "numba-cuda-grid": "streamgen.engine.gpu.grid_executor.GridExecutor.barrier"}
WHOLE_ENDS = "streamgen.engine.gpu.grid_executor.GridExecutor.whole_ends"


def _kernel(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The backend of a ``KERNELS`` entry, its variant (mapping, barrier; ``+whole``: the
    grid kernel's ``whole_ends``) set."""
    backend, _, variant = name.partition("/")
    variant, whole, _ = variant.partition("+whole")
    if variant:
        monkeypatch.setattr(VARIANTS[backend], variant)
    if whole:
        monkeypatch.setattr(WHOLE_ENDS, True)
    return backend


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("cfg,batch", [(DEFAULT, 1), (DEFAULT, 8), (PAPER, 1)],
                         ids=["default-b1", "default-b8", "paper-b1"])
def test_cuda_persistent_kernels_equal_offline_at_real_sizes(backend: str, cfg: tuple,
                                                             batch: int,
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             rng: torch.Generator) -> None:
    backend = _kernel(backend, monkeypatch)
    model = _sequnet(cfg, rng)
    n = 2 * model.period + 37  # every phase, ring rewinds, several launches
    x = torch.randint(0, 256, (batch, n), generator=rng)
    engine = StreamingEngine(model.cuda(), batch, backend=backend, capacity="period")
    assert engine.backend == backend
    out = torch.empty(batch, n, 256, device="cuda")
    for i in range(0, n, 499):
        engine.feed(x[:, i : i + 499].cuda(), out[:, i : i + 499])
    want = reference_logits(model.cpu(), x)
    scale = max(1.0, want.abs().max().item())
    assert (out.cpu().double() - want).abs().max().item() < 1e-4 * scale


SAMPLINGS = [SamplingConfig(top_p=0.94), SamplingConfig(temperature=0.8, top_k=20),
             SamplingConfig(greedy=True)]


@pytest.mark.parametrize("backend", KERNELS)
@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: s.describe())
def test_cuda_persistent_kernels_generate_the_same_samples_as_torch(
        backend: str, sampling: SamplingConfig, monkeypatch: pytest.MonkeyPatch,
        rng: torch.Generator) -> None:
    backend = _kernel(backend, monkeypatch)
    model = _sequnet(DEFAULT, rng).cuda()
    assert torch.equal(generated(model, "torch", 2, sampling, 5, (300, 700)),
                       generated(model, backend, 2, sampling, 5, (300, 700)))


@needs_clusters
def test_cuda_grid_kernel_stops_when_not_launched_in_clusters(monkeypatch: pytest.MonkeyPatch,
                                                              rng: torch.Generator) -> None:
    """Compiled without its cluster dimensions (a block size no other test compiles), the
    kernel finds clusters of one block, stops, and the engine call says so; with them, the
    same kernel runs."""
    from contextlib import nullcontext

    monkeypatch.setattr("streamgen.engine.gpu.grid_executor.GridExecutor.barrier", "cluster")
    monkeypatch.setattr("streamgen.engine.gpu.grid_executor.GridExecutor.threads", 96)
    model = _sequnet(DEFAULT, rng).cuda()
    x = torch.randint(0, 256, (1, 40), generator=rng, device="cuda")
    with monkeypatch.context() as m:
        m.setattr("streamgen.engine.gpu.cluster.compiled_in_clusters", lambda blocks: nullcontext())
        engine = StreamingEngine(model, 1, backend="numba-cuda-grid", capacity="period")
        with pytest.raises(ValueError, match="did not run the numba-cuda-grid kernel in clusters"):
            engine.feed(x)
    monkeypatch.setattr("streamgen.engine.gpu.grid_executor.GridExecutor.threads", 160)
    engine = StreamingEngine(model, 1, backend="numba-cuda-grid", capacity="period")
    engine.feed(x)  # compiled in clusters: no error


# -- the CUDA-graph executor (the throughput regime) -------------------------------------
def _wavenet(rng: torch.Generator) -> WaveNet:
    model = WaveNet(WaveNetConfig(2, 10, 2, 32, 32, 64, classes=256))
    randomize_(model, rng, scale=0.2)
    return model.eval()


def _feed(engine: StreamingEngine, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Logits of every step, fed ``chunk`` steps at a time (blocks straddling segments)."""
    out = torch.empty(*x.shape, 256, device=engine.device, dtype=engine.dtype)
    for i in range(0, x.shape[1], chunk):
        engine.feed(x[:, i : i + chunk].to(engine.device), out[:, i : i + chunk])
    return out.cpu().double()


@pytest.mark.parametrize("backend", [
    pytest.param("numba-cuda", marks=needs_numba_cuda),
    pytest.param("numba-cuda-grid", marks=needs_numba_cuda),
    pytest.param("numba-cuda-grid/cluster", marks=needs_clusters)])
def test_cuda_numba_cuda_runs_a_wavenet_equal_to_offline_and_torch(
        backend: str, monkeypatch: pytest.MonkeyPatch, rng: torch.Generator) -> None:
    """The numba-cuda kernels' WaveNet layers (dilated taps, residual, skip sum, two-layer
    head) at a real size: logits against the float64 pass, samples against torch's."""
    backend = _kernel(backend, monkeypatch)
    model = _wavenet(rng)
    engine = StreamingEngine(model.cuda(), 2, backend=backend)
    x = torch.randint(0, 256, (2, 1500), generator=rng)
    got = _feed(engine, x, 499)
    want = reference_logits(model.cpu(), x)
    assert (got - want).abs().max().item() < 1e-4 * max(1.0, want.abs().max().item())
    sampling = SamplingConfig(top_p=0.94)
    assert torch.equal(generated(model.cuda(), "torch", 2, sampling, 5, (300, 700)),
                       generated(model.cuda(), backend, 2, sampling, 5, (300, 700)))


@pytest.mark.parametrize("kind", ["default", "wavenet", "default-fused"])
def test_cuda_graphs_equal_offline_at_real_sizes(kind: str, monkeypatch: pytest.MonkeyPatch,
                                                 rng: torch.Generator) -> None:
    """``default-fused``: each gated layer's product and gating as one Triton kernel
    (``GraphExecutor.fused_gate``)."""
    if kind.endswith("fused"):
        if not triton_available():
            pytest.skip("triton is not installed")
        monkeypatch.setattr("streamgen.engine.gpu.graphs.GraphExecutor.fused_gate", True)
    model = _wavenet(rng) if kind == "wavenet" else _sequnet(DEFAULT, rng)
    engine = StreamingEngine(model.cuda(), 4, backend="graphs")
    assert engine.program.capacity == "period"
    n = 2 * engine.program.graph_period + 37  # every segment recorded, then replayed
    x = torch.randint(0, 256, (4, n), generator=rng)
    got = _feed(engine, x, 333)
    segments = engine.program.graph_period // 64
    assert sorted(engine.executor.recorded) == [("feed+logits", j) for j in range(segments)]
    want = reference_logits(model.cpu(), x)
    scale = max(1.0, want.abs().max().item())
    assert (got - want).abs().max().item() < 1e-4 * scale


@pytest.mark.parametrize("sampling", SAMPLINGS, ids=lambda s: s.describe())
def test_cuda_graphs_generate_the_same_samples_as_torch(sampling: SamplingConfig,
                                                        rng: torch.Generator) -> None:
    model = _sequnet(DEFAULT, rng).cuda()
    chunks = (100, 64, 300, 700)  # blocks from mid-segment, every segment recorded and replayed
    assert torch.equal(generated(model, "torch", 3, sampling, 5, chunks),
                       generated(model, "graphs", 3, sampling, 5, chunks))


@pytest.mark.parametrize("fused", [False, True], ids=["torch-gates", "fused-gates"])
def test_cuda_graphs_in_bfloat16_are_close(fused: bool, monkeypatch: pytest.MonkeyPatch,
                                           rng: torch.Generator) -> None:
    """bfloat16 keeps 8 bits of mantissa: within 2e-2 of the float64 pass (the same engine in
    bfloat16 on the CPU was within 4e-3 on logits of magnitude 0.6), with torch's gating or
    the fused Triton kernel's (bfloat16 products on tensor cores)."""
    if fused and not triton_available():
        pytest.skip("triton is not installed")
    monkeypatch.setattr("streamgen.engine.gpu.graphs.GraphExecutor.fused_gate", fused)
    model = _sequnet(DEFAULT, rng)
    engine = StreamingEngine(model.cuda(), 4, dtype=torch.bfloat16, backend="graphs")
    n = 2 * engine.program.graph_period + 37
    x = torch.randint(0, 256, (4, n), generator=rng)
    got = _feed(engine, x, 499)
    want = reference_logits(model.cpu(), x)
    assert (got - want).abs().max().item() < 2e-2 * max(1.0, want.abs().max().item())


def test_cuda_audio_blocks_come_back_through_pinned_memory(rng: torch.Generator) -> None:
    """AudioGenerator's device-to-host path (bytes through a pinned buffer) gives the decoded
    classes the engine drew, block after block."""
    from streamgen.audio.mulaw import mulaw_decode
    from streamgen.generation import AudioGenerator

    model = _sequnet(DEFAULT, rng)
    gen = AudioGenerator(model, batch=2, device="cuda", seed=7)
    got = np.concatenate([gen(n) for n in (500, 777)], axis=1)
    assert gen._host.is_pinned() and gen._host.dtype == torch.uint8
    engine = StreamingEngine(model.cuda(), 2)
    sampler = engine.sampler(SamplingConfig(), seed=7)
    want = mulaw_decode(torch.cat([engine.generate(n, sampler) for n in (500, 777)], 1).cpu().numpy())
    assert np.array_equal(got, want)

"""Shared fixtures: fresh random seeds per test, small network factories."""

from __future__ import annotations

import functools
import os
import zlib

import numpy as np
import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

# Triton and numba fix their modes (compiled for a GPU, or run on the CPU) for the whole process
# when first imported: without a GPU, Triton's kernels run through its interpreter
# (tests/test_triton.py) and numba's CUDA kernels through its simulator (tests/test_cuda_sim.py).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

from streamgen.engine.sampling import SamplingConfig  # noqa: E402  (after the modes are set)

#: One of each rule the kernels' samplers compile separately: plain, temperature with top-k,
#: top-p, greedy
KERNEL_SAMPLINGS = [SamplingConfig(), SamplingConfig(temperature=0.7, top_k=5),
                    SamplingConfig(top_p=0.8), SamplingConfig(greedy=True)]


@functools.cache
def triton_interpreter_refusal() -> str | None:
    """Why Triton's kernels cannot run through its interpreter in this session (None if they
    can): triton missing, Triton compiling for a GPU, or an interpreter that fails on a loop
    over an integer argument (Triton 3.6's with numpy 2.4, which refuses its ``int()`` of
    one-element arrays)."""
    from streamgen.engine.gpu import interpreting, triton_available

    if not triton_available():
        return "triton is not installed"
    if not interpreting():
        return "Triton compiles for the GPU in this session: test_cuda covers it"
    import numpy as np
    import triton
    import triton.language as tl

    @triton.jit
    def count_up(out_ptr, n):
        for i in range(n):
            tl.store(out_ptr + i, i)

    out = torch.zeros(3, dtype=torch.int32)
    try:
        count_up[(1,)](out, 3)
    except Exception as e:  # noqa: BLE001 - whatever the interpreter raises, name it
        return (f"Triton {triton.__version__}'s interpreter fails on a loop over an integer "
                f"argument with numpy {np.__version__} ({type(e).__name__}): Triton 3.7 or "
                "later, or numpy before 2.4, runs these tests")
    assert out.tolist() == [0, 1, 2]
    return None


@pytest.fixture
def one_thread():
    """Tiny models run fastest on one thread, and do not stall when the cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> torch.Generator:
    """A generator seeded from the test's id: fresh per test, reproducible on rerun.

    ``STREAMGEN_TEST_SEED=n`` shifts every seed, to explore other draws.
    (crc32, not ``hash()``: string hashes change with every interpreter.)
    """
    seed = zlib.crc32(request.node.nodeid.encode()) + int(os.environ.get("STREAMGEN_TEST_SEED", 0))
    return torch.Generator().manual_seed(seed % 2**31)


@pytest.fixture
def np_rng(rng: torch.Generator) -> np.random.Generator:
    """numpy's generator, seeded like ``rng`` (from the test's id)."""
    return np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=rng)))


def randomize_(module: torch.nn.Module, generator: torch.Generator, scale: float = 0.5) -> None:
    """Overwrite every parameter with fresh N(0, scale^2 / fan) values (biases included)."""
    with torch.no_grad():
        for p in module.parameters():
            fan = p[0].numel() if p.dim() > 1 else 1
            p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype) * scale / fan**0.5)


def random_onehot(batch: int, length: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    idx = torch.randint(0, classes, (batch, length), generator=generator)
    return torch.nn.functional.one_hot(idx, classes).transpose(1, 2).to(torch.float64)


def random_sequnet(cfg: tuple, classes: int, generator: torch.Generator):
    """A ``SeqUNet`` of (channels, levels, depth, kernel) with fresh random weights, in eval
    mode."""
    from streamgen.nn import SeqUNet, SeqUNetConfig

    channels, levels, depth, kernel = cfg
    model = SeqUNet(SeqUNetConfig(channels, levels, depth, kernel, classes=classes))
    randomize_(model, generator)
    return model.eval()


def generated(model: torch.nn.Module, backend: str, batch: int, sampling, seed: int,
              chunks: tuple[int, ...], **engine_options) -> torch.Tensor:
    """Free-running classes (B, sum(chunks)) from a fresh engine on ``backend``, generated
    ``chunks`` steps at a time from one sampler of ``sampling`` seeded ``seed``."""
    from streamgen.engine import StreamingEngine  # after the modes above are set

    engine = StreamingEngine(model, batch, backend=backend, **engine_options)
    assert engine.backend == backend
    sampler = engine.sampler(sampling, seed=seed)
    return torch.cat([engine.generate(n, sampler) for n in chunks], 1).cpu()


def feed_in_chunks(engine, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """Teacher-forced logits (B, N, classes) of ``x`` (B, N), fed ``chunk`` steps at a time."""
    out = torch.empty(x.shape[0], x.shape[1], engine.classes)
    for i in range(0, x.shape[1], chunk):
        engine.feed(x[:, i : i + chunk], out[:, i : i + chunk])
    return out

"""The Triton executor's kernel on the CPU, through Triton's interpreter (``TRITON_INTERPRET=1``).

The interpreter runs the very kernel the GPU compiles, one Triton program per stream, slowly:
the configurations here are small. Teacher-forced logits are compared with the float64
offline pass, free-running samples with the torch backend's for the same seed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import (KERNEL_SAMPLINGS, feed_in_chunks, generated, random_sequnet,
                      triton_interpreter_refusal)
from engine_reference import reference_logits
from streamgen.engine import SamplingConfig, StreamingEngine
from streamgen.engine.engine import numba_available
from streamgen.nn import WaveNet, WaveNetConfig

# conftest sets TRITON_INTERPRET=1 where no GPU is visible; Triton fixes its mode per process
pytestmark = pytest.mark.skipif(triton_interpreter_refusal() is not None,
                                reason=str(triton_interpreter_refusal()))
CLASSES = 32
TOL = 1e-4


# (channels, levels, depth, kernel, batch, chunk): levels 1..4, kernels 3/5/7, a width equal
# to the class count, batch 1 and 3, chunks of 1 and of primes
CONFIGS = [
    (4, 1, 1, 3, 1, 7),
    (6, 2, 2, 5, 3, 1),
    (5, 3, 1, 7, 1, 13),
    (CLASSES, 2, 1, 3, 1, 5),
    (8, 4, 1, 3, 3, 11),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "C{}-L{}-D{}-k{}-b{}-chunk{}".format(*c))
def test_triton_engine_equals_offline(cfg: tuple, rng: torch.Generator) -> None:
    *net, batch, chunk = cfg
    model = random_sequnet(tuple(net), CLASSES, rng)
    n = 2 * model.period + 9  # every phase, a ring rewind and a partial block
    x = torch.randint(0, CLASSES, (batch, n), generator=rng)
    engine = StreamingEngine(model, batch, backend="triton", capacity="period")
    assert engine.backend == "triton"
    out = feed_in_chunks(engine, x, chunk)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


def test_triton_state_continues_after_prime_and_reset(rng: torch.Generator) -> None:
    """Rings primed by the offline capture (off the ring schedule) and a stream reset mid-run
    stay exact."""
    model = random_sequnet((6, 3, 1, 5), CLASSES, rng)
    x = torch.randint(0, CLASSES, (2, 30), generator=rng)
    engine = StreamingEngine(model, 2, backend="triton", capacity="period")
    engine.prime(x[:, :12])
    engine.reset([1])
    out = feed_in_chunks(engine, x[:, 12:], 6)
    want = reference_logits(model, x, starts=[0, 12])[:, 12:]
    assert (out.double() - want).abs().max().item() < TOL


def test_triton_layers_in_tiles_of_16_outputs(monkeypatch: pytest.MonkeyPatch,
                                              rng: torch.Generator) -> None:
    """Gated layers of 20 outputs in tiles of 16 (``TritonExecutor.block_o``, a probe's knob):
    a whole tile and a ragged one per layer."""
    monkeypatch.setattr("streamgen.engine.gpu.triton_executor.TritonExecutor.block_o", 16)
    model = random_sequnet((20, 2, 1, 3), CLASSES, rng)
    x = torch.randint(0, CLASSES, (2, model.period + 5), generator=rng)
    engine = StreamingEngine(model, 2, backend="triton", capacity="period")
    assert engine.executor.blocks["BLOCK_O"] == 16
    out = feed_in_chunks(engine, x, 7)
    assert (out.double() - reference_logits(model, x)).abs().max().item() < TOL


@pytest.mark.parametrize("sampling", KERNEL_SAMPLINGS, ids=lambda s: s.describe())
def test_triton_generates_the_same_samples_as_torch(sampling: SamplingConfig,
                                                    rng: torch.Generator) -> None:
    model = random_sequnet((8, 3, 1, 3), CLASSES, rng)
    want = generated(model, "torch", 2, sampling, 11, (9, 14), capacity="period")
    assert torch.equal(generated(model, "triton", 2, sampling, 11, (9, 14),
                                 capacity="period"), want)
    assert len(want.unique()) > 1 or sampling.greedy


def test_triton_refuses_what_it_cannot_run(monkeypatch: pytest.MonkeyPatch,
                                           rng: torch.Generator) -> None:
    wavenet = WaveNet(WaveNetConfig(1, 3, 2, 4, 4, 8, classes=CLASSES))
    with pytest.raises(ValueError, match="plans of gated layers.*backend='torch'"):
        StreamingEngine(wavenet, 1, backend="triton")
    # auto takes the CPU's kernel for a WaveNet, and never the interpreter on the CPU
    assert StreamingEngine(wavenet, 1).backend == ("numba" if numba_available() else "torch")
    small = random_sequnet((4, 2, 1, 3), CLASSES, rng)
    assert StreamingEngine(small, 1, backend="auto").backend != "triton"
    refusal = r"capacity='period'\); use the torch backend \(backend='torch', --backend torch\)$"
    with pytest.raises(ValueError, match=refusal):
        StreamingEngine(small, 1, backend="triton", capacity="double")
    monkeypatch.setattr("streamgen.engine.gpu.triton_executor.interpreting", lambda: False)
    with pytest.raises(ValueError, match="runs on a CUDA device, not 'cpu'"):
        StreamingEngine(small, 1, backend="triton", capacity="period")


def test_triton_kernels_compile_for_hopper() -> None:
    """The interpreter runs the kernels as Python; this compiles them for an H100 (sm_90) down
    to cubins, in a fresh process (Triton's mode is fixed per process): the persistent
    kernel's three variants, the fused gate in float32 and bfloat16, the sampler's noise
    kernel and the fused sampler's four variants, none spilling."""
    script = Path(__file__).with_name("triton_compile.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, str(script), "90"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("compiled")]
    assert len(lines) == 11 and sum("fused_gate" in ln for ln in lines) == 2
    assert sum("gumbel_kernel" in ln for ln in lines) == 1
    assert sum("sample_kernel" in ln for ln in lines) == 4
    assert all(" 0 bytes spill stores" in ln for ln in lines), done.stdout


@pytest.mark.parametrize("shape, seed, step, stream", [
    ((3, 2, 256), 5, 2**32 - 2, 3), ((2, 3, 7), -1, 10, 0), ((1, 1, 1), 2**63 + 5, 0, 9),
    ((2, 2, 10), 2**31 + 3, 7, 1)])
def test_triton_noise_kernel_draws_the_cpus_noise(shape, seed: int, step: int,
                                                  stream: int) -> None:
    """The GPU's noise kernel, through the interpreter, gives the CPU's numbers (the same
    uniforms; numpy takes the logs in both here): seeds past 31 and 63 bits and negative,
    steps across 2^32, class counts that fill no quad."""
    import numpy as np

    from streamgen.engine import noise
    from streamgen.engine.gpu import noise_kernel

    got = noise_kernel.gumbel_into(seed, step, stream, torch.empty(shape)).numpy()
    assert np.array_equal(got, noise.gumbel_into(seed, step, stream, np.empty(shape, np.float32)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_cuda_device_without_a_gpu_is_a_one_line_error(rng: torch.Generator) -> None:
    with pytest.raises(ValueError, match=r"^device 'cuda' asked for, but .*use --device cpu$"):
        StreamingEngine(random_sequnet((4, 2, 1, 3), CLASSES, rng), 1, device="cuda")

"""Device names -> torch devices, with CUDA availability faked so the CUDA rules run on a CPU."""

from __future__ import annotations

import pytest
import torch

from streamgen.devices import DeviceError, resolve_device


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch):
    """Pretend ``n`` CUDA GPUs are visible (a CUDA build of torch included)."""

    def fake(n: int, capability: tuple[int, int] = (9, 0),
             arches: tuple[str, ...] = ("sm_80", "sm_90")) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.version, "cuda", "12.8")
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
        monkeypatch.setattr(torch.cuda, "get_arch_list", lambda: list(arches))
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Fake GPU")

    return fake


@pytest.mark.parametrize("name,rank,expected", [
    ("auto", 0, "cuda:0"), (None, 1, "cuda:1"), ("cuda", 0, "cuda:0"), ("cuda", 1, "cuda:1"),
    ("cuda:1", 0, "cuda:1"), ("cpu", 1, "cpu"), (torch.device("cuda"), 1, "cuda:1"),
])
def test_cuda_devices_always_get_an_index(gpus, name, rank, expected) -> None:
    gpus(2)
    device = resolve_device(name, local_rank=rank)
    assert device == torch.device(expected)
    assert device.type == "cpu" or device.index is not None


def test_auto_is_the_cpu_without_a_gpu(gpus) -> None:
    gpus(0)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")


@pytest.mark.parametrize("gpu_count,cuda_build,name,needle", [
    (0, None, "cuda", "CPU-only build; install a CUDA build of torch"),
    (0, "12.8", "cuda:0", "no CUDA GPU is usable"),
    (2, "12.8", "cuda:2", "cuda:2 does not exist: 2 CUDA GPU(s) visible (cuda:0 to cuda:1)"),
    (2, "12.8", "cuda", "cuda:3 does not exist"),  # local rank 3 of a 2-GPU machine
    (1, "12.8", "tpu", "unknown device 'tpu'"),
    (1, "12.8", "cuda:x", "unknown device 'cuda:x'"),
    (1, "12.8", "meta", "device 'meta' is not supported"),
])
def test_unusable_devices_are_one_line_errors(monkeypatch, gpus, gpu_count, cuda_build, name, needle) -> None:
    gpus(gpu_count)
    monkeypatch.setattr(torch.version, "cuda", cuda_build)
    with pytest.raises(DeviceError) as err:
        resolve_device(name, local_rank=3 if name == "cuda" and gpu_count else 0)
    message = str(err.value)
    assert needle in message and "\n" not in message
    assert "--device" in message  # names the option that fixes it


@pytest.mark.parametrize("capability, arches, runs", [
    ((9, 0), ("sm_80", "sm_90"), True), ((8, 9), ("sm_80", "sm_86"), True),  # 8.6 cubins on 8.9
    ((12, 0), ("sm_80", "sm_90"), False), ((12, 0), ("sm_90", "compute_90"), True),  # PTX JIT
    ((6, 1), ("sm_70", "sm_80"), False), ((9, 0), ("sm_90a",), True), ((10, 0), ("sm_90a",), False),
    ((8, 0), ("sm_86",), False), ((7, 5), ("compute_80",), False), ((9, 0), ("compute_90",), True),
    ((8, 6), ("sm_87",), False), ((8, 6), ("sm_80",), True),
    ((9, 0), ("sm_x", "compute_9", "sm_90"), True),  # names it cannot read are skipped
])
def test_a_gpu_this_torch_has_no_kernels_for_is_a_one_line_error(
        gpus, capability: tuple, arches: tuple, runs: bool) -> None:
    """A GPU newer or older than the architectures torch was built for fails at its first
    kernel ('no kernel image is available'): named before any work, with the fix."""
    gpus(1, capability, arches)
    if runs:
        assert resolve_device("cuda") == torch.device("cuda", 0)
        return
    with pytest.raises(DeviceError) as err:
        resolve_device("auto")
    message = str(err.value)
    assert "\n" not in message and "Fake GPU, compute capability" in message
    assert f"{capability[0]}.{capability[1]}" in message and "--device cpu" in message


def test_training_gets_an_indexed_cuda_device(gpus, monkeypatch: pytest.MonkeyPatch) -> None:
    """train --device cuda (and auto on a GPU machine) once failed: torch.cuda.set_device and
    DDP need an index. Under torchrun, 'cuda' is this process's GPU, cuda:LOCAL_RANK."""
    from streamgen.train import loop

    gpus(2)
    chosen: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("WORLD_SIZE", "1")
    for local_rank, name, expected in [("0", "cuda", "cuda:0"), ("1", "cuda", "cuda:1"),
                                       ("1", None, "cuda:1"), ("0", "cuda:1", "cuda:1")]:
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        dist, device, started = loop._init_distributed(name)
        assert device == torch.device(expected) and chosen[-1] == device and not started
        assert device.index is not None and dist.local_rank == int(local_rank)
    gpus(0)
    assert loop._init_distributed(None)[1] == torch.device("cpu")
    with pytest.raises(DeviceError, match="--device cpu"):
        loop._init_distributed("cuda")

"""The benchmark suite end to end on a micro profile: every section present, consistent, written."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from conftest import triton_interpreter_refusal
from streamgen.bench.report import markdown, write_results
from streamgen.bench.suite import Profile, run_suite
from streamgen.engine import SamplingConfig
from streamgen.engine.cost import mean_macs
from streamgen.engine.engine import numba_available
from streamgen.nn import TCN, SeqUNet, SeqUNetConfig, TCNConfig, WaveNet, WaveNetConfig

MICRO = Profile("micro", gen_samples=64, repeats=1, recompute_steps=1, sequnet_levels=(2, 3),
                wavenet_layers=(2, 3), tcn_levels=(2, 3), batches=(1, 2), profile_steps=16, paper=False)


@pytest.mark.usefixtures("one_thread")
def test_micro_suite_reports_every_section(tmp_path: Path) -> None:
    model = SeqUNet(SeqUNetConfig(6, 3, 1, 3))
    sampling = SamplingConfig(top_p=0.9)
    results = run_suite(MICRO, default_model=("tiny", model), sampling=sampling, log=lambda s: None)
    backends = ["torch", "numba"] if numba_available() else ["torch"]

    rows = results["throughput"]
    assert [(r["sampling"], r["backend"]) for r in rows] == [(s, b) for s in ("plain", "top_p=0.9") for b in backends]
    assert all(r["model"] == "tiny" and r["receptive_field"] == model.receptive_field for r in rows)
    assert all(r["samples_per_s"] > 0 and r["realtime_factor"] == pytest.approx(r["samples_per_s"] / 16000)
               for r in rows)

    for family in ("Seq-U-Net", "WaveNet", "TCN"):
        scale = [r for r in results["scaling"] if r["family"] == family]
        assert [r["size"] for r in scale] == [2, 3]
        assert scale[0]["receptive_field"] < scale[1]["receptive_field"]
        assert scale[0]["macs_per_sample"] < scale[1]["macs_per_sample"]
        # the numba kernel runs every family
        assert all(("numba_us_per_sample" in r) == numba_available() for r in scale)
    seq = results["scaling"][0]
    assert seq["torch_us_per_sample"] == pytest.approx(1e6 / seq["torch_samples_per_s"])
    assert seq["recompute_us_per_sample"] > 0

    sweep = results["batch_sweep"]
    assert [(r["backend"], r["batch"]) for r in sweep] == [(b, n) for b in backends for n in (1, 2)]
    assert all(r["samples_per_s"] == pytest.approx(r["batch"] * r["per_stream_samples_per_s"]) for r in sweep)

    profile = results["step_profile"]
    assert profile["macs_mean"] == pytest.approx(mean_macs(model))
    assert profile["max_s"] >= profile["median_s"] > 0 and profile["macs_max"] > profile["macs_mean"]
    assert {r["backend"] for r in results["overhead"]} == set(backends)

    paths = write_results(results, tmp_path, "micro")
    assert json.loads((tmp_path / "micro.json").read_text())["throughput"] == json.loads(json.dumps(rows))
    text = (tmp_path / "micro.md").read_text()
    assert text == markdown(results) and "| tiny |" in text and "top_p=0.9" in text
    assert {p.name for p in paths} >= {"micro.json", "micro.md"}
    pytest.importorskip("matplotlib")
    assert (tmp_path / "micro_scaling.png").stat().st_size > 1000 and (tmp_path / "micro_batch.png").exists()


@pytest.mark.parametrize("kind", ["wavenet", "tcn"])
def test_suite_benchmarks_other_network_kinds(kind: str) -> None:
    """``bench --model`` takes any zoo model: the per-sample budget narrows a WaveNet's or a
    TCN's own widths for its skeleton (it built a Seq-U-Net from their configs and failed)."""
    model = (WaveNet(WaveNetConfig(1, 3, 2, 8, 8, 16)) if kind == "wavenet"
             else TCN(TCNConfig(8, 3, 3, 0.0)))
    results = run_suite(MICRO, default_model=(kind, model), log=lambda s: None)
    backends = ["torch", "numba"] if numba_available() else ["torch"]
    assert [r["backend"] for r in results["overhead"]] == backends
    assert all(r["us_per_sample"] > 0 and r["overhead_us"] > 0 for r in results["overhead"])
    assert results["throughput"][0]["model"] == kind


def test_paper_ratio_pairs_each_backend_with_itself() -> None:
    """Seq-U-Net over WaveNet on each backend that ran both: never across backends."""
    results = run_suite(MICRO, default_model=("tiny", SeqUNet(SeqUNetConfig(6, 3, 1, 3))),
                        log=lambda s: None)

    def row(kind: str, backend: str, rate: float) -> dict:
        return {"model": f"paper {kind}", "kind": kind, "params": 1, "receptive_field": 1,
                "backend": backend, "samples_per_s": rate, "realtime_factor": rate / 16000,
                "macs_per_sample": 10 if kind == "sequnet" else 30}

    # in any order (WaveNet first here); training is timed once per kind
    results["paper_comparison"] = [row("wavenet", "torch", 50), row("wavenet", "numba", 300),
                                   row("sequnet", "torch", 100), row("sequnet", "numba", 900),
                                   row("sequnet", "triton", 5000)]
    results["paper_comparison"][1]["training"] = {"seconds_median": 2.0, "out_len": 8}
    results["paper_comparison"][4]["training"] = {"seconds_median": 0.5, "out_len": 8}
    text = markdown(results)
    assert "each backend against itself: torch: 2.0x, numba: 3.0x." in text
    assert "Training step speed-up: 4.0x. MACs ratio: 3.00x." in text


@pytest.mark.usefixtures("one_thread")
def test_training_step_runs_in_a_fresh_process_on_the_suites_threads() -> None:
    from streamgen.bench.suite import training_step

    model = SeqUNet(SeqUNetConfig(6, 3, 1, 3))
    result = training_step("sequnet", {"channels": 6, "levels": 3, "depth": 1, "kernel_size": 3}, 20, repeats=1)
    assert result["threads"] == 1  # the parent's count: the suite states one thread
    assert result["out_len"] == model.training_output_length(20) and result["input_len"] == model.input_length(result["out_len"])
    assert result["seconds_median"] > 0 and result["peak_rss_mb"] >= result["rss_before_mb"] > 0


def test_gpu_benchmark_dry_run_reports_every_row(tmp_path: Path) -> None:
    """The GPU benchmark's code path on the CPU (Triton through its interpreter, the numba-cuda
    kernels through numba's simulator): every row measured or explained, the targets table filled
    (the Seq-U-Net / WaveNet ratios from rows of one executor), the report written."""
    if triton_interpreter_refusal():
        pytest.skip(triton_interpreter_refusal())
    from streamgen.bench.gpu import DRY_RUN, gpu_markdown, run_gpu_suite
    from streamgen.bench.report import write_json_md

    profile = dataclasses.replace(DRY_RUN, steps_torch=2, steps_triton=2, steps_large=2,
                                  triton_batches=())
    results = run_gpu_suite(profile, device="cpu", default_model=("tiny", SeqUNet(SeqUNetConfig(6, 2, 1, 3))),
                            sampling=SamplingConfig(top_p=0.9), log=lambda s: None)
    rows = results["rows"]
    assert [(r["model"], r["backend"], r["batch"]) for r in rows] == [
        ("default", "torch", 1), ("default", "triton", 1), ("default", "numba-cuda", 1),
        ("default", "numba-cuda-grid", 1), ("paper sequnet", "torch", 1),
        ("paper sequnet", "triton", 1), ("paper sequnet", "numba-cuda", 1),
        ("paper sequnet", "numba-cuda-grid", 1), ("paper wavenet", "torch", 1),
        ("paper wavenet", "numba-cuda", 1), ("paper wavenet", "numba-cuda-grid", 1),
        ("paper sequnet", "graphs", 1), ("paper wavenet", "graphs", 1), ("default", "torch", 3),
        ("paper sequnet", "torch", 3), ("paper wavenet", "torch", 3), ("paper wavenet", "torch", 3)
    ] + [(m, "graphs", 3) for m in ("default", "paper sequnet", "paper wavenet")] * 2 + [
        ("default", "graphs", 5), ("paper sequnet", "graphs", 5)]  # the scaling rows
    assert all(r["samples_per_s"] > 0 and "error" not in r for r in rows)
    assert [r["capacity"] for r in rows[-10:-8]] == ["double", "period"]
    assert [r["dtype"] for r in rows[-8:]] == ["float32"] * 3 + ["bfloat16"] * 5
    assert all(r["capacity"] == "period" for r in rows[-8:])
    assert all(t["measured"] is not None for t in results["targets"])
    ratios = {t["what"]: t["backend"] for t in results["targets"] if "/ WaveNet" in t["what"]}
    assert ratios["paper Seq-U-Net / WaveNet, latency"] in (
        "torch (float32)", "numba-cuda (float32)", "numba-cuda-grid (float32)",
        "graphs (float32)")
    assert re.fullmatch(r"(torch|graphs) \((float32|bfloat16), batch 3\)",
                        ratios["paper Seq-U-Net / WaveNet, throughput"])
    paths = write_json_md(results, gpu_markdown(results), tmp_path, "gpu-dry")
    assert json.loads(paths[0].read_text())["rows"] == rows
    assert "| paper Seq-U-Net / WaveNet, latency |" in paths[1].read_text()


@pytest.mark.parametrize("entry", ["cli", "run.py"])
def test_cuda_benchmarks_run_the_gpu_benchmark(entry: str, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``streamgen bench --device cuda`` and ``benchmarks/run.py --device cuda`` run the GPU
    benchmark (the CPU suite's per-op overhead method means nothing on a GPU), with the
    profile, model and folder asked for (the GPU itself faked)."""
    import streamgen.bench.gpu as gpu

    calls = []
    monkeypatch.setattr(gpu, "run_gpu_benchmark",
                        lambda **kw: calls.append(kw) or [tmp_path / "gpu.json"])
    if entry == "cli":
        from streamgen.cli import bench

        monkeypatch.setattr("streamgen.devices.resolve_device", lambda d: torch.device("cuda:0"))
        args = argparse.Namespace(device="cuda", quick=True, threads=1, model="default",
                                  out=tmp_path)
        assert bench.run(args) == 0
    else:
        spec = importlib.util.spec_from_file_location(
            "bench_run", Path(__file__).parents[1] / "benchmarks" / "run.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        monkeypatch.setattr(module, "run_gpu_benchmark", gpu.run_gpu_benchmark)
        monkeypatch.setattr(module, "resolve_device", lambda d: torch.device("cuda:0"))
        monkeypatch.setattr(sys, "argv", ["run.py", "--device", "cuda", "--quick",
                                          "--out", str(tmp_path)])
        module.main()
    assert [(c["quick"], c["model"], c["out"]) for c in calls] == [(True, "default", tmp_path)]
    assert calls[0]["device"].startswith("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is visible")
def test_benchmark_script_without_a_gpu_is_a_one_line_error() -> None:
    import subprocess

    script = Path(__file__).parents[1] / "benchmarks" / "run.py"
    done = subprocess.run([sys.executable, str(script), "--device", "cuda", "--quick"],
                          capture_output=True, text=True, timeout=120, cwd=Path(script).anchor)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "use --device cpu" in done.stderr


@pytest.mark.parametrize("multiple", [1, 64])
def test_timed_calls_take_about_the_seconds_asked(multiple: int) -> None:
    """``seconds`` sizes each timed call from a first call's pace: a slow row takes fewer
    steps than its cap (so a GPU suite's length stays bounded), a whole number of
    ``multiple`` steps, and at least the first call's."""
    from streamgen.bench.suite import generation_rate

    model = SeqUNet(SeqUNetConfig(4, 2, 1, 3, classes=16)).eval()
    row = generation_rate(model, backend="torch", n=20_000, repeats=1, seconds=0.05,
                          multiple=multiple)  # 20,000 steps: seconds on this machine
    assert max(64, multiple) <= row["steps"] < 20_000 and row["steps"] % multiple == 0
    capped = generation_rate(model, backend="torch", n=96, repeats=1, seconds=10.0)
    assert capped["steps"] == 96


def test_gpu_check_names_only_rows_the_probe_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lent GPU runs ``benchmarks/gpu_check.sh``: every probe row its two parts name exists,
    once in both, and a name the probe does not know stops it before any device work."""
    import subprocess

    root = Path(__file__).parents[1]
    spec = importlib.util.spec_from_file_location("gpu_probe", root / "benchmarks" / "gpu_probe.py")
    probe = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, probe)  # its dataclasses look their module up
    spec.loader.exec_module(probe)
    script = (root / "benchmarks" / "gpu_check.sh").read_text()
    names = [name for part in ("first", "second")
             for name in re.search(fr'\n{part}_rows="([^"]*)"', script).group(1).split(",")]
    assert len(names) == len(set(names)) and set(names) <= set(probe.ROWS), set(names) - set(probe.ROWS)
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "gpu_probe.py"), "--rows",
                           f"{names[0]},no-such-row", "--out", "/nonexistent"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown rows no-such-row;" in done.stderr, done.stderr

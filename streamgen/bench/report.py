"""Write suite results as JSON, a Markdown report and PNG plots."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    where = m.get("gpu") or m["processor"]
    lines = [
        f"# streamgen benchmark ({results['profile']})",
        "",
        f"Machine `{m['machine']}`: {where}; device `{m['device']}`, torch {m['torch']} "
        f"({m['torch_threads']} thread(s)), numba {m.get('numba', '-')}, "
        f"{results['started']} .. {results['finished']}. Medians of repeated runs after warm-up; "
        "real-time factor at 16 kHz; batch 1 unless stated.",
        "",
        "## Throughput",
        "",
        "| model | params | receptive field | backend | sampling | samples/s | real-time factor |",
        "|---|---:|---:|---|---|---:|---:|",
    ]
    for r in results["throughput"] + results.get("paper_comparison", []):
        lines.append(f"| {r['model']} | {r['params']:,} | {r['receptive_field']:,} | {r['backend']} "
                     f"| {r.get('sampling', 'plain')} "
                     f"| {_fmt(r['samples_per_s'])} | {r['realtime_factor']:.2f} |")
    paper = results.get("paper_comparison")
    if paper:
        lines += ["", "## Paper comparison: Seq-U-Net vs WaveNet (matched receptive field)", "",
                  "| model | MACs/sample | generation samples/s (backend) | training step s "
                  "(outputs) | peak memory MB |", "|---|---:|---:|---:|---:|"]
        for r in paper:
            t = r.get("training")
            mem = None if not t else t.get("peak_memory_mb", t.get("peak_rss_mb"))
            lines.append(f"| {r['model']} | {_fmt(r['macs_per_sample'])} | {_fmt(r['samples_per_s'])} "
                         f"({r['backend']}) | {_fmt(t and t['seconds_median'], 2)} "
                         f"({t['out_len'] if t else '-'}) | {_fmt(mem)} |")
        seq = {r["backend"]: r for r in paper if r["kind"] == "sequnet"}
        wav = {r["backend"]: r for r in paper if r["kind"] == "wavenet"}
        ratios = ", ".join(f"{b}: {seq[b]['samples_per_s'] / wav[b]['samples_per_s']:.1f}x"
                           for b in seq if b in wav)
        train = {r["kind"]: r["training"]["seconds_median"] for r in paper if r.get("training")}
        macs = {r["kind"]: r["macs_per_sample"] for r in paper}
        lines += ["", f"Generation speed-up of Seq-U-Net over WaveNet, each backend against "
                      f"itself: {ratios}."]
        if set(train) == {"sequnet", "wavenet"}:
            lines.append(f"Training step speed-up: {train['wavenet'] / train['sequnet']:.1f}x. "
                         f"MACs ratio: {macs['wavenet'] / macs['sequnet']:.2f}x.")
    lines += ["", "## Scaling with the receptive field (us per sample)", "",
              "| family | size | receptive field | MACs/sample | torch | numba | full recompute |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results["scaling"]:
        lines.append(f"| {r['family']} | {r['size']} | {r['receptive_field']:,} | {_fmt(r['macs_per_sample'])} "
                     f"| {_fmt(r.get('torch_us_per_sample'), 1)} | {_fmt(r.get('numba_us_per_sample'), 1)} "
                     f"| {_fmt(r.get('recompute_us_per_sample'), 0)} |")
    lines += ["", "## Batch sweep (aggregate samples/s)", "", "| backend | batch | samples/s | per stream |",
              "|---|---:|---:|---:|"]
    for r in results["batch_sweep"]:
        lines.append(f"| {r['backend']} | {r['batch']} | {_fmt(r['samples_per_s'])} "
                     f"| {_fmt(r['per_stream_samples_per_s'])} |")
    if "overhead" in results:
        lines += ["", "## Per-sample time budget: fixed overhead vs arithmetic (default architecture)", "",
                  "Overhead = the same layer graph at width 1 (no arithmetic to speak of); arithmetic = the rest.", "",
                  "| backend | us/sample | overhead us | arithmetic us | overhead share | GMAC/s in arithmetic |",
                  "|---|---:|---:|---:|---:|---:|"]
        for r in results["overhead"]:
            lines.append(f"| {r['backend']} | {r['us_per_sample']:.1f} | {r['overhead_us']:.1f} | "
                         f"{r['arithmetic_us']:.1f} | {r['overhead_share']:.0%} | "
                         f"{_fmt(r['gmacs_per_s'], 2)} |")
    p = results["step_profile"]
    lines += ["", "## Worst-case vs mean step (torch backend, default architecture)", "",
              f"mean {p['mean_s'] * 1e6:.0f} us, median {p['median_s'] * 1e6:.0f} us, "
              f"p99 {p['p99_s'] * 1e6:.0f} us, max {p['max_s'] * 1e6:.0f} us; clock-wrap steps "
              f"{_fmt(p['wrap_step_mean_s'] and p['wrap_step_mean_s'] * 1e6)} us on average. "
              f"MACs: mean {p['macs_mean']:,.0f}, worst step {p['macs_max']:,.0f} "
              f"({p['macs_max'] / p['macs_mean']:.1f}x).", ""]
    return "\n".join(lines)


def plots(results: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for family in ("Seq-U-Net", "WaveNet", "TCN"):
        rows = [r for r in results["scaling"] if r["family"] == family]
        rf = [r["receptive_field"] for r in rows]
        ax.plot(rf, [r["torch_us_per_sample"] for r in rows], "o-", label=f"{family} (torch)")
        if family == "Seq-U-Net":
            if rows and "numba_us_per_sample" in rows[0]:
                ax.plot(rf, [r["numba_us_per_sample"] for r in rows], "s-", label="Seq-U-Net (numba)")
            ax.plot(rf, [r["recompute_us_per_sample"] for r in rows], "^--", label="Seq-U-Net, full recompute")
    ax.set(xscale="log", yscale="log", xlabel="receptive field (samples)", ylabel="us per sample (batch 1)",
           title="Per-sample cost as the receptive field doubles")
    ax.axhline(1e6 / 16000, color="grey", ls=":", label="real time at 16 kHz")
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_dir / f"{stem}_scaling.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backend in sorted({r["backend"] for r in results["batch_sweep"]}):
        rows = [r for r in results["batch_sweep"] if r["backend"] == backend]
        ax.plot([r["batch"] for r in rows], [r["samples_per_s"] for r in rows], "o-", label=backend)
    ax.set(xscale="log", yscale="log", xlabel="streams (batch)", ylabel="aggregate samples/s",
           title="Batch sweep, default architecture")
    ax.legend()
    fig.tight_layout()
    paths.append(out_dir / f"{stem}_batch.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def write_json_md(results: dict[str, Any], md: str, out_dir: Path, stem: str) -> list[Path]:
    """``stem.json`` (the results) and ``stem.md`` (``md``) under ``out_dir``; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2))
    md_path.write_text(md)
    return [json_path, md_path]


def write_results(results: dict[str, Any], out_dir: Path, stem: str) -> list[Path]:
    """``stem.json``, ``stem.md`` and the plots under ``out_dir``; returns the paths."""
    paths = write_json_md(results, markdown(results), out_dir, stem)
    try:
        paths += plots(results, out_dir, stem)
    except ImportError:
        pass  # matplotlib is optional: JSON and Markdown still written
    return paths

"""``streamgen models`` and ``streamgen info MODEL``: what is in the zoo."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streamgen.checkpoint import ModelInfo


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model zoo",
                       description="List models in $STREAMGEN_MODELS folders and the packaged zoo.",
                       epilog="examples:\n  streamgen models\n"
                       "  STREAMGEN_MODELS=./zoo streamgen models --json",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_models)
    p = sub.add_parser("info", help="describe one model",
                       description="Architecture, size, receptive field, cost, quality and file "
                       "hashes of one model (its weights are verified).",
                       epilog="examples:\n  streamgen info default\n  streamgen info ./runs/exp1/best",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="NAME|PATH")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=run_info)


def _summary(name: str, info: ModelInfo) -> dict:
    return {"name": name, "kind": info.kind, "params": info.params,
            "receptive_field": info.receptive_field, "sample_rate": info.sample_rate,
            "val_bits_per_sample": info.training.get("val_bits_per_sample"),
            "weights_sha256": info.sha256, "weights_dtype": info.weights_dtype,
            "path": str(info.folder)}


def run_models(args: argparse.Namespace) -> int:
    from streamgen.checkpoint import CheckpointError, read_info
    from streamgen.zoo import list_models

    rows = []
    for entry in list_models():
        try:
            rows.append(_summary(entry.name, read_info(entry.path)))
        except CheckpointError as exc:
            rows.append({"name": entry.name, "error": str(exc), "path": str(entry.path)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models found (the packaged zoo is empty; add folders to $STREAMGEN_MODELS)")
        return 0
    print(f"{'name':<20} {'kind':<8} {'params':>10} {'recept. field':>14} {'rate':>6} "
          f"{'val bits/sample':>15}  sha256")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:<20} unreadable: {r['error']}")
            continue
        rf = r["receptive_field"]
        rf_text = (f"{rf:,} ({rf / r['sample_rate']:.2f}s)" if r["sample_rate"] else f"{rf:,}") if rf else "-"
        val = f"{r['val_bits_per_sample']:.3f}" if r["val_bits_per_sample"] is not None else "-"
        print(f"{r['name']:<20} {r['kind']:<8} {r['params'] or 0:>10,} {rf_text:>14} "
              f"{r['sample_rate']:>6} {val:>15}  {r['weights_sha256'][:16]}")
    return 0


def _readable(value: object) -> str:
    """Floats to four decimals, integers with thousands separators, the rest as it is."""
    if isinstance(value, float):
        return f"{value:,.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _data(record: object) -> str:
    """A run's data record (``training.data``) in one line; older records are free text."""
    if not isinstance(record, dict):
        return str(record)
    files = ", ".join(f"{record[k]:,} {k.removesuffix('_files')}" for k in record if k.endswith("_files"))
    return f"{record.get('source')} ({files} files; id {str(record.get('sha256'))[:12]})"


def run_info(args: argparse.Namespace) -> int:
    from streamgen.checkpoint import sha256_file
    from streamgen.engine.cost import macs_per_step
    from streamgen.zoo import load_model

    model, info = load_model(args.model)
    folder, rate = info.folder, info.sample_rate
    per = macs_per_step(model)
    files = {f.name: {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
             for f in sorted(folder.iterdir()) if f.is_file()}
    details = {
        **_summary(args.model, info),
        "config": info.config.to_dict(),
        "params": model.num_parameters(),
        "receptive_field": model.receptive_field,
        "receptive_field_seconds": model.receptive_field / rate if rate else None,
        "macs_per_sample": sum(per) / len(per),
        "macs_worst_step": max(per),
        "training": info.training,
        "files": files,
    }
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    train = info.training
    rows = [("kind", f"{info.kind}  {json.dumps(info.config.to_dict())}"),
            ("parameters", f"{details['params']:,}"),
            ("receptive field", f"{details['receptive_field']:,} samples" + (
                f" ({details['receptive_field_seconds']:.2f} s at {rate} Hz)" if rate else
                " (not audio: sample_rate 0)")),
            ("cost", f"{details['macs_per_sample']:,.0f} MACs/sample (worst step {details['macs_worst_step']:,})")]
    if info.sampling.changes():
        rows.append(("sampling", f"{json.dumps(info.sampling.changes())} (recommended; options override)"))
    if info.weights_dtype != "float32":
        rows.append(("weights", f"stored in {info.weights_dtype} (loaded as float32)"))
    if info.start != "zeros":
        rows.append(("start", f"{info.start} (the history it was trained to start from; --start overrides)"))
    steps = train.get("steps", train.get("step"))  # zoo cards record "steps", training runs "step"
    for label, value in [("val bits/sample", train.get("val_bits_per_sample")), ("val nats/sample", train.get("val_nats")),
                         ("training steps", steps), ("hardware", train.get("hardware")),
                         ("training time", train.get("wall_time_s"))]:
        if value is not None:
            rows.append((label, _readable(value) + (" s" if label == "training time" else "")))
    if train.get("data") is not None:
        rows.append(("data", _data(train["data"])))
    width = max(len(label) for label, _ in rows + [(n, "") for n in files]) + 2
    print(f"{args.model}  ({folder})")
    for label, value in rows:
        print(f"  {label:<{width}}{value}")
    size = max(len(f"{f['bytes']:,}") for f in files.values()) if files else 0
    for name, f in files.items():
        print(f"  {name:<{width}}{f['bytes']:>{size},} bytes  sha256 {f['sha256']}")
    return 0

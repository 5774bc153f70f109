"""``hmavd-demo``: the main job on a simulated subject, on CPU, in a few minutes.

1. If ``--data`` (default ``./hmavd_data/sim``) lacks the simulated subject, run the simulator
   (``hmavd-simulate --out DIR``). The data are **simulated**, not recorded.
2. Train HMAVD (config ``demo``: full model) and the NICE baseline (the same config with text,
   adapters, MCDB and SPR switched off and NICE's identity image side) on subject 1.
3. Print one zero-shot table, each model at its validation-selected checkpoint and at its last epoch
   (never selected on the test set): NICE, HMAVD, the simulator's reference decoders (``simulation.json``:
   the oracle ceiling, the oracle with fitted templates, a ridge regression) and chance.
   Results are saved under ``runs/demo/`` (``results.md``, ``results.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UserError, run_command, setup_logging

PROG = "hmavd-demo"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="hmavd_data/sim", help="simulated dataset folder (created when missing)")
    p.add_argument("--out", default="runs/demo", help="folder of the demo runs and results")
    p.add_argument("--config", default="demo", help="train config of both models (default: demo)")
    p.add_argument("--fresh", action="store_true", help="delete earlier demo runs in --out and retrain")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="train config overrides, e.g. epochs=5")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _ensure_simulated(data: Path, progress: bool = True) -> dict[str, Any]:
    sim_json = data / "simulation.json"
    if not sim_json.exists():
        if data.exists() and any(data.iterdir()):
            raise UserError(
                f"--data: {data} is not empty and has no simulation.json; pass an empty or simulated folder"
            )
        from .simulate import main as simulate_main

        print(f"simulating a subject into {data} (simulated data, not a recording) ...", flush=True)
        if simulate_main(["--out", str(data), f"progress={str(progress).lower()}"]) != 0:
            raise UserError(f"--data: the simulator could not write {data}; run hmavd-simulate --out {data}")
    return json.loads(sim_json.read_text())


#: Reference decoders of ``simulation.json`` shown under the trained models: key -> (label, note).
REFERENCES = {
    "oracle": ("oracle ceiling", "knows the forward model"),
    "oracle_fitted": ("oracle, fitted templates", "knows the latent projection only"),
    "ridge": ("ridge EEG -> image features", "no model knowledge"),
}


def _references(sim: dict[str, Any]) -> list[tuple[str, float, float, str]]:
    """(label, top1, top5, note) of each reference decoder the simulator scored (fractions)."""
    rows = []
    for key, (label, note) in REFERENCES.items():
        v = sim.get(key)
        if isinstance(v, dict) and "top1" in v and "top5" in v:
            rows.append((label, float(v["top1"]), float(v["top5"]), note))
    return rows


def _row(name: str, top1: float, top5: float, note: str = "", last: tuple[float, float] | None = None) -> str:
    tail = f"{100 * last[0]:.1f} | {100 * last[1]:.1f}" if last else " | "
    return f"| {name} | {100 * top1:.1f} | {100 * top5:.1f} | {tail} | {note} |"


def _table(results: dict[str, dict[str, Any]], refs: list[tuple[str, float, float, str]]) -> str:
    """The demo's markdown table: each model at its validation-selected and its last checkpoint."""
    n_templates = results["NICE"]["results"]["image[test-images]"]["n_templates"]
    lines = [f"Zero-shot {n_templates}-way decoding of the simulated subject (sub-01), top-1/top-5 in %", "",
             "| model | top-1 | top-5 | top-1 (last epoch) | top-5 (last epoch) | templates |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    rows = [("NICE (baseline)", "NICE", "image[test-images]")]
    rows += [("HMAVD", "HMAVD", label) for label in ("image[test-images]", "fused[test-images]", "text")]
    for name, model, label in rows:
        sel, last = _pick(results[model], label), _pick(results[f"{model} (last epoch)"], label)
        lines.append(_row(name, **sel, note=label.split("[")[0], last=(last["top1"], last["top5"])))
    lines.extend(_row(label, top1, top5, note) for label, top1, top5, note in refs)
    lines.append(_row("chance", 1 / n_templates, min(1.0, 5 / n_templates)))
    return "\n".join(lines) + (
        "\n\nSimulated data; 'top-1'/'top-5': the checkpoint selected on validation loss; 'last epoch': the\n"
        "final weights. Neither is ever selected on the test set.\n"
    )


def _body(argv: Sequence[str] | None) -> int:
    from ..config import load_config
    from ..evaluate import evaluate_checkpoint
    from ..io import atomic_write_json
    from ..train import TrainConfig, train

    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    data, out = Path(args.data), Path(args.out)
    sim = _ensure_simulated(data, progress=not args.no_progress)
    base = load_config(TrainConfig, args.config, [*args.overrides, f"data_dir={data}", f"out_dir={out}", "subject=1"])
    off = {k: False for k in ("use_text", "use_adapters", "use_mcdb", "use_spr")}
    configs = {
        "NICE": dataclasses.replace(base, name="nice-demo", run_name="nice", image_projection=False, **off),
        "HMAVD": dataclasses.replace(base, name="hmavd-demo", run_name="hmavd"),
    }
    results = {}
    for label, cfg in configs.items():
        run_dir = out / cfg.run_name
        if args.fresh and run_dir.exists():
            shutil.rmtree(run_dir)
        print(f"training {label} ({cfg.epochs} epochs, {cfg.device}) -> {run_dir}", flush=True)
        train(cfg, resume=(run_dir / "last.safetensors").exists(), progress=not args.no_progress)
        kinds = ("image", "text", "fused")
        results[label] = evaluate_checkpoint(run_dir, templates=kinds, ways=(2, 10))
        results[f"{label} (last epoch)"] = evaluate_checkpoint(run_dir / "last.safetensors", templates=kinds, ways=())
    table = _table(results, _references(sim))
    print("\n" + table)
    (out / "results.md").write_text(table)
    references = {label: {"top1": t1, "top5": t5} for label, t1, t5, _ in _references(sim)}
    atomic_write_json(out / "results.json", {"evaluations": results, "references": references, "simulation": str(data)})
    print(f"saved {out}/results.md and results.json")
    return 0


def _pick(ev: dict[str, Any], label: str) -> dict[str, float]:
    r = ev["results"][label]
    return {"top1": r["top1"], "top5": r["top5"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

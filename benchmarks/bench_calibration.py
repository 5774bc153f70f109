"""Calibrate -> fine-tune -> decode on simulated new sessions: start model vs fine-tuned vs from scratch.

For several simulated subjects (one dataset, ``--subjects`` of them, 2 training sessions each) every
subject gets a new session (``hmavd.sim_sessions``, change ``--change``) whose training block is the
calibration block (``--passes`` passes over the 800 training images, 3.4 min of RSVP each) and whose test
block (200 images x 10 repetitions) is decoded. Start points:

- **same subject**: ``hmavd-train`` on that subject's two training sessions (``--start-epochs``);
- **LOSO**: ``hmavd-train protocol=loso`` on the other subjects (``--loso-epochs``).

It prepares each new session once with ``hmavd-prepare`` (its own MVNN; chronological repetitions) and
cuts calibration blocks of 1..passes passes from it (the first passes in time; the MVNN is that of the
whole block). Then, per subject and calibration length: the start models' accuracy, the fine-tuned ones
(``hmavd-train --finetune``) and a model trained from scratch on the calibration block alone
(``--scratch-epochs``). A small sweep of what to fine-tune (layers x learning rate x epochs) runs first on
the first subject's one-pass block; the main table uses ``--ft-layers/--ft-lr/--ft-epochs``.

Top-1/top-5 of the new session's test block, 200-way, each image's 10 repetitions averaged as epochs
(k = 10) and single trials (k = 1). Everything runs in this process on the CPU; sizes are cut to fit
two loaded cores: 8 occipital channels, epochs cropped at 0.6 s, batches of 32 (more optimiser steps per
pass over the data), few epochs; each run's checkpoint is the validation-selected epoch. Usage::

    nice -n 10 python benchmarks/bench_calibration.py --root /tmp/cal-bench --out /tmp/cal-bench/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path

from hmavd.cli.prepare import main as prepare_main
from hmavd.cli.train import main as train_main
from hmavd.config import load_config
from hmavd.data.thingseeg2 import load_split, save_split
from hmavd.eval_reps import evaluate_checkpoint_reps
from hmavd.sim_sessions import NEW_SESSION_DIR, write_new_session
from hmavd.simulate_io import SimulateConfig, simulate_dataset

DONE = "bench_done"  # written beside a run that finished (an interrupted one has a best checkpoint too)
MIN_PER_PASS = 3.36  # one pass over the 800 training images (RSVP with catch trials and sequence gaps)


def _sim_config(n_subjects: int, passes: int):
    over = {
        "n_subjects": n_subjects,
        "n_train_concepts": 200,
        "n_train_images_per_concept": 4,
        "n_test_concepts": 200,
        "n_sessions": 2,
        "train_reps_per_session": 1,
        "test_reps_per_session": 10,
        "progress": False,
        "snr": 0.05,
        "write_replay": False,
    }
    return load_config(SimulateConfig, None, over), passes


def make_data(root: Path, n_subjects: int, passes: int, change: float, targets: list[int]) -> None:
    """The dataset, its new sessions (calibration = ``passes`` passes) and one prepared copy per subject."""
    cfg, _ = _sim_config(n_subjects, passes)
    if not (root / "simulation.json").exists():
        simulate_dataset(cfg, root, force=True)
    marker = root / NEW_SESSION_DIR / "session_change.json"
    want = {"scale": change, "passes": passes}
    if not marker.exists() or json.loads(marker.read_text()).get("bench") != want:
        info = write_new_session(replace(cfg, train_reps_per_session=passes).resolved(), root, change)
        info["bench"] = want
        marker.write_text(json.dumps(info))
        shutil.rmtree(root / "cal", ignore_errors=True)
    for r in range(1, passes + 1):
        d = root / "cal" / f"p{r}"
        d.mkdir(parents=True, exist_ok=True)
        for name in ("image_set", "features"):
            if not (d / name).exists():
                (d / name).symlink_to((root / name).resolve())
    full = root / "cal" / f"p{passes}" / "preprocessed_eeg"
    for s in targets:
        sub = full / f"sub-{s:02d}"
        if not (sub / "preprocessed_eeg_test.npy").exists():
            prepare_main(
                [
                    f"raw_dir={root / NEW_SESSION_DIR / 'raw_eeg'}",
                    f"out_dir={full}",
                    f"subject={s}",
                    "preset=nice",
                    "rep_order=chronological",
                    f"max_reps_training={passes}",
                    "max_reps_test=10",
                ]
            )
        split = load_split(sub / "preprocessed_eeg_training.npy")
        for r in range(1, passes):
            dst = root / "cal" / f"p{r}" / "preprocessed_eeg" / sub.name
            dst.mkdir(parents=True, exist_ok=True)
            prov = None if split.provenance is None else split.provenance[:, :r]
            save_split(dst / "preprocessed_eeg_training.npy", replace(split, eeg=split.eeg[:, :r], provenance=prov))
            for f in sub.iterdir():
                if f.name != "preprocessed_eeg_training.npy" and not (dst / f.name).exists():
                    shutil.copy(f, dst / f.name)


def train_run(runs: Path, name: str, data: Path, subject: int, over: list[str], finetune: str = "") -> Path:
    """One ``hmavd-train --config demo`` run in this process (reused when it finished before)."""
    run = runs / name
    if not (run / DONE).exists():
        shutil.rmtree(run, ignore_errors=True)
        argv = [
            "--config",
            "demo",
            "--data",
            str(data),
            "--subject",
            str(subject),
            f"out_dir={runs}",
            f"run_name={name}",
            "device=cpu",
            "--no-progress",
            *over,
        ]
        if finetune:
            argv += ["--finetune", finetune]
        if train_main(argv) != 0:
            raise RuntimeError(f"hmavd-train failed: {argv}")
        (run / DONE).write_text("")
    return run


def evaluate(run: Path, data: Path, subject: int) -> dict[str, float]:
    """Top-1/top-5 (%) of the new session's test block at k = 1 and k = 10 (epochs average)."""
    rows = evaluate_checkpoint_reps(str(run), "1,10", str(data), subject, "image", "test-images", "cpu")
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    val = [(e["val_loss"], e["epoch"]) for e in epochs if e.get("type") == "epoch"]
    out = {"selected_epoch": min(val)[1], "epochs": len(val)} if val else {}
    for r in rows:
        if r["average"] == "epochs":
            out[f"k{r['k']}_top1"], out[f"k{r['k']}_top5"] = 100 * r["top1"], 100 * r["top5"]
    return out


def sweep(args, runs: Path, cal: Path, start: Path, common: list[str]) -> list[dict]:
    """What to fine-tune, one factor at a time around ``--ft-*``: layers, then lr, then epochs (subject 1)."""
    base = {"layers": args.ft_layers, "lr": args.ft_lr, "epochs": args.ft_epochs}
    grid = [base]
    for key, values in (("layers", args.sweep_layers), ("lr", args.sweep_lr), ("epochs", args.sweep_epochs)):
        grid += [{**base, key: v} for v in values.split(",") if v and v != base[key]]
    rows = []
    for g in grid:
        t0 = time.time()
        name = f"sweep_{g['layers']}_lr{g['lr']}_ep{g['epochs']}"
        over = [*common, f"finetune_layers={g['layers']}", f"lr={g['lr']}", f"epochs={g['epochs']}"]
        run = train_run(runs, name, cal, 1, [*over, "average_train_reps=false"], finetune=str(start))
        rows.append({**g, **evaluate(run, cal, 1), "seconds": round(time.time() - t0, 1)})
        logging.info("sweep %s", rows[-1])
    return rows


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/cal-bench")
    ap.add_argument("--out", default="")
    ap.add_argument("--subjects", type=int, default=4, help="simulated subjects (LOSO trains on the others)")
    ap.add_argument("--targets", default="1,2", help="subjects whose new session is calibrated")
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--lengths", default="1,2", help="calibration lengths in passes")
    ap.add_argument("--change", type=float, default=1.0)
    ap.add_argument("--channels", default="O1,Oz,O2,PO7,PO3,POz,PO4,PO8")
    ap.add_argument("--batch-size", type=int, default=32, help="small batches: more optimiser steps per pass")
    ap.add_argument("--tmax-s", type=float, default=0.6, help="crop the epochs at this time (s): cheaper")
    ap.add_argument("--start-epochs", type=int, default=12)
    ap.add_argument("--loso-epochs", type=int, default=4)
    ap.add_argument("--scratch-epochs", type=int, default=8)
    ap.add_argument("--ft-layers", default="all")
    ap.add_argument("--ft-lr", default="0.0003")
    ap.add_argument("--ft-epochs", default="3")
    ap.add_argument("--sweep-layers", default="all,eeg_projection")
    ap.add_argument("--sweep-lr", default="0.001")
    ap.add_argument("--sweep-epochs", default="", help="also vary the epochs (each value one run)")
    ap.add_argument("--no-sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true", help="stop after the sweep (the first target only)")
    return ap


def main() -> None:
    args = _parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("hmavd.train", "hmavd.finetune", "hmavd.preprocessing.prepare", "hmavd.datasets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.time()
    root = Path(args.root)
    targets = [int(s) for s in args.targets.split(",")]
    make_data(root, args.subjects, args.passes, args.change, targets)
    runs = root / "runs"
    common = [f"channels={args.channels}", f"tmax_s={args.tmax_s}", f"batch_size={args.batch_size}"]
    lengths = [int(r) for r in args.lengths.split(",")]
    res: dict = {"args": vars(args), "start": {}, "rows": {}, "timing_s": {}}
    out = Path(args.out) if args.out else root / "results.json"

    def save() -> None:
        res["timing_s"]["total"] = round(time.time() - t0, 1)
        out.write_text(json.dumps(res, indent=1))

    def start(s: int, kind: str) -> Path:
        name, over = f"start_sub-{s:02d}", [*common, f"epochs={args.start_epochs}"]
        if kind == "loso":
            name, over = f"loso_sub-{s:02d}", [*common, f"epochs={args.loso_epochs}", "protocol=loso"]
        run = train_run(runs, name, root, s, over)
        res["start"][f"{s}_{kind}"] = evaluate(run, root / "cal" / "p1", s)
        logging.info("start %s %s %s", s, kind, res["start"][f"{s}_{kind}"])
        save()
        return run

    def cell(s: int, r: int, kind: str, start_run: Path | None) -> None:
        """One fine-tuned (from ``start_run``) or from-scratch (None) model on ``r`` passes of calibration."""
        cal = root / "cal" / f"p{r}"
        if start_run is None:
            over = [*common, f"epochs={args.scratch_epochs}", "average_train_reps=false"]
            run = train_run(runs, f"scratch_sub-{s:02d}_p{r}", cal, s, over)
        else:
            ft = [f"finetune_layers={args.ft_layers}", f"lr={args.ft_lr}", f"epochs={args.ft_epochs}"]
            over = [*common, *ft, "average_train_reps=false"]
            run = train_run(runs, f"{kind.replace('_', '-')}_sub-{s:02d}_p{r}", cal, s, over, finetune=str(start_run))
        row = res["rows"].setdefault(f"{s}_p{r}", {"subject": s, "passes": r, "minutes": round(r * MIN_PER_PASS, 1)})
        row[kind] = evaluate(run, cal, s)
        logging.info("row %s %s %s", s, r, {kind: row[kind]})
        save()

    # in order of what the table needs most, saved after every step (a cut-short run still reports)
    starts = {(targets[0], "same"): start(targets[0], "same")}
    if not args.no_sweep:
        t1 = time.time()
        res["sweep"] = sweep(args, runs, root / "cal" / "p1", starts[(targets[0], "same")], common)
        res["timing_s"]["sweep"] = round(time.time() - t1, 1)
        best = max(res["sweep"], key=lambda r: (r["k10_top1"], r["k1_top1"]))
        args.ft_layers, args.ft_lr, args.ft_epochs = best["layers"], best["lr"], best["epochs"]
        res["chosen"] = {"layers": best["layers"], "lr": best["lr"], "epochs": best["epochs"]}
        logging.info("fine-tuning with %s", res["chosen"])
        save()
        if args.sweep_only:
            return
    for s in targets:
        for kind in ("same", "loso"):
            if (s, kind) not in starts:
                starts[(s, kind)] = start(s, kind)
            cell(s, lengths[0], f"ft_{kind}", starts[(s, kind)])
        cell(s, lengths[0], "scratch", None)
    for r in lengths[1:]:
        for s in targets:
            for kind in ("same", "loso"):
                cell(s, r, f"ft_{kind}", starts[(s, kind)])
            cell(s, r, "scratch", None)
    save()
    logging.info("wrote %s in %.0f s", out, time.time() - t0)


if __name__ == "__main__":
    main()

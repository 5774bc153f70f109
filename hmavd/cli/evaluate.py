"""``hmavd-eval``: zero-shot evaluation of trained runs (Table 2 format, markdown + CSV + JSON).

Every run folder is evaluated twice: at its validation-selected epoch (``best.safetensors``) and at its
last epoch (``last.safetensors``); a checkpoint file given directly is evaluated alone. Runs of one config
that differ only by seed are averaged (mean ± std), and a config that names a published method shows the
published figure beside ours. Templates come from each checkpoint's stored gallery (no feature cache
needed) unless ``--features`` names a cache.

Examples::

    hmavd-eval runs/hmavd-63_sub-01_seed0
    hmavd-eval runs/*  --templates image,text,fused --image-source centers --out results/
    hmavd-eval runs/nice_sub-01_seed0 --image-source centers --scoring dot   # NICE's own scoring
    hmavd-eval runs/demo --templates image --reps 1,2,5,10,20,80             # accuracy vs repetitions averaged
    hmavd-eval runs/ubp_sub-01_seed0/last.safetensors --features DIR/features/rn50   # templates from a cache
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError, run_command, setup_logging
from ..io import atomic_write_json

PROG = "hmavd-eval"


def _parser() -> argparse.ArgumentParser:
    from ..evaluate import DEFAULT_WAYS
    from ..templates import IMAGE_SOURCES, SCORINGS

    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (or folders of runs, or checkpoints)")
    p.add_argument("--templates", default="image,text,fused", help="comma-separated: image,text,fused")
    p.add_argument("--image-source", default="test-images", choices=IMAGE_SOURCES, help="image template source")
    p.add_argument(
        "--scoring",
        default="cosine",
        choices=SCORINGS,
        help="cosine, or dot: normalised EEG . unnormalised template (NICE's scoring of raw centre features)",
    )
    p.add_argument("--data", help="dataset root (default: the one each run was trained on)")
    p.add_argument("--subject", type=int, help="test subject (default: the run's subject)")
    p.add_argument(
        "--features",
        help="build templates from this feature cache instead of the checkpoint's stored gallery "
        "(default: the gallery; the training cache for checkpoints without one)",
    )
    p.add_argument("--ways", default=",".join(map(str, DEFAULT_WAYS)), help="n-way accuracies to report")
    p.add_argument("--n-draws", type=int, default=100, help="random draws per n-way accuracy")
    p.add_argument("--seed", type=int, default=0, help="seed of the n-way distractor draws")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--reps",
        default="",
        help="also top-1/top-5 of each image's first k repetitions averaged, e.g. 1,2,5,10,20,80 "
        "(epochs and embeddings averaged, first --templates kind; writes reps.csv)",
    )
    p.add_argument("--out", help="folder for results.{md,csv,json} (default: <parent of the first run>/eval)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def expand_runs(paths: Sequence[str]) -> list[Path]:
    """Run folders / checkpoint files; a folder without ``best.safetensors`` contributes its sub-runs."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file() or (p / "best.safetensors").exists():
            out.append(p)
        elif p.is_dir() and (subs := sorted(q.parent for q in p.glob("*/best.safetensors"))):
            out.extend(subs)
        else:
            raise UserError(f"RUN_DIR: {raw} holds no best.safetensors (nor sub-runs); pass a hmavd-train run folder")
    return out


def run_checkpoints(runs: Sequence[Path]) -> list[Path]:
    """Each run folder's ``best.safetensors`` and ``last.safetensors`` (when there); files stay as given."""
    out: list[Path] = []
    for run in runs:
        names = [run] if run.is_file() else [run / "best.safetensors", run / "last.safetensors"]
        out.extend(p for p in names if p.exists())
    return out


def evaluate_runs(
    runs: Sequence[Path],
    kinds: Sequence[str] = ("image",),
    image_source: str = "test-images",
    ways: Sequence[int] = (),
    *,
    data: str | None = None,
    subject: int | None = None,
    seed: int = 0,
    n_draws: int = 100,
    device: str = "cpu",
    features: str | None = None,
    scoring: str = "cosine",
    reps: str = "",
) -> list[dict]:
    """Evaluate every checkpoint of ``runs`` (:func:`run_checkpoints`): one evaluation dict each."""
    from ..evaluate import evaluate_checkpoint

    evals = []
    for ckpt in run_checkpoints(runs):
        ev = evaluate_checkpoint(
            ckpt, data, subject, kinds, image_source, ways, seed, n_draws, device, features, scoring
        )
        if reps:
            from ..eval_reps import evaluate_checkpoint_reps

            ev["reps"] = evaluate_checkpoint_reps(
                str(ckpt), reps, data, subject, kinds[0], image_source, device, features=features
            )
        evals.append(ev)
    return evals


def write_results(evals: Sequence[dict], out: Path) -> str:
    """``results.{md,csv,json}`` in ``out``; returns the markdown table."""
    from ..evaluate import aggregate, results_csv, table_markdown

    rows = aggregate(evals)
    md = table_markdown(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(md)
    (out / "results.csv").write_text(results_csv(evals))
    atomic_write_json(out / "results.json", {"evaluations": list(evals), "table": rows})
    return md


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    kinds = [k.strip() for k in args.templates.split(",") if k.strip()]
    try:
        ways = [int(w) for w in args.ways.split(",") if w.strip()]
    except ValueError:
        raise UserError(f"--ways: {args.ways!r} is not a comma-separated list of integers (e.g. 2,4,10)") from None
    runs = expand_runs(args.runs)
    evals = evaluate_runs(
        runs,
        kinds,
        args.image_source,
        ways,
        data=args.data,
        subject=args.subject,
        seed=args.seed,
        n_draws=args.n_draws,
        device=args.device,
        features=args.features,
        scoring=args.scoring,
        reps=args.reps,
    )
    suffix = "" if args.scoring == "cosine" else f"_{args.scoring}"
    for ev in evals:
        ckpt = Path(ev["checkpoint"])
        if ckpt.stem in ("best", "last"):  # next to the run: eval_<source>[_<scoring>][_last].json
            tail = "" if ckpt.stem == "best" else "_last"
            atomic_write_json(ckpt.parent / f"eval_{args.image_source}{suffix}{tail}.json", ev)
    out = Path(args.out) if args.out else runs[0].resolve().parent / "eval"
    print(write_results(evals, out))
    if args.reps:
        from ..eval_reps import reps_csv

        (out / "reps.csv").write_text(reps_csv(evals))
        print(reps_csv(evals))
    print(f"results: {out}/results.{{md,csv,json}}")
    print(json.dumps({"n_runs": len(runs), "n_checkpoints": len(evals)}))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``hmavd-train``: train HMAVD / NICE runs from a packaged config (one per paper table row).

Examples::

    hmavd-train --config hmavd-63 --data hmavd_data/sim --subject 1
    hmavd-train --config nice --data /data/things-eeg2 --subject all --seeds 0,1,2 epochs=200
    hmavd-train --config ubp --data hmavd_data/sim --subject 1 --seeds 0,1,2 device=cpu   # ends with the table
    hmavd-train --config hmavd-63 --data DIR --subject all protocol=loso
    hmavd-train --resume runs/hmavd-63_sub-01_seed0
    torchrun --nproc-per-node 4 -m hmavd.cli.train --config nice --data DIR --subject all    # DDP, run by run
    torchrun --nproc-per-node 4 -m hmavd.cli.train --config nice --data DIR --subject all --fan-out

When the runs are done, each is evaluated at its validation-selected and its last epoch (image templates
from the stored gallery) and the results table of these runs (mean ± std over seeds, the published figure
beside ours when the config names a recipe) is printed and written to ``<out_dir>/eval/<name>/``
(``--no-eval`` skips it; ``hmavd-eval`` gives the other template kinds).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

import yaml

from ..config import add_config_arguments, config_from_dict, config_yaml, load_command_config, parse_overrides
from ..errors import UserError, run_command, setup_logging

PROG = "hmavd-train"
log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, default="hmavd-63")
    p.add_argument("--data", dest="data_dir", help="dataset root (ThingsEEG2 layout); sets data_dir")
    p.add_argument("--subject", help="subject number, comma-separated list, or 'all' (one run each)")
    p.add_argument("--seeds", help="comma-separated seeds (one run each), e.g. 0,1,2; sets seed")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint")
    p.add_argument(
        "--fan-out",
        action="store_true",
        help="under torchrun: each process trains whole runs of the subject x seed list on its own "
        "(runs[rank::world]) instead of sharing every run by DDP",
    )
    p.add_argument(
        "--finetune",
        metavar="CHECKPOINT",
        help="start from this run/checkpoint; sets finetune= "
        "(finetune_layers=all|eeg|eeg_projection says what trains; docs/new-session.md)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the results table of the runs at the end")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _resume_config(run_dir: Path, overrides: Sequence[str]):
    from ..train import TrainConfig

    path = run_dir / "config.yaml"
    if not path.exists():
        raise UserError(f"--resume: {run_dir} has no config.yaml; pass a run folder written by hmavd-train")
    values = yaml.safe_load(path.read_text()) or {}
    values.pop("_config_class", None)
    ov = parse_overrides(overrides)
    if set(ov) - {"device"}:
        raise UserError(f"--resume: only device=... may be overridden, got {sorted(ov)}; drop the others")
    return config_from_dict(TrainConfig, {**values, **ov}, source=str(path))


def _body(argv: Sequence[str] | None) -> int:
    from ..datasets import parse_subjects
    from ..train import TrainConfig, train

    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    if args.resume:
        cfg = _resume_config(Path(args.resume), args.overrides)
        print(train(cfg, resume=True, progress=not args.no_progress))
        return 0
    cfg = load_command_config(TrainConfig, args, ("data_dir", "finetune"))
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    subjects = parse_subjects(args.subject, cfg.data_dir) if args.subject else [cfg.subject]
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [cfg.seed]
    except ValueError:
        raise UserError(f"--seeds: {args.seeds!r} is not a comma-separated list of integers (e.g. 0,1,2)") from None
    jobs = [dataclasses.replace(cfg, subject=subject, seed=seed) for subject in subjects for seed in seeds]
    for job in jobs:
        job.check_paths()  # the fields were checked when each job was built
    ctx = None  # default: DDP over every torchrun process (one process without torchrun)
    if args.fan_out:
        from ..distributed import fan_out, local_context

        jobs, ctx = fan_out(jobs), local_context(cfg.device)
    runs = [train(job, progress=not args.no_progress, dist_ctx=ctx) for job in jobs]
    if args.fan_out or _is_main_process():
        for run in runs:
            print(run)
    if not args.no_eval and not args.fan_out and _is_main_process():
        _report(runs, cfg)
    return 0


def _report(runs: Sequence[Path], cfg) -> None:
    """Evaluate the runs just trained (both epochs, image templates) and print / write their results table."""
    from ..devices import resolve_device
    from .evaluate import evaluate_runs, write_results

    out = Path(cfg.out_dir) / "eval" / cfg.name
    try:
        evals = evaluate_runs(runs, ("image",), ways=(2, 4, 10), device=str(resolve_device(cfg.device)))
    except UserError as err:  # the runs are saved; only the table is missing (e.g. a data set without a test split)
        log.warning("no results table: %s (evaluate later with hmavd-eval)", err)
        return
    print(write_results(evals, out))
    print(f"results: {out}/results.{{md,csv,json}}")


def _is_main_process() -> bool:
    """True outside ``torchrun`` and on its rank 0 (the rank that writes the runs)."""
    from ..distributed import torchrun_env

    env = torchrun_env()
    return env is None or env[0] == 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

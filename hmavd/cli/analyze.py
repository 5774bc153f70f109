"""``hmavd-analyze``: the paper's analyses, each writing a PNG figure and a CSV table.

Examples::

    hmavd-analyze time-windows --data DIR --subject 1 'train_overrides=[epochs=20, encoder=resmlp]'
    hmavd-analyze regions --data DIR --subject 1
    hmavd-analyze sweep --config sweep-gamma --data DIR          # Table 4
    hmavd-analyze sweep --config sweep-reduction --data DIR      # Table 5
    hmavd-analyze gradients --runs runs/no-mcdb runs/mcdb        # or without --runs: trains both
    hmavd-analyze topomaps --runs runs/nice_sub-01_seed0 runs/hmavd-63_sub-01_seed0

Each writes <out>/<analysis>/*.png + *.csv; re-running reuses finished runs (docs/analysis.md).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..config import add_config_arguments, config_yaml, load_config, save_config
from ..errors import UserError, run_command, setup_logging

log = logging.getLogger(__name__)

SUBCOMMANDS = ("time-windows", "regions", "gradients", "sweep", "topomaps")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hmavd-analyze", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("analysis", choices=SUBCOMMANDS, help="which analysis to run")
    p.add_argument("--data", help="dataset root for every training run (sets train_overrides data_dir=...)")
    p.add_argument("--subject", type=int, help="subject for every training run (sets subject=...)")
    p.add_argument("--out", help="output folder (default: config out_dir)")
    p.add_argument("--runs", nargs="+", help="gradients/topomaps: trained run folders to analyse instead of training")
    p.add_argument("-v", "--verbose", action="store_true")
    add_config_arguments(p, default="analyze")
    return p


def resolve(args: argparse.Namespace) -> Any:
    """The :class:`AnalyzeConfig` with ``--data``/``--subject``/``--out`` folded in."""
    from ..analysis.common import AnalyzeConfig

    cfg = load_config(AnalyzeConfig, args.config, args.overrides)
    extra = [f"data_dir={args.data}"] * bool(args.data) + [f"subject={args.subject}"] * (args.subject is not None)
    return replace(cfg, train_overrides=(*cfg.train_overrides, *extra), out_dir=args.out or cfg.out_dir)


def _body(argv: Sequence[str] | None) -> int:
    from ..analysis import runners

    args = build_parser().parse_intermixed_args(argv)
    if args.runs:  # ``--runs A B key=value``: nargs="+" also swallows the overrides that follow
        moved = [r for r in args.runs if "=" in r and not Path(r).exists()]
        args.runs = [r for r in args.runs if r not in moved]
        args.overrides = [*args.overrides, *moved]
    setup_logging(args.verbose)
    cfg = resolve(args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    if args.runs and args.analysis not in ("gradients", "topomaps"):
        raise UserError(f"--runs: only gradients and topomaps analyse existing runs, not {args.analysis}; drop --runs")
    out_dir = Path(cfg.out_dir) / args.analysis
    out_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out_dir / "analyze_config.yaml")
    fn = {
        "time-windows": runners.time_windows,
        "regions": runners.regions,
        "gradients": runners.gradients,
        "sweep": runners.sweep,
        "topomaps": runners.topomaps,
    }[args.analysis]
    result = fn(cfg, out_dir, runs=args.runs or ())
    for path in result["files"]:
        print(f"wrote {path}")
    if result.get("summary"):
        print(result["summary"], end="" if result["summary"].endswith("\n") else "\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-analyze``."""
    return run_command("hmavd-analyze", _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

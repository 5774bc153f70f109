"""``hmavd-simulate``: write a simulated subject (dataset, raw recordings, replay FIF, oracle ceiling).

The data are SIMULATED from a documented forward model (docs/simulated-subject.md). Feature geometry and
concept names are generated from the seed; real ones only come from files you name. Examples::

    hmavd-simulate --out data/sim                       # default: small, seconds on a CPU
    hmavd-simulate --out data/sim snr=0.01 n_subjects=3
    hmavd-simulate --out data/sim-paper --scale paper   # 16540 x 4 / 200 x 80 at 63 x 250 (large)
    hmavd-simulate --out data/sim-real features_from=/data/features/vitl14 \
        concepts_from=/data/things-eeg2/image_set/image_metadata.npy     # your real features and names
    hmavd-simulate --out data/sim new_session=true      # then: a new session with its own noise (new_session/)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..config import add_config_arguments, config_yaml, load_config, save_config
from ..errors import UserError, run_command, setup_logging

PROG = "hmavd-simulate"
#: The reference decoders of ``simulation.json`` (docs/simulated-subject.md), as printed.
REFERENCE_LABELS = (
    ("oracle", "oracle ceiling (knows the forward model)"),
    ("oracle_fitted", "oracle, templates fit to the training split"),
    ("ridge", "ridge EEG -> image features (model-free)"),
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=False, default=None, help="output dataset root (ThingsEEG2 layout)")
    add_config_arguments(p, default="simulate")
    p.add_argument("--scale", choices=("default", "paper"), help="shortcut for scale=...; paper = real sizes")
    p.add_argument("--force", action="store_true", help="overwrite a non-empty folder holding something else")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def _body(argv: Sequence[str] | None) -> int:
    from ..simulate_io import SimulateConfig, simulate_dataset

    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    overrides = list(args.overrides) + ([f"scale={args.scale}"] if args.scale else [])
    cfg = load_config(SimulateConfig, args.config, overrides)
    if args.print_config:
        print(config_yaml(cfg.resolved()), end="")
        return 0
    if not args.out:
        raise UserError("--out: missing; name the folder to write the simulated dataset to (e.g. --out data/sim)")
    out = Path(args.out)
    if cfg.new_session:  # a new session of the subjects already simulated at --out (hmavd/sim_sessions.py)
        from ..sim_sessions import NEW_SESSION_DIR, write_new_session

        saved = out / "simulate_config.yaml"  # the dataset's own sizes and paradigm, unless --config is given
        if args.config == "simulate" and saved.exists():
            cfg = load_config(SimulateConfig, str(saved), overrides)
        cfg.check_inputs()
        ns = write_new_session(cfg.resolved(), out, cfg.new_session_change)
        print(f"SIMULATED new session (not real EEG, noise change x{cfg.new_session_change}): {out / NEW_SESSION_DIR}")
        for sub in ns["subjects"]:
            print(f"  sub-{sub['subject']:02d}: replay {sub['paths']['replay']}; noisy {sub['noisy_channels']}")
        return 0
    cfg.check_inputs()  # the files named by features_from / concepts_from, before anything is written
    s = simulate_dataset(cfg, out, force=args.force)
    save_config(cfg.resolved(), out / "simulate_config.yaml")
    for line in summary_lines(s, out):
        print(line)
    return 0


def summary_lines(s: dict, out: Path) -> list[str]:
    """What ``hmavd-simulate`` prints about the dataset it wrote (``s``: the ``simulation.json`` summary)."""
    lines = [
        f"SIMULATED subject(s) written to {out} (not real EEG)",
        f"  images: {s['n_train_images']} training, {s['n_test_images']} test; snr {s['config']['snr']} "
        f"({s['snr_db']:.1f} dB single trial)",
    ]
    for sub in s["subjects"]:
        lines.append(
            f"  sub-{sub['subject']:02d}: training {tuple(sub['shapes']['training'])}, "
            f"test {tuple(sub['shapes']['test'])}; {s['n_test_images']}-way test top-1 / top-5 "
            f"(chance {100 * s['chance_top1']:.1f} %):"
        )
        for key, label in REFERENCE_LABELS:
            o = sub.get(key)
            score = f"{100 * o['top1']:5.1f} % / {100 * o['top5']:5.1f} %" if o else "skipped (too many images)"
            lines.append(f"    {label:<44} {score}")
    g = s["test_feature_statistics"]
    centre = f", image-centre {g['center_cosine_mean']:.2f}" if "center_cosine_mean" in g else ""
    lines.append(
        f"  feature geometry: {s['feature_geometry']}; test images: mean pairwise cosine "
        f"{g['pairwise_cosine_mean']:.2f}{centre}"
    )
    lines.append(f"  features: {out / s['feature_cache']}; metadata: {out / 'image_set' / 'image_metadata.npy'}")
    if s["config"]["write_raw"]:
        lines.append(
            f"  raw recordings: {out / 'raw_eeg'}; re-prepare with: hmavd-prepare raw_dir={out / 'raw_eeg'} "
            f"out_dir=<dir> {' '.join(s['prepare_overrides'])}"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point of ``hmavd-simulate``."""
    return run_command(PROG, _body, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

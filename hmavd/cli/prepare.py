"""``hmavd-prepare``: raw recordings -> ThingsEEG2 preprocessed files, or ``--convert`` pickles to npz/json.

Examples::

    hmavd-prepare --config prepare-nice raw_dir=data/raw_eeg out_dir=data/preprocessed_eeg subject=1
    hmavd-prepare --config prepare-gifford subject=2 rep_order=chronological format=npz
    hmavd-prepare --convert /data/things-eeg2     # pickled .npy dicts -> pickle-free .npz / .json twins
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import add_config_arguments, config_yaml, load_config
from ..errors import UserError, run_command, setup_logging

PROG = "hmavd-prepare"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p, default="prepare-nice")
    p.add_argument(
        "--convert",
        metavar="FOLDER",
        help="convert ThingsEEG2 pickled .npy files under FOLDER to pickle-free .npz/.json twins, then exit",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def convert_folder(folder: str | Path) -> list[tuple[Path, Path]]:
    """Write pickle-free twins of every ThingsEEG2 pickled file under ``folder`` (recursively).

    ``preprocessed_eeg_*.npy`` -> ``.npz`` (``save_split(..., pickle_free=True)``),
    ``image_metadata.npy`` -> ``.json``. Returns ``[(source, written), ...]``.
    """
    from ..data.thingseeg2 import load_image_metadata, load_split, save_image_metadata, save_split

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--convert: {folder} is not a folder; name the folder holding the ThingsEEG2 .npy files")
    eeg = sorted(folder.rglob("preprocessed_eeg_*.npy"))
    meta = sorted(folder.rglob("image_metadata.npy"))
    if not eeg and not meta:
        raise UserError(
            f"--convert: {folder} holds no preprocessed_eeg_*.npy or image_metadata.npy; "
            "name the ThingsEEG2 root or a subject folder"
        )
    done = []
    for src in eeg:
        done.append((src, save_split(src.with_suffix(".npz"), load_split(src), pickle_free=True)))
    for src in meta:
        done.append((src, save_image_metadata(src.with_suffix(".json"), load_image_metadata(src))))
    return done


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    if args.convert:
        for src, dst in convert_folder(args.convert):
            print(f"{src} -> {dst}")
        return 0
    from ..preprocessing.prepare import PrepareConfig, prepare_subject

    cfg = load_config(PrepareConfig, args.config, args.overrides)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    written = prepare_subject(cfg)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-prepare``; exit code 2 on bad input."""
    return run_command(PROG, _body, argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""``hmavd-present``: RSVP presentation with one LSL marker per image, stamped with its flip time.

Examples::

    hmavd-present --data hmavd_data/sim --block test --dry-run              # no display: markers on a 60 Hz grid
    hmavd-present --data /data/things-eeg2 --block training first_image=1 n_images=800 --target-image woody.png
    hmavd-present --images my_list.tsv reps=5 image_s=0.2 blank_s=0.3 photodiode=bottom-left
    hmavd-present --measure-delay session.xdf photodiode_channel=Photo     # display delay from a photodiode

Images come from a dataset's ``image_set/image_metadata.npy`` (image ``n`` of the block is the
``n``-th training or test image, its marker the code ``"n"``, ThingsEEG2's numbering) or from a list
file (one path per line, optionally a tab and the image's marker code). The shown sequence, flip
times and dropped frames are written to ``--out-dir`` (``shown.tsv``, ``presentation.json``,
``schedule.tsv``, ``present_config.yaml``). See docs/experiment.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hmavd.config import (
    ValidatedConfig,
    add_config_arguments,
    config_yaml,
    load_command_config,
    save_config,
)
from hmavd.errors import UserError, run_command, setup_logging

from .present import DryRunDisplay, Presenter, Schedule, Timing, build_schedule, write_log, write_schedule

log = logging.getLogger(__name__)

_CORNERS = ("none", "top-left", "top-right", "bottom-left", "bottom-right")


@dataclass(frozen=True)
class PresentConfig(ValidatedConfig):
    """Settings of ``hmavd-present`` (``configs/present.yaml``): the ThingsEEG2 paradigm by default."""

    data: str = ""
    image_list: str = ""
    block: str = "test"
    reps: int = 0
    first_image: int = 1
    n_images: int = 0
    image_s: float = 0.1
    blank_s: float = 0.1
    sequence_length: int = 20
    sequence_gap_s: float = 0.75
    target_fraction: float = 0.05
    target_image: str = ""
    rest_every: int = 0
    rest_s: float = 10.0
    max_sequences: int = 0
    seed: int = 0
    marker_stream: str = ""
    block_marker: bool = True
    wait_consumers_s: float = 0.0
    lead_s: float = 1.0
    dry_run: bool = False
    refresh_hz: float = 60.0
    fullscreen: bool = True
    screen: int = 0
    image_size_px: int = 500
    background: float = 0.0
    photodiode: str = "none"
    photodiode_px: int = 60
    photodiode_channel: str = "Photo"
    display_delay_s: float = 0.0
    out_dir: str = ""

    def validate(self) -> None:
        if self.block not in ("training", "test"):
            raise UserError(f"block: {self.block!r} is not 'training' or 'test'; pick one")
        if self.photodiode not in _CORNERS:
            raise UserError(f"photodiode: {self.photodiode!r} is not one of {list(_CORNERS)}; pick a corner or none")
        if self.reps < 0 or self.first_image < 1 or self.n_images < 0 or self.max_sequences < 0:
            raise UserError(
                f"reps/first_image/n_images/max_sequences: {self.reps}/{self.first_image}/{self.n_images}/"
                f"{self.max_sequences}; give reps >= 0 (0 = the paradigm's), first_image >= 1, n_images >= 0"
            )
        if self.refresh_hz <= 0:
            raise UserError(f"refresh_hz: {self.refresh_hz} must be > 0 (the display's rate, e.g. 60)")
        _ = self.timing().soa_frames  # durations on the frame grid
        if not -0.5 <= self.display_delay_s <= 0.5:
            raise UserError(
                f"display_delay_s: {self.display_delay_s} s is implausible; give the measured delay, e.g. 0.02"
            )

    def timing(self) -> Timing:
        return Timing(self.refresh_hz, self.image_s, self.blank_s, self.sequence_gap_s)

    def resolved_reps(self) -> int:
        """ThingsEEG2 per session: every training image once, every test image 20 times."""
        return self.reps or (1 if self.block == "training" else 20)


def block_images(cfg: PresentConfig) -> tuple[list[str], list[str] | None]:
    """``(files, codes)`` of the block: image ``n`` is ``files[n - 1]`` (codes ``None``: the numbers)."""
    if bool(cfg.data) == bool(cfg.image_list):
        raise UserError(
            f"data/image_list: give exactly one (got data={cfg.data!r}, image_list={cfg.image_list!r}); "
            "--data ROOT reads ROOT/image_set/image_metadata.npy, --images FILE a list of image paths"
        )
    if cfg.data:
        from hmavd.data.thingseeg2 import load_image_metadata

        root = Path(cfg.data)
        meta = load_image_metadata(root / "image_set" / "image_metadata.npy")
        folder, concepts, names = (
            ("training_images", meta.train_img_concepts, meta.train_img_files)
            if cfg.block == "training"
            else ("test_images", meta.test_img_concepts, meta.test_img_files)
        )
        files = [str(root / "image_set" / folder / c / f) for c, f in zip(concepts, names)]
        codes = None
    else:
        files, codes = _read_list(Path(cfg.image_list))
    start = cfg.first_image - 1
    stop = len(files) if not cfg.n_images else start + cfg.n_images
    if stop > len(files) or start >= len(files):
        raise UserError(
            f"first_image/n_images: {cfg.first_image}/{cfg.n_images} run past the {len(files)} "
            f"{cfg.block} images; lower them"
        )
    if start or stop < len(files):  # a subset keeps the dataset's numbering in its codes
        codes = [str(i + 1) for i in range(start, stop)] if codes is None else codes[start:stop]
        files = files[start:stop]
    return files, codes


def _read_list(path: Path) -> tuple[list[str], list[str] | None]:
    if not path.exists():
        raise UserError(f"image_list: {path} not found; give a text file with one image path per line")
    rows = [r for r in csv.reader(path.read_text().splitlines(), delimiter="\t") if r and r[0].strip()]
    rows = [r for r in rows if not r[0].startswith("#")]
    if not rows:
        raise UserError(f"image_list: {path} lists no image; one path per line (optionally a tab and a code)")
    base = path.parent
    files = [str(p if (p := Path(r[0].strip())).is_absolute() else base / p) for r in rows]
    has_codes = [len(r) > 1 and r[1].strip() != "" for r in rows]
    if any(has_codes) and not all(has_codes):
        raise UserError(f"image_list: {path} gives a code for some images only; give one for every line or none")
    return files, ([r[1].strip() for r in rows] if all(has_codes) else None)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hmavd-present", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset root holding image_set/image_metadata.npy")
    p.add_argument("--images", dest="image_list", help="image list file (one path per line[, TAB code])")
    p.add_argument("--block", help="training (calibration) or test")
    p.add_argument(
        "--dry-run",
        dest="dry_run",
        action="store_true",
        default=None,
        help="no display: flips on an exact refresh_hz grid, same markers",
    )
    p.add_argument("--marker-stream", dest="marker_stream", help="marker stream name (default: unique)")
    p.add_argument("--target-image", dest="target_image", help="image of the target to detect")
    p.add_argument("--out-dir", dest="out_dir", help="folder for shown.tsv, presentation.json …")
    p.add_argument(
        "--measure-delay",
        dest="measure_delay",
        metavar="RECORDING",
        help="measure the display delay from a recording's photodiode channel and exit",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    add_config_arguments(p, default="present")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    flags = ("data", "image_list", "block", "dry_run", "marker_stream", "target_image", "out_dir")
    cfg = load_command_config(PresentConfig, args, flags)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    if args.measure_delay:
        return measure_delay(args.measure_delay, cfg.photodiode_channel)
    files, codes = block_images(cfg)
    schedule = build_schedule(
        files,
        cfg.resolved_reps(),
        cfg.sequence_length,
        cfg.target_fraction,
        np.random.default_rng(cfg.seed),
        codes,
        cfg.target_image,
        cfg.block,
        cfg.max_sequences,
    )
    out = Path(cfg.out_dir or Path("recordings") / time.strftime("present-%Y%m%d-%H%M%S"))
    if (out / "presentation.json").exists():
        raise UserError(f"--out-dir: {out} already holds a presentation; choose a new folder")
    save_config(cfg, out / "present_config.yaml")
    write_schedule(out, schedule)
    return _present(cfg, schedule, out)


def _present(cfg: PresentConfig, schedule: Schedule, out: Path) -> int:
    import pylsl

    from .replay import unique_names

    name = cfg.marker_stream or unique_names("hmavd-present")[1]
    info = pylsl.StreamInfo(name, "Markers", 1, pylsl.IRREGULAR_RATE, pylsl.cf_string, source_id=name)
    outlet = pylsl.StreamOutlet(info)
    print(f"marker stream: {name}  ({len(schedule)} trials in {len(schedule.sequences)} sequences)", flush=True)
    if cfg.wait_consumers_s > 0 and not outlet.wait_for_consumers(cfg.wait_consumers_s):
        log.warning("no consumer of %s after %.1f s; presenting anyway", name, cfg.wait_consumers_s)
    if cfg.dry_run:
        display = DryRunDisplay(cfg.refresh_hz, rest_s=min(cfg.rest_s, 1.0))
    else:
        from .present_window import PsychoPyDisplay

        display = PsychoPyDisplay(cfg, [t.file for t in schedule.trials])
    timing = Timing(display.refresh_hz, cfg.image_s, cfg.blank_s, cfg.sequence_gap_s)
    presenter = Presenter(
        schedule,
        timing,
        display,
        lambda code, t: outlet.push_sample([code], t),
        cfg.block_marker,
        cfg.rest_every,
        cfg.rest_s,
        marker_delay_s=cfg.display_delay_s,
    )
    time.sleep(cfg.lead_s)
    try:
        lg = presenter.run()
    except KeyboardInterrupt:
        print("stopped", flush=True)
        lg = presenter.log
    finally:
        display.close()
    extra = {"marker_stream": name, "dry_run": cfg.dry_run, "display_delay_s": cfg.display_delay_s}
    summary = write_log(out, schedule, timing, lg, extra)
    print(
        f"shown {summary['n_shown']}/{len(schedule)} images, {summary['n_dropped']} dropped frames, "
        f"responses {summary['responses']}; log in {out}",
        flush=True,
    )
    time.sleep(0.5)  # let the last markers leave before the outlet closes
    return 0


def measure_delay(recording: str, channel: str) -> int:
    """Print the display delay measured from ``recording``'s photodiode ``channel`` (any format
    ``hmavd-prepare`` reads: XDF, FIF, BrainVision, EDF; the markers are its events)."""
    from hmavd.preprocessing.raw_io import read_recording

    from .present import photodiode_delays

    raw, events = read_recording(recording)
    if channel not in raw.ch_names:
        raise UserError(
            f"photodiode_channel: {channel!r} is not in {recording} (channels e.g. {raw.ch_names[-5:]}); "
            "name the channel the photodiode was recorded on"
        )
    if not len(events):
        raise UserError(f"--measure-delay: {recording} holds no markers; record the marker stream with the EEG")
    signal = raw.get_data(picks=[raw.ch_names.index(channel)])[0]
    delays = photodiode_delays(signal, events[:, 0], float(raw.info["sfreq"]))
    ok = delays[np.isfinite(delays)]
    if not len(ok):
        raise UserError(
            f"--measure-delay: no photodiode edge within 250 ms of any of {len(delays)} markers; "
            "check the patch (photodiode=<corner>) and the sensor"
        )
    ms = ok * 1e3
    print(
        f"display delay over {len(ok)}/{len(delays)} markers: median {np.median(ms):.1f} ms "
        f"(5-95 % {np.percentile(ms, 5):.1f} … {np.percentile(ms, 95):.1f} ms, max {ms.max():.1f} ms)",
        flush=True,
    )
    print(
        f"set marker_offset_s={np.median(ok):.4f} in hmavd-live, or display_delay_s={np.median(ok):.4f} in "
        "hmavd-present (then the recordings carry it too)",
        flush=True,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-present``."""
    return run_command("hmavd-present", _body, argv)

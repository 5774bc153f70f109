"""``hmavd-virtual-amp``: a simulated subject as an EEG amplifier on LSL, answering a marker stream live.

Examples::

    hmavd-virtual-amp --subject-dir hmavd_data/sim --marker-stream my-markers      # µV, actiCAP-64, 1000 Hz
    hmavd-virtual-amp --subject-dir hmavd_data/sim sfreq=500 unit=volts montage=subject sample_index=true
    hmavd-virtual-amp --subject-dir hmavd_data/sim --eeg-stream amp --duration 600 --out-dir recordings/amp

Streams continuous simulated EEG of one subject of a ``hmavd-simulate`` folder (its noise model) and
adds that subject's response to an image whenever a marker naming it arrives (``"17"`` = image 17 of
the current partition; ``block:training`` / ``block:test`` switch the partition; ``99999`` = target).
Ctrl-C stops; ``--out-dir`` keeps ``onsets.tsv`` (every answered marker and its onset sample) and the
resolved config. See docs/experiment.md.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from hmavd.config import add_config_arguments, config_yaml, load_command_config, save_config
from hmavd.errors import UserError, run_command, setup_logging

from .virtual_amp import AmpSettings, VirtualAmp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VirtualAmpConfig(AmpSettings):
    """Settings of ``hmavd-virtual-amp`` (``configs/virtual-amp.yaml``): the amplifier's plus the command's."""

    subject_dir: str = "hmavd_data/sim"
    subject: int = 1
    eeg_stream: str = ""
    marker_stream: str = ""
    duration_s: float = 0.0
    out_dir: str = ""

    def settings(self) -> AmpSettings:
        """The :class:`AmpSettings` part (what the amplifier streams)."""
        return AmpSettings(**{f.name: getattr(self, f.name) for f in fields(AmpSettings)})

    def validate(self) -> None:
        super().validate()
        if self.subject < 1:
            raise UserError(f"subject: {self.subject} must be >= 1 (sub-01 is subject 1)")
        if self.duration_s < 0:
            raise UserError(f"duration_s: {self.duration_s} must be >= 0 (0 = until Ctrl-C)")


_FLAGS = ("subject_dir", "eeg_stream", "marker_stream", "out_dir")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hmavd-virtual-amp", description=__doc__.split("\n\n")[0])
    p.add_argument("--subject-dir", dest="subject_dir", help="folder written by hmavd-simulate")
    p.add_argument("--eeg-stream", dest="eeg_stream", help="EEG stream name (default: unique hmavd-amp-eeg-<id>)")
    p.add_argument("--marker-stream", dest="marker_stream", help="marker stream to answer (default: first Markers)")
    p.add_argument("--duration", dest="duration_s", type=float, help="seconds to stream (default: until Ctrl-C)")
    p.add_argument("--out-dir", dest="out_dir", help="folder for onsets.tsv and the resolved config")
    p.add_argument("-v", "--verbose", action="store_true")
    add_config_arguments(p, default="virtual-amp")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    cfg = load_command_config(VirtualAmpConfig, args, (*_FLAGS, "duration_s"))
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    from .replay import unique_names
    from .virtual_subject import load_virtual_subject

    subject = load_virtual_subject(cfg.subject_dir, cfg.subject)
    name = cfg.eeg_stream or unique_names("hmavd-amp")[0]
    amp = VirtualAmp(subject, cfg.settings(), eeg_stream=name, marker_stream=cfg.marker_stream, poll_interval_s=0.01)
    amp.connect()
    print(
        f"EEG stream: {name}  ({len(amp.ch_names)} ch at {amp.sfreq:g} Hz, {cfg.unit}); answering "
        f"{cfg.marker_stream or 'the first Markers stream'}",
        flush=True,
    )
    t_end = time.monotonic() + cfg.duration_s if cfg.duration_s else None
    try:
        while t_end is None or time.monotonic() < t_end:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        amp.disconnect()
    if cfg.out_dir:
        _write_onsets(Path(cfg.out_dir), amp, cfg)
    print(
        f"streamed {amp.n_written} samples, answered {len(amp.onsets)} markers "
        f"({amp.lost_samples} response samples lost to late markers)",
        flush=True,
    )
    return 0


def _write_onsets(out: Path, amp: VirtualAmp, cfg: VirtualAmpConfig) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "virtual_amp_config.yaml")
    with open(out / "onsets.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["code", "t_s", "sample", "partition", "image", "lost_samples", "shown_sample"])
        for o in amp.onsets:
            w.writerow([o.code, f"{o.t_s:.6f}", o.sample, o.partition, o.image, o.lost, o.shown])
    (out / "stream.yaml").write_text(
        yaml.safe_dump(
            {"t0_s": amp.t0, "sfreq": amp.sfreq, "n_samples": amp.n_written, "ch_names": list(amp.ch_names)},
            sort_keys=False,
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-virtual-amp``."""
    return run_command("hmavd-virtual-amp", _body, argv)

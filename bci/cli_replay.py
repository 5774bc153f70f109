"""``hmavd-replay``: stream a recording as an EEG LSL stream plus a marker stream.

Examples::

    hmavd-replay data/recordings/sub-01_test.fif --replay-speed 4 --loop
    hmavd-replay raw_eeg_test.npy --eeg-stream my-eeg --marker-stream my-markers --sample-index
    hmavd-replay session_raw.fif --config my_replay.yaml chunk_ms=5
    hmavd-replay recordings/live-20260101-120000                  # a session hmavd-live recorded
    hmavd-replay recordings/live-20260101-120000 --to-fif raw_eeg_test.fif   # for hmavd-prepare

Reads simulated/real FIF, BrainVision, EDF, XDF and ThingsEEG2 raw ``.npy`` (via
``hmavd.preprocessing.raw_io.read_recording``) and session folders written by ``hmavd-live``;
markers are stamped at their exact sample time. Ctrl-C stops cleanly.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from hmavd.config import ValidatedConfig, add_config_arguments, config_yaml, load_command_config
from hmavd.errors import UserError, run_command, setup_logging

from .replay import LSLPlayer, load_replay, unique_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplayConfig(ValidatedConfig):
    """Settings of ``hmavd-replay`` (names empty: unique ``hmavd-eeg-<id>`` / ``hmavd-markers-<id>``)."""

    eeg_stream: str = ""
    marker_stream: str = ""
    replay_speed: float = 1.0
    loop: bool = False
    sample_index: bool = False
    chunk_ms: float = 10.0
    wait_consumers_s: float = 0.0
    start_s: float = 0.0
    stop_s: float = 0.0
    units: str = "V"
    label_units: bool = True

    def validate(self) -> None:
        from .replay import check_replay_speed, stream_units_key

        stream_units_key(self.units)
        check_replay_speed(self.replay_speed)
        if self.chunk_ms <= 0:
            raise UserError(f"chunk_ms: {self.chunk_ms} must be > 0 (e.g. 10)")


_FLAGS = ("eeg_stream", "marker_stream", "replay_speed", "chunk_ms", "wait_consumers_s", "start_s", "stop_s", "units")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hmavd-replay", description=__doc__.split("\n\n")[0])
    p.add_argument("recording", help="FIF, BrainVision .vhdr, EDF/BDF, XDF, ThingsEEG2 raw .npy, or a session folder")
    p.add_argument(
        "--to-fif",
        dest="to_fif",
        default=None,
        metavar="OUT.fif",
        help="convert a live session folder to FIF (for hmavd-prepare) and exit",
    )
    p.add_argument("--eeg-stream", dest="eeg_stream", help="EEG stream name (default: unique)")
    p.add_argument("--marker-stream", dest="marker_stream", help="marker stream name (default: unique)")
    p.add_argument(
        "--replay-speed", dest="replay_speed", type=float, help="1 = real time (default), 10 = ten times faster"
    )
    p.add_argument("--loop", action="store_true", default=None, help="start again at the end")
    p.add_argument(
        "--sample-index",
        dest="sample_index",
        action="store_true",
        default=None,
        help="add a sample_index channel (each sample's index in the recording)",
    )
    p.add_argument("--chunk-ms", dest="chunk_ms", type=float, help="milliseconds of data per pushed chunk")
    p.add_argument(
        "--wait-consumers-s", dest="wait_consumers_s", type=float, help="wait this long for a consumer before streaming"
    )
    p.add_argument("--start-s", dest="start_s", type=float, help="start this far into the recording")
    p.add_argument("--stop-s", dest="stop_s", type=float, help="stop this far into the recording (0 = end)")
    p.add_argument("--units", help="units of the streamed EEG channels: V (default), mV, uV, nV")
    p.add_argument(
        "--no-unit-label",
        dest="label_units",
        action="store_false",
        default=None,
        help="leave the channels' unit empty in the stream description (an unlabelled stream)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    add_config_arguments(p, default="replay")
    return p


def _body(argv: Sequence[str] | None) -> int:
    args = _parser().parse_intermixed_args(argv)
    setup_logging(args.verbose)
    cfg = load_command_config(ReplayConfig, args, (*_FLAGS, "loop", "sample_index", "label_units"))
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    if args.to_fif:
        return _to_fif(args.recording, args.to_fif)
    rec = load_replay(args.recording, sample_index=cfg.sample_index)
    eeg_stream, marker_stream = unique_names()
    eeg_stream, marker_stream = cfg.eeg_stream or eeg_stream, cfg.marker_stream or marker_stream
    player = LSLPlayer(
        rec,
        eeg_stream,
        marker_stream,
        replay_speed=cfg.replay_speed,
        loop=cfg.loop,
        chunk_s=cfg.chunk_ms / 1e3,
        start_sample=int(cfg.start_s * rec.sfreq),
        stop_sample=int(cfg.stop_s * rec.sfreq),
        units=cfg.units,
        label_units=cfg.label_units,
    )
    label = f"labelled {player.unit_label}" if player.unit_label else "unlabelled"
    desc = f"{len(rec.ch_names)} ch at {rec.sfreq:g} Hz, {player.units}, {label}"
    print(f"EEG stream:    {eeg_stream}  ({desc})", flush=True)
    print(f"marker stream: {marker_stream}  ({player.n_events} markers)", flush=True)
    if cfg.wait_consumers_s > 0 and not player.wait_for_consumers(cfg.wait_consumers_s):
        log.warning("no consumer after %.1f s; streaming anyway", cfg.wait_consumers_s)
    player.start()
    try:
        while not player.done.wait(0.2):
            pass
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        player.close()
    print(f"streamed {player.n_pushed} samples and {player.n_markers} markers", flush=True)
    return 0


def _to_fif(session: str, out: str) -> int:
    from pathlib import Path

    from .recording_io import recording_to_fif

    if not Path(session).is_dir():
        raise UserError(f"--to-fif: {session} is not a session folder; convert folders written by hmavd-live")
    if not out.lower().endswith((".fif", ".fif.gz")):
        raise UserError(f"--to-fif: {out!r} must end in .fif or .fif.gz (MNE's naming); e.g. raw_eeg_test.fif")
    if Path(out).exists():
        raise UserError(f"--to-fif: {out} exists; remove it or choose another name")
    path = recording_to_fif(session, out)
    print(f"wrote {path}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hmavd-replay``."""
    return run_command("hmavd-replay", _body, argv)

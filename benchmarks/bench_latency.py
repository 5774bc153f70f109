"""Latency, missed epochs and dropped samples of the live pipeline over real LSL on loopback (docs/realtime.md).

A player process (:class:`bci.replay.LSLPlayer`, looping a random recording) streams ``--chans``
channels at ``--sfreq`` Hz plus a ``sample_index`` channel (the number of samples streamed before
each sample) and a marker stream with an onset every 200 ms. This process runs the live pipeline
exactly as ``hmavd-live --headless`` does (:class:`bci.engine.LiveEngine`: pylsl acquisition thread,
marker inlet, online epocher with the NICE preset and MVNN, decoder, session recording) on a randomly
initialised HMAVD checkpoint (TSConv encoder, ``--chans`` × 250 input at 1000 Hz, 200 templates). It prints:

* last sample received → epoch ready / → prediction ready (the engine's own clock), and the same from
  the moment the player pushed that sample (includes LSL transport), p50/p99/max in ms;
* missed and duplicated epochs (each epoch's ``sample_index`` at its onset against the markers sent),
  samples of alignment error, dropped samples (holes in the received ``sample_index`` sequence);
* CPU use (% of one core) of the acquisition thread, of epoching, of decoding, and of this process;
* beside it, in the same run, an independent minimal pylsl consumer (its own process, only pylsl,
  numpy and ``mne.filter.resample``: pull_chunk into a numpy array, cut each window, baseline,
  resample, crop, whiten), so the figures come with a same-machine, same-moment reference: its
  last sample pushed → received (the transport floor) and → epoch ready, and our ratio to it;
* with ``--compare`` (default), epochs alternate between the previous live path (whole-window epoch
  transform, TSConv in NICE's layer order conv → pool) and the current one (epoch transform split
  early / tail, fused TSConv), so before / after come from one run under the same load.

Targets (64 ch × 1000 Hz, 2-core CPU, 10 minutes): epoch ready p50 ≤ 1 ms, p99 ≤ 3 ms; prediction
p99 ≤ 20 ms; zero missed, duplicated or dropped; acquisition + epoching ≤ 10 % of one core (run with
``--no-compare`` for the CPU figure of the current path alone)::

    python benchmarks/bench_latency.py                     # 64 ch × 1000 Hz for 600 s
    python benchmarks/bench_latency.py --duration 60 --threads 0   # torch's and BLAS's default threads
    python benchmarks/bench_latency.py --sweep --sweep-duration 10   # 64/128/256 ch × 1000/2048/4096 Hz

``--sweep`` runs the grid (short runs) and reports the largest channels × rate sustained with no
dropped sample and no missed epoch. The player, the minimal consumer, the thread CPU timers and the
percentile strings are in ``benchmarks/latency_kit.py`` (imported from this script's folder).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from latency_kit import (
    LOOP_S,
    N_CONCEPTS,
    ONSET_EVERY_S,
    THREAD_VARS,
    CPUTimer,
    ch_names,
    minimal_figures,
    minimal_main,
    percentiles,
    player_main,
    push_time,
    ratios,
    thread_cpu_s,
    threads_cpu_s,
)


def build_model(folder: Path, n_chans: int, sfreq: float = 1000.0, seed: int = 0) -> tuple[Path, Path, Path]:
    """A random HMAVD checkpoint (TSConv on the NICE preset's output of a ``sfreq`` recording: 250 samples
    at 1000 Hz, 249 at 2048 Hz), a 200-concept feature cache and an mvnn.npz."""
    import torch

    from hmavd.checkpoint import save_checkpoint
    from hmavd.features.cache import save_feature_cache
    from hmavd.models.hmavd_model import HMAVD, ModelConfig
    from hmavd.preprocessing.presets import PRESETS
    from hmavd.preprocessing.transforms import preprocessed_times

    preset = PRESETS["nice"]
    times = preprocessed_times(preset, sfreq)
    torch.manual_seed(seed)
    model = HMAVD(ModelConfig(encoder="tsconv", n_chans=n_chans, n_times=len(times))).eval()
    names = list(ch_names(n_chans))
    ckpt = save_checkpoint(
        folder / "best.safetensors", model, extra={"ch_names": names, "times": times.tolist(), "sfreq": preset.sfreq}
    )
    rng = np.random.default_rng(seed)
    d, k = model.cfg.feature_dim, N_CONCEPTS
    concepts = [f"{i + 1:05d}_concept{i + 1}" for i in range(k)]
    arrays = {
        f"{s}_{m}_features": rng.standard_normal((k if s == "test" else 2, d)).astype(np.float32)
        for s in ("train", "test")
        for m in ("image", "text")
    }
    prov = {
        "model": "random",
        "train_images": ["a/0.jpg", "a/1.jpg"],
        "train_concepts": ["a", "b"],
        "test_images": [f"{c}/{c}.jpg" for c in concepts],
        "test_concepts": concepts,
    }
    cache = save_feature_cache(folder / "features", arrays, prov)
    a = rng.standard_normal((n_chans, n_chans)) / np.sqrt(n_chans)
    w = np.linalg.inv(np.linalg.cholesky(a @ a.T + np.eye(n_chans))) * 1e5  # a dense whitening-like matrix
    np.savez(folder / "mvnn.npz", whitening=w[None], ch_names=np.array(names))
    return ckpt, cache, folder / "mvnn.npz"


@dataclass
class RunResult:
    """What one run measured (latencies in ms, CPU in % of one core)."""

    n_chans: int
    sfreq: float
    duration_s: float
    expected: int = 0
    decoded: int = 0
    missed: int = 0
    duplicated: int = 0
    align_max: int = 0
    received: int = 0
    dropped: int = 0
    repeated: int = 0
    rejected: dict = field(default_factory=dict)
    lat: dict = field(default_factory=dict)
    minimal: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    walls: dict = field(default_factory=dict)
    threads: str = ""

    @property
    def clean(self) -> bool:
        return not (self.dropped or self.repeated or self.missed or self.duplicated or self.align_max)


def run_once(n_chans: int, sfreq: float, duration_s: float, args: argparse.Namespace) -> RunResult:
    """Stream, decode and measure one configuration."""
    from bci.engine import LiveConfig, LiveEngine
    from bci.replay import unique_names

    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
        tmp = Path(tmp)
        ckpt, cache, mvnn = build_model(tmp, n_chans, sfreq)
        names = unique_names("bench")
        ctx = mp.get_context("spawn")
        child = ctx.Process(
            target=player_main, args=(n_chans, sfreq, duration_s, names, str(tmp / "push.npy")), daemon=True
        )
        child.start()
        minimal = None
        if args.minimal:
            minimal = ctx.Process(
                target=minimal_main,
                args=(names[0], n_chans, sfreq, duration_s, str(mvnn), str(tmp / "minimal.npy")),
                daemon=True,
            )
            env = {k: os.environ.get(k) for k in THREAD_VARS}
            os.environ.update({k: "1" for k in THREAD_VARS})  # one BLAS thread, as the pipeline's --threads 1
            minimal.start()
            for k, v in env.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        cfg = LiveConfig(
            eeg_stream=names[0],
            marker_stream=names[1],
            checkpoint=str(ckpt),
            features=str(cache),
            whitening=str(mvnn),
            preset="nice",
            device=args.device,
            compute_threads=args.threads,
            resolve_timeout_s=30.0,
            marker_timeout_s=3.0,
            status_interval_s=1.0,
        )
        engine = LiveEngine(cfg)
        engine.connect()
        if args.record:
            engine.record_start(str(tmp / "session"))
        rows, idx, cpu, walls, threads = _consume(engine, child, duration_s, args.compare, sfreq)
        engine.disconnect()
        child.join(10.0)
        push = np.load(tmp / "push.npy") if (tmp / "push.npy").exists() else np.zeros((0, 2))
        mini = np.zeros((0, 3))
        if minimal is not None:
            minimal.join(duration_s + 60.0)
            mini = np.load(tmp / "minimal.npy") if (tmp / "minimal.npy").exists() else mini
    res = _summarise(n_chans, sfreq, duration_s, engine, rows, idx, push, cpu)
    res.minimal = minimal_figures(mini, push, engine.epocher.first_offset + engine.epocher.n_in - 1)
    res.walls = {k: v for k, v in walls.items() if len(v)}
    res.threads = threads
    return res


def _install_compare(engine, sfreq: float):
    """Alternate epochs: even onsets (in steps of 200 ms) take the previous live path, odd ones the current.

    Previous: the whole window transformed when the poll after its last sample runs, TSConv in NICE's
    layer order. Current: the epoch transform split early / tail (:mod:`bci.early_transform`), the poll
    before the completing chunk waiting for it (``OnlineEpocher.spin_s``), fused TSConv.
    Returns ``before(onset_index) -> bool``.
    """
    ep, step = engine.epocher, int(round(ONSET_EVERY_S * sfreq))

    def before(onset: int) -> bool:
        return (onset // step) % 2 == 0

    encoder = getattr(getattr(engine.decoder.encode, "__self__", None), "encoder", None)
    current_read, current_decode = ep._read_window, engine._decode

    def read_window(first, stop):
        return ep._read_raw(first, stop) if before(first - ep.first_offset) else current_read(first, stop)

    def decode(epochs):
        if encoder is not None and hasattr(encoder, "fused"):
            encoder.fused = not before(epochs[0].onset_index)
        return current_decode(epochs)

    current_due = ep._due_next_chunk

    def due_next_chunk():  # the previous path did not wait for the completing chunk
        due = current_due()
        return None if due is None or before(due - ep.n_in - ep.first_offset) else due

    ep._read_window, engine._decode, ep._due_next_chunk = read_window, decode, due_next_chunk
    return before


def _consume(engine, child, duration_s: float, compare: bool = False, sfreq: float = 1000.0):
    """The headless loop plus bookkeeping; returns prediction rows, received sample indices, CPU figures."""
    src = engine.source
    before = _install_compare(engine, sfreq) if compare else None
    ich = src.description.ch_names.index("sample_index")
    engine.epocher.poll = poll = CPUTimer(engine.epocher.poll)
    engine.decoder.decode = decode = CPUTimer(engine.decoder.decode)
    last_offset = engine.epocher.first_offset + engine.epocher.n_in - 1  # onset -> last sample of the window
    rows, idx_parts, seen = [], [], 0
    t0, c0, main0 = time.perf_counter(), time.process_time(), time.thread_time()
    a0, threads0 = thread_cpu_s(src.thread.native_id), threads_cpu_s()
    t_end = time.monotonic() + duration_s + 60.0
    tail = None
    while time.monotonic() < t_end:
        engine.acquire(engine.cfg.poll_interval_s)
        n = src.n_written
        if n > seen:
            idx_parts.append(src.get_data(seen, n)[ich].astype(np.int64))
            seen = n
        for m in engine.get_data():
            if m["type"] == "prediction":
                last = m["onset_index"] + last_offset
                mode = -1 if before is None else int(not before(m["onset_index"]))  # -1 all, 0 before, 1 after
                rows.append((m["sample_index"], m["latency_ms"], m["epoch_latency_ms"], src.buffer.arrival(last), mode))
        if tail is None and not child.is_alive():
            tail = time.monotonic() + engine.cfg.marker_timeout_s + 1.0
        if tail is not None and time.monotonic() > tail:
            break
    wall = time.perf_counter() - t0
    acq = thread_cpu_s(src.thread.native_id) - a0
    pct = lambda s: 100.0 * s / wall  # noqa: E731
    cpu = {
        "acquisition": pct(acq),
        "epoching": pct(poll.cpu_s),
        "decoding": pct(decode.cpu_s),
        "main thread": pct(time.thread_time() - main0),
        "process": pct(time.process_time() - c0),
    }
    cpu["acquisition+epoching"] = cpu["acquisition"] + cpu["epoching"]
    busy = {k: pct(v - threads0.get(k, 0.0)) for k, v in threads_cpu_s().items()}
    top = sorted(busy.items(), key=lambda kv: -kv[1])[:4]
    threads_note = ", ".join(f"{k} {v:.1f}" for k, v in top)
    idx = np.concatenate(idx_parts) if idx_parts else np.zeros(0, np.int64)
    walls = {"decoding, one batch (wall)": np.asarray(decode.busy_ms)}
    polls = {
        "epoching, one poll (wall)": poll.busy_ms,
        "epoching, one poll (CPU)": poll.busy_cpu_ms,
        "received → poll start (wake-up)": poll.wake_ms,
    }
    after = np.array([before is None or not before(i) for i in poll.onsets], dtype=bool)
    for name, v in polls.items():
        v = np.asarray(v)
        if before is None:
            walls[name] = v
        else:
            walls[name + " [before]"], walls[name + " [after]"] = v[~after], v[after]
    return rows, idx, cpu, walls, threads_note


def _summarise(n_chans, sfreq, duration_s, engine, rows, idx, push, cpu) -> RunResult:
    res = RunResult(n_chans, sfreq, duration_s, cpu=cpu, rejected=dict(engine.epocher.rejected))
    res.received = int(idx.size)
    if idx.size:
        steps = np.diff(idx)
        res.dropped = int(np.sum(steps[steps > 1] - 1))  # holes in the sample_index sequence
        res.repeated = int(np.sum(steps < 1))
    ep = engine.epocher
    step, n_loop = int(round(ONSET_EVERY_S * sfreq)), int(LOOP_S * sfreq)
    onsets = np.array(
        [
            lp * n_loop + s
            for lp in range(int(idx.max() // n_loop) + 2 if idx.size else 0)
            for s in range(step // 2, n_loop, step)
        ],
        dtype=np.int64,
    )
    if idx.size:  # markers whose whole window was streamed and received
        lo, hi = idx[0] - ep.first_offset, idx[-1] - (ep.first_offset + ep.n_in - 1)
        onsets = onsets[(onsets >= lo) & (onsets <= hi)]
    got = np.array([r[0] for r in rows], dtype=np.int64)
    res.expected, res.decoded = len(onsets), len(got)
    res.duplicated = int(len(got) - len(np.unique(got)))
    res.missed = int(len(np.setdiff1d(onsets, got)))
    if len(got) and len(onsets):
        near = onsets[np.clip(np.searchsorted(onsets, got), 0, len(onsets) - 1)]
        prev = onsets[np.clip(np.searchsorted(onsets, got) - 1, 0, len(onsets) - 1)]
        res.align_max = int(np.max(np.minimum(np.abs(got - near), np.abs(got - prev))))
    if rows:
        r = np.array(rows, dtype=np.float64)  # sample_index, latency_ms, epoch_latency_ms, last arrival (s), mode
        for mode, tag in ((-1, ""), (0, " [before]"), (1, " [after]")):
            g = r[r[:, 4] == mode]
            if not len(g):
                continue
            res.lat["received → epoch ready" + tag] = g[:, 2]
            res.lat["received → prediction" + tag] = g[:, 1]
            if len(push):
                transport = (g[:, 3] - push_time(push, g[:, 0] + ep.first_offset + ep.n_in - 1)) * 1e3
                res.lat["pushed → epoch ready" + tag] = transport + g[:, 2]
                res.lat["pushed → prediction" + tag] = transport + g[:, 1]
    return res


def _report(res: RunResult, args: argparse.Namespace) -> None:
    rec = "on" if args.record else "off"
    print(
        f"== {res.n_chans} ch × {res.sfreq:g} Hz, onset every {ONSET_EVERY_S * 1e3:.0f} ms, {res.duration_s:g} s, "
        f"device {args.device}, compute threads {args.threads or 'default'}, recording {rec}, "
        f"{'alternating previous [before] / current [after] path' if args.compare else 'current path'}"
    )
    print(
        f"   epochs: expected {res.expected}, decoded {res.decoded}, missed {res.missed}, duplicated "
        f"{res.duplicated}, alignment error max {res.align_max} samples, rejected {res.rejected or 'none'}"
    )
    print(
        f"   samples: received {res.received}, dropped {res.dropped}, repeated/out of order {res.repeated} "
        "(from sample_index)"
    )
    for name, v in res.lat.items():
        print(f"   last sample {name:<22} {percentiles(v)}")
    for name, v in res.walls.items():
        print(f"   {name:<45} {percentiles(v)}")
    for name, v in res.minimal.items():
        print(f"   minimal consumer {name:<21} {percentiles(v)}  ({len(v)} epochs)")
    tag = " [after]" if "received → epoch ready [after]" in res.lat else ""
    pairs = [
        ("received → epoch ready", "received → epoch ready"),
        ("pushed → epoch ready", "pushed → epoch ready"),
        ("pushed → epoch ready", "pushed → received"),
    ]
    for ours, theirs in pairs:
        a, b = res.lat.get(ours + tag), res.minimal.get(theirs)
        if a is not None and b is not None:
            print(f"   ratio ours {ours}{tag} / minimal consumer {theirs}: {ratios(a, b)}")
    for what in ("received → epoch ready", "received → prediction"):
        a, b = res.lat.get(what + " [before]"), res.lat.get(what + " [after]")
        if a is not None and b is not None:
            print(f"   before / after, {what}: {ratios(a, b)}")
    _bound(res, tag)
    print("   CPU (% of one core): " + ", ".join(f"{k} {v:.1f}" for k, v in res.cpu.items()))
    print(f"   busiest threads of this process (%): {res.threads}")


def _bound(res: RunResult, tag: str) -> None:
    """One line on what bounds the epoch-ready p99: the transform's own time, or getting a thread to run."""
    ours, floor = res.lat.get("received → epoch ready" + tag), res.minimal.get("pushed → received")
    cpu = res.walls.get("epoching, one poll (CPU)" + tag, res.walls.get("epoching, one poll (CPU)"))
    if ours is None or floor is None or cpu is None or not len(cpu):
        return
    p99, p99_floor, p50_cpu = float(np.percentile(ours, 99)), float(np.percentile(floor, 99)), float(np.median(cpu))
    verdict = "met" if p99 <= 3.0 else "not met"
    print(
        f"   epoch-ready p99 {p99:.2f} ms (target <= 3 ms: {verdict}); one poll's CPU p50 {p50_cpu:.2f} ms "
        f"(includes waiting for the completing chunk); the same moment's transport floor (minimal pylsl "
        f"consumer pushed → received) p99 {p99_floor:.2f} ms: ratio {p99 / p99_floor:.2f}"
        + (" -> scheduler-bound (threads not running when data arrive)" if p99_floor >= 3.0 else "")
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds streamed (default 600)")
    p.add_argument("--chans", type=int, default=64)
    p.add_argument("--sfreq", type=float, default=1000.0)
    p.add_argument("--device", default="cpu", help="decoder device: cpu, cuda or auto")
    p.add_argument("--threads", type=int, default=1, help="torch + BLAS threads (0 = the libraries' defaults)")
    p.add_argument("--no-record", dest="record", action="store_false", help="do not record the session")
    p.add_argument(
        "--no-compare",
        dest="compare",
        action="store_false",
        help="every epoch on the current path (default: alternate previous / current path)",
    )
    p.add_argument(
        "--no-minimal",
        dest="minimal",
        action="store_false",
        help="without the independent minimal pylsl consumer beside the pipeline",
    )
    p.add_argument("--sweep", action="store_true", help="run the channels × rate grid instead")
    p.add_argument("--sweep-chans", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--sweep-sfreqs", type=float, nargs="+", default=[1000.0, 2048.0, 4096.0])
    p.add_argument("--sweep-duration", type=float, default=10.0, help="seconds per grid point")
    args = p.parse_args(argv)
    print(f"machine: {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
    if not args.sweep:
        _report(run_once(args.chans, args.sfreq, args.duration, args), args)
        return 0
    args.compare = args.minimal = False  # the grid measures throughput of the current path only
    best = None
    for c in args.sweep_chans:
        for sf in args.sweep_sfreqs:
            res = run_once(c, sf, args.sweep_duration, args)
            _report(res, args)
            if res.clean and (best is None or c * sf > best[0] * best[1]):
                best = (c, sf)
    print("largest sustained without drops or missed epochs: " + (f"{best[0]} ch × {best[1]:g} Hz" if best else "none"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

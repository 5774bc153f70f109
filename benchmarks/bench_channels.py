"""CPU cost of one live epoch transform against channels × rate: whole window vs the split transform.

For each grid point (default 64/128/256 channels × 1000/2048/4096 Hz, the NICE preset, a dense MVNN
matrix) it times, on random data and alternating so load affects both alike:

* ``whole``  the whole-window transform when the last sample is in (:func:`bci.epocher.make_transform`:
  baseline, resampling, crop, whitening of the full window);
* ``finish`` what remains on the critical path with the split transform
  (:meth:`bci.early_transform.EarlyTransform.finish`: the tail times one small matrix, whitening);
* ``prepare`` the early part, computed before the tail arrives (off the critical path).

It runs with one BLAS thread (as the live pipeline's ``--threads 1``) and prints per-epoch p50 /
p99 (ms of CPU time of this thread, so other processes' load does not inflate it; wall p99 beside
it) and the whole / finish ratio: ``finish`` is the transform's share of the 3 ms epoch-ready budget,
the rest is left to the threads' wake-ups. ``benchmarks/bench_latency.py --sweep`` measures the same
grid end to end over real LSL (drops, missed epochs)::

    python benchmarks/bench_channels.py
    python benchmarks/bench_channels.py --chans 64 --sfreqs 1000 --repeats 500
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # one BLAS thread, as live
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from bci.early_transform import EarlyTransform, LateEpoch  # noqa: E402
from bci.epocher import make_transform  # noqa: E402
from hmavd.preprocessing.presets import PRESETS  # noqa: E402
from hmavd.preprocessing.transforms import epoch_window_samples  # noqa: E402


def _percentiles(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99))


def measure(n_chans: int, sfreq: float, repeats: int, seed: int = 0) -> dict[str, tuple[float, float]]:
    """p50 / p99 (ms) per epoch of the whole-window transform, of ``finish`` and of ``prepare`` (CPU and wall)."""
    preset = PRESETS["nice"]
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n_chans, n_chans)) / np.sqrt(n_chans)
    whitening = np.linalg.inv(np.linalg.cholesky(a @ a.T + np.eye(n_chans)))  # (C, C) dense
    _, n_in = epoch_window_samples(preset.tmin_s, preset.tmax_s, sfreq)
    whole, split = make_transform(preset, sfreq, whitening), EarlyTransform(preset, sfreq, whitening)
    k = n_in - split.default_tail
    x = rng.standard_normal((n_chans, n_in)) * 1e-5  # (C, n_in) volts
    runs = {name: ([], []) for name in ("whole", "finish", "prepare")}

    def timed(name: str, fn):
        c0, w0 = time.thread_time(), time.perf_counter()
        out = fn()
        runs[name][0].append((time.thread_time() - c0) * 1e3)
        runs[name][1].append((time.perf_counter() - w0) * 1e3)
        return out

    for i in range(repeats + 5):  # 5 warm-up epochs (FFT plans, the tail matrix)
        prep = timed("prepare", lambda: split.prepare(0, x[:, :k]))
        timed("finish", lambda prep=prep: split.finish(LateEpoch(prep, x[:, k:])))
        timed("whole", lambda: whole(x[None]))
        if i < 5:
            for cpu, wall in runs.values():
                cpu.clear(), wall.clear()
    out = {}
    for name, (cpu, wall) in runs.items():
        out[f"{name} cpu"] = _percentiles(cpu)
        out[f"{name} wall"] = _percentiles(wall)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--chans", type=int, nargs="+", default=[64, 128, 256])
    p.add_argument("--sfreqs", type=float, nargs="+", default=[1000.0, 2048.0, 4096.0])
    p.add_argument("--repeats", type=int, default=200, help="timed epochs per grid point")
    args = p.parse_args(argv)
    print("per epoch, ms (CPU time of this thread; wall p99 in brackets)")
    heads = " | ".join(f"{h + ' p50/p99 [wall p99]':>27}" for h in ("whole", "finish", "prepare"))
    print(f"{'grid point':>17} | {heads} | whole/finish")
    for c in args.chans:
        for sf in args.sfreqs:
            r = measure(c, sf, args.repeats)
            w, f, pr = r["whole cpu"], r["finish cpu"], r["prepare cpu"]
            cells = [f"{v[0]:6.2f}/{v[1]:6.2f}" for v in (w, f, pr)]
            walls = [f"[{r[k + ' wall'][1]:.2f}]" for k in ("whole", "finish", "prepare")]
            row = " | ".join(f"{a} {b}" for a, b in zip(cells, walls))
            print(f"{c:5d} ch {sf:6g} Hz | {row} | {w[0] / f[0]:6.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

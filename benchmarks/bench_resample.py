"""Per-epoch time of MNE's resampling vs the vectorised :func:`hmavd.preprocessing.resample_epochs`.

The old path is ``mne.filter.resample(npad="auto", window="auto", pad="edge")`` (what
``mne.Epochs.resample`` runs, one FFT pair per channel in a Python loop); the new path is one FFT
pair over all leading axes with a cached plan. Both run on the same random data, alternating
repeat by repeat so machine load affects them alike; the script prints median and p99 per epoch,
the speed-up ratio and the largest relative difference between the two outputs. Also timed: the
whole live ``preprocess_epoch`` (baseline -> resample -> crop) of one NICE epoch::

    python benchmarks/bench_resample.py                    # (64, 1200) and (100, 63, 1200), 1000 -> 250 Hz
    python benchmarks/bench_resample.py --repeats 500 --sfreq-in 2048
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import mne
import numpy as np

from hmavd.preprocessing import get_preset
from hmavd.preprocessing.transforms import epoch_window_samples, preprocess_epoch, resample_epochs


def _old(x: np.ndarray, sfreq_in: float, sfreq_out: float) -> np.ndarray:
    return mne.filter.resample(x, sfreq_out, sfreq_in, npad="auto", window="auto", pad="edge", verbose="error")


def _time_pair(funcs: dict[str, Callable[[], np.ndarray]], repeats: int, per: int) -> dict[str, tuple[float, float]]:
    """Median and p99 wall time (ms) per epoch of each function, the functions alternating."""
    times: dict[str, list[float]] = {k: [] for k in funcs}
    for f in funcs.values():  # warm-up: imports, FFT plans, the resample plan cache
        f()
    for _ in range(repeats):
        for name, f in funcs.items():
            t0 = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t0) * 1e3 / per)
    return {k: (float(np.median(v)), float(np.percentile(v, 99))) for k, v in times.items()}


def _case(label: str, x: np.ndarray, sfreq_in: float, sfreq_out: float, repeats: int) -> None:
    per = int(np.prod(x.shape[:-2])) if x.ndim > 2 else 1
    old, new = _old(x, sfreq_in, sfreq_out), resample_epochs(x, sfreq_in, sfreq_out)
    rel = float(np.abs(new - old).max() / np.abs(old).max())
    res = _time_pair(
        {"old": lambda: _old(x, sfreq_in, sfreq_out), "new": lambda: resample_epochs(x, sfreq_in, sfreq_out)},
        repeats,
        per,
    )
    (o50, o99), (n50, n99) = res["old"], res["new"]
    print(
        f"{label:<34} old {o50:8.3f} ms (p99 {o99:8.3f})  new {n50:7.3f} ms (p99 {n99:7.3f})  "
        f"speed-up x{o50 / n50:6.1f}  max rel diff {rel:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sfreq-in", type=float, default=1000.0)
    p.add_argument("--sfreq-out", type=float, default=250.0)
    p.add_argument("--n-times", type=int, default=1200)
    p.add_argument("--repeats", type=int, default=200, help="timed repeats of the single epoch (batch: /20)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    f_in, f_out, n = args.sfreq_in, args.sfreq_out, args.n_times
    print(f"resampling {f_in:g} -> {f_out:g} Hz, {n} samples; times are per epoch (median, p99)")
    epoch = rng.standard_normal((64, n)).cumsum(-1) * 1e-6
    _case(f"single epoch (64, {n})", epoch, f_in, f_out, args.repeats)
    batch = rng.standard_normal((100, 63, n)).cumsum(-1) * 1e-6
    _case(f"batch (100, 63, {n})", batch, f_in, f_out, max(3, args.repeats // 20))

    preset = get_preset("nice")
    n_live = epoch_window_samples(preset.tmin_s, preset.tmax_s, f_in)[1]
    live = rng.standard_normal((64, n_live)).cumsum(-1) * 1e-6
    res = _time_pair({"live": lambda: preprocess_epoch(live, f_in, preset)}, args.repeats, 1)
    print(f"preprocess_epoch nice (64, {n_live})     {res['live'][0]:.3f} ms (p99 {res['live'][1]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

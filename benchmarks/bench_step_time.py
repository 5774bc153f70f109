"""Training step time: NICE's layer order vs the fused TSConv, and HMAVD / NICE, measured in one run.

All models train on the same random batch (default 1000 trials of 63 x 250, 768-d features, resident on
the device) with the real :class:`hmavd.train.TrainStep` (forward, loss, backward, MCDB, gradient norms,
optimiser). Wall time is what it reports first; the process's CPU time per step is printed beside the
HMAVD / NICE ratio. On a shared, loaded CPU the wall time of a multi-threaded step also counts each parallel
kernel's wait for a descheduled thread (HMAVD's step has more such kernels, so it pays more of them), and
its CPU time counts some of that waiting too; ``--threads 1`` and its CPU-time ratio give the figure load
distorts least. Variants:

* ``nice-unfused``  NICE with the temporal conv (1, 25) followed by the avg-pool (1, 51)/5 (NICE's order)
* ``nice``          NICE with the fused conv + pool (one stride-5 (1, 75) convolution; the default)
* ``hmavd``         HMAVD (text + adapters + MCDB + SPR), fused
* ``hmavd-unfused`` HMAVD with NICE's layer order

On CPU the fused path runs the first five layers (conv, pool, BatchNorm, ELU, spatial conv) as one
function (``hmavd.models.encoders._TSConvFront``: moving average, BatchNorm folded into the kernel, the
maps written once channel-major, the spatial convolution as single matrix products); on CUDA the conv +
pool is one strided convolution. ``--breakdown`` (default) also times forward + backward of each layer
of both paths on the same batch, which shows what bounds the step.

Steps alternate between the variants so machine load affects all alike. It prints each variant's median
step time, the fused speed-up (NICE unfused / NICE fused) and the HMAVD / NICE ratio on the fused path
(target <= 1.10; the paper's Table 1 reports 1.59), each also as the median of adjacent-step ratios, which
load bursts from other processes disturb less::

    python benchmarks/bench_step_time.py                       # CPU, paper batch
    python benchmarks/bench_step_time.py --device cuda --steps 50 --variants nice-unfused,nice,hmavd,hmavd-unfused
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time

import torch

from hmavd.config import load_config
from hmavd.devices import resolve_device
from hmavd.train import TrainConfig, TrainStep, build_model, make_optimizer

#: variant -> (training config, fused TSConv)
VARIANTS = {
    "nice-unfused": ("nice", False),
    "nice": ("nice", True),
    "hmavd": ("hmavd-63", True),
    "hmavd-unfused": ("hmavd-63", False),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(label: str, device: torch.device, n_chans: int, n_times: int, dim: int) -> TrainStep:
    """The real training step of one :data:`VARIANTS` entry, its model on ``device`` (seed 0)."""
    name, fused = VARIANTS[label]
    cfg = dataclasses.replace(load_config(TrainConfig, name), spr_sigma_max=1e-3)
    torch.manual_seed(0)
    model = build_model(cfg, n_chans, n_times, dim).to(device)
    model.encoder.fused = fused
    return TrainStep(cfg, model, make_optimizer(cfg, model, total_steps=1000))


def measure_step_times(
    variants: list[str],
    device: torch.device,
    batch: int,
    n_chans: int,
    n_times: int,
    dim: int,
    steps: int,
    warmup: int,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per training step of each variant, steps interleaved across variants (one list per variant).

    ``cpu_times``, when given, is filled the same way with this process's CPU seconds per step (all threads:
    on a loaded machine the wall time also measures the scheduler, the CPU time much less so).
    """
    g = torch.Generator().manual_seed(0)
    eeg = torch.randn(batch, n_chans, n_times, generator=g).to(device)  # (B, C, T)
    img = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device)  # (B, D)
    txt = torch.nn.functional.normalize(torch.randn(batch, dim, generator=g), dim=1).to(device)  # (B, D)
    runners = {label: make_step(label, device, n_chans, n_times, dim) for label in variants}
    times: dict[str, list[float]] = {k: [] for k in runners}
    for i in range(warmup + steps):
        for label, step in runners.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            logs = step(eeg, img, txt)
            float(logs["total"])  # one host sync per step, as the logger does
            _sync(device)
            if i >= warmup:
                times[label].append(time.perf_counter() - t0)
                if cpu_times is not None:
                    cpu_times.setdefault(label, []).append(time.process_time() - c0)
    return times


def measure_eval_times(
    device: torch.device, batch: int, n_chans: int, n_times: int, reps: int
) -> dict[str, list[float]]:
    """Seconds per evaluation forward (``encode_eeg`` in eval mode, no grad) of NICE unfused / fused, interleaved."""
    eeg = torch.randn(batch, n_chans, n_times, generator=torch.Generator().manual_seed(1)).to(device)  # (B, C, T)
    model = make_step("nice", device, n_chans, n_times, 768).model.eval()
    times: dict[str, list[float]] = {"eval-unfused": [], "eval": []}
    with torch.inference_mode():
        for i in range(reps + 1):
            for label in times:
                model.encoder.fused = label == "eval"
                _sync(device)
                t0 = time.perf_counter()
                model.encode_eeg(eeg)  # (B, D)
                _sync(device)
                if i:
                    times[label].append(time.perf_counter() - t0)
    return times


def _fwd_bwd_s(fn, x: torch.Tensor, reps: int, device: torch.device, input_grad: bool = True) -> float:
    """Median seconds of ``fn(x)`` forward + backward (the input's gradient too unless it is the epoch)."""
    out = []
    for i in range(reps + 1):
        xi = x.detach().requires_grad_(input_grad)
        _sync(device)
        t0 = time.perf_counter()
        y = fn(xi)
        y.backward(torch.ones_like(y))
        _sync(device)
        if i:
            out.append(time.perf_counter() - t0)
    return statistics.median(out)


def layer_breakdown(device: torch.device, batch: int, n_chans: int, n_times: int, reps: int) -> dict[str, float]:
    """Forward + backward seconds of each TSConv layer in NICE's order and of the fused front end.

    The layers run on the inputs they see in training (train mode, the same weights); each row's time
    includes allocating and filling its output gradient, as autograd does.
    """
    from hmavd.models.encoders import TSConv

    torch.manual_seed(0)
    enc = TSConv(n_chans, n_times).to(device).train()
    eeg = torch.randn(batch, n_chans, n_times, generator=torch.Generator().manual_seed(2)).to(device)  # (B, C, T)
    x = eeg.unsqueeze(1)  # (B, 1, C, T)
    rows, names = {}, ["conv (1, 25)", "avg-pool (1, 51)/5", "BatchNorm2d", "ELU", "spatial conv (C, 1)"]
    with torch.no_grad():
        inputs = [x]
        for layer in enc.tsconv[:4]:
            inputs.append(layer(inputs[-1]))
    for i, (name, layer, inp) in enumerate(zip(names, enc.tsconv[:5], inputs)):
        rows[f"NICE order: {name}  in {tuple(inp.shape)}"] = _fwd_bwd_s(layer, inp, reps, device, i > 0)
    rows["NICE order: layers 0-4 total"] = sum(rows.values())
    if device.type == "cpu":
        rows["fused front end (layers 0-4 in one function)"] = _fwd_bwd_s(enc._cpu_front, x, reps, device, False)
    with torch.no_grad():
        front = enc.tsconv[:5](x)  # (B, 40, 1, T')
    rest = torch.nn.Sequential(*enc.tsconv[5:], enc.projection)
    rows[f"BatchNorm, ELU, dropout, 1x1 conv  in {tuple(front.shape)}"] = _fwd_bwd_s(rest, front, reps, device)
    return rows


def summarise(times: dict[str, list[float]]) -> dict[str, float]:
    """Medians (s) and the ratios the benchmark reports, from :func:`measure_step_times` output."""
    out = {f"{k}_median_s": statistics.median(v) for k, v in times.items()}

    def ratio(a: str, b: str) -> None:
        if a in times and b in times:
            key = f"{a}/{b}".replace("-", "_")
            out[key] = statistics.median(times[a]) / statistics.median(times[b])
            out[key + "_pairs"] = statistics.median(x / y for x, y in zip(times[a], times[b]))

    ratio("nice-unfused", "nice")
    ratio("eval-unfused", "eval")
    ratio("hmavd-unfused", "hmavd")
    ratio("hmavd", "nice")
    ratio("hmavd-unfused", "nice-unfused")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--n-chans", type=int, default=63)
    p.add_argument("--n-times", type=int, default=250)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    p.add_argument("--variants", default="nice-unfused,nice,hmavd", help=f"comma list of {sorted(VARIANTS)}")
    p.add_argument("--eval-reps", type=int, default=3, help="timed evaluation forwards per path (0 = none)")
    p.add_argument("--breakdown-reps", type=int, default=2, help="timed passes per layer (0 = no breakdown)")
    p.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        print(f"--variants: {bad or args.variants!r} not known; choose from {sorted(VARIANTS)}", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    b, c, t, d = args.batch_size, args.n_chans, args.n_times, args.dim
    cpu: dict[str, list[float]] = {}
    times = measure_step_times(variants, device, b, c, t, d, args.steps, args.warmup, cpu)
    s = summarise(times)
    s.update({f"cpu/{k}": v for k, v in summarise(cpu).items()})
    print(f"device={device} batch={b} eeg={c}x{t} dim={d} threads={torch.get_num_threads()} steps={args.steps}")
    for label in variants:
        v = times[label]
        print(f"{label:14s} step: median {statistics.median(v) * 1e3:8.1f} ms  (min {min(v) * 1e3:.1f} ms)")
    if "nice_unfused/nice" in s:
        print(
            f"fused speed-up NICE (conv -> pool) / NICE fused: {s['nice_unfused/nice']:.2f}x  "
            f"(median of pair ratios {s['nice_unfused/nice_pairs']:.2f}x; expected >= 4 on 2 CPU cores)"
        )
    if "hmavd_unfused/hmavd" in s:
        print(f"fused speed-up HMAVD: {s['hmavd_unfused/hmavd']:.2f}x (pairs {s['hmavd_unfused/hmavd_pairs']:.2f}x)")
    if "hmavd/nice" in s:
        print(
            f"ratio HMAVD/NICE (fused): {s['hmavd/nice']:.3f}  (median of pair ratios {s['hmavd/nice_pairs']:.3f}; "
            f"target <= 1.10; paper Table 1: 1.59)"
        )
        print(
            f"CPU time per step (process, all threads): HMAVD/NICE {s['cpu/hmavd/nice']:.3f} "
            f"(pairs {s['cpu/hmavd/nice_pairs']:.3f}; with --threads 1 it excludes the time descheduled, with more "
            f"threads it includes their waits for one another)"
        )
    if args.eval_reps:
        ev = measure_eval_times(device, b, c, t, args.eval_reps)
        e = summarise(ev)
        s.update(e)
        print(
            f"evaluation forward (no grad, batch {b}): NICE order {e['eval-unfused_median_s'] * 1e3:.1f} ms, "
            f"fused {e['eval_median_s'] * 1e3:.1f} ms: {e['eval_unfused/eval']:.2f}x "
            f"(pairs {e['eval_unfused/eval_pairs']:.2f}x)"
        )
    if args.breakdown_reps:
        rows = layer_breakdown(device, b, c, t, args.breakdown_reps)
        s["breakdown_s"] = rows
        print("forward + backward per layer (train mode, median):")
        for name, sec in rows.items():
            print(f"  {name:<62s} {sec * 1e3:8.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": str(device), "batch": b, "steps": args.steps, **s}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

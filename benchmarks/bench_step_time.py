"""Step-time ratio HMAVD (text + adapters + MCDB + SPR) / NICE baseline, measured in one run.

Both models train on the same random batch (default 1000 trials of 63 x 250, 768-d features) with
the real :class:`hmavd.train.TrainStep` (forward, loss, backward, MCDB, gradient norms, optimiser).
Steps alternate between the two models so machine load affects both alike; the median step time
of each is reported with their ratio (target <= 1.10; the paper's Table 1 reports 1.59), plus the
median of adjacent-pair ratios and the ratio of the fastest steps, which load bursts from other
processes disturb less. Run it on a quiet machine::

    python benchmarks/bench_step_time.py                 # CPU, paper batch
    python benchmarks/bench_step_time.py --device cuda --steps 50
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from hmavd.config import load_config
from hmavd.train import TrainConfig, TrainStep, build_model, make_optimizer, resolve_device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--n-chans", type=int, default=63)
    p.add_argument("--n-times", type=int, default=250)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--steps", type=int, default=5, help="timed steps per model")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    b, c, t, d = args.batch_size, args.n_chans, args.n_times, args.dim
    g = torch.Generator().manual_seed(0)
    eeg = torch.randn(b, c, t, generator=g).to(device)  # (B, C, T)
    img = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).to(device)  # (B, D)
    txt = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1).to(device)  # (B, D)
    steps = {}
    for label, name in (("NICE", "nice"), ("HMAVD", "hmavd-63")):
        cfg = dataclasses.replace(load_config(TrainConfig, name), spr_sigma_max=1e-3)
        torch.manual_seed(0)
        model = build_model(cfg, c, t, d).to(device)
        steps[label] = TrainStep(cfg, model, make_optimizer(cfg, model, total_steps=1000))
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(args.warmup + args.steps):
        for label, step in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            logs = step(eeg, img, txt)
            float(logs["total"])  # one host sync per step, as the logger does
            _sync(device)
            if i >= args.warmup:
                times[label].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"device={device} batch={b} eeg={c}x{t} dim={d} threads={torch.get_num_threads()} steps={args.steps}")
    for label in steps:
        print(f"{label:6s} step: median {med[label] * 1e3:8.1f} ms  (min {min(times[label]) * 1e3:.1f} ms)")
    ratio = med["HMAVD"] / med["NICE"]
    pairs = [h / n for h, n in zip(times["HMAVD"], times["NICE"])]  # adjacent steps share the machine's load
    print(f"ratio HMAVD/NICE: {ratio:.3f}  (target <= 1.10; paper Table 1: 1.59)")
    print(f"  per-pair ratios: median {statistics.median(pairs):.3f}, min-step ratio "
          f"{min(times['HMAVD']) / min(times['NICE']):.3f} (less sensitive to load from other processes)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

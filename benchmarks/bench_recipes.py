"""Parameter count and training step time of each open recipe beside NICE, measured in one run.

Every model is built from its packaged config at the published input size (17 or 63 channels × 250
samples) and bank size (RN50 1024-d; 12 × 1024 for visual-blur's level bank; ViT-B-32 512-d for
brainhive-b32) and trains on one random resident batch with the real :class:`hmavd.train.TrainStep`.
Steps alternate between the recipes so machine load affects all alike; the median step time and an
estimate of one paper-scale epoch (16540 averaged training images minus 740 held out) are printed::

    python benchmarks/bench_recipes.py                          # CPU, batch 256
    python benchmarks/bench_recipes.py --device cuda --batch 1024 --steps 30 --json results.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import time

import torch

from hmavd.channels import THINGS63, VISUAL17
from hmavd.config import load_config
from hmavd.devices import resolve_device
from hmavd.models.hmavd_model import count_parameters
from hmavd.train import TrainConfig, TrainStep, build_model, make_optimizer

#: recipe -> (image bank size, text size)
BANKS = {
    "nice": (768, 768),
    "hmavd-63": (768, 768),
    "ubp": (1024, 1024),
    "neurobridge": (1024, 1024),
    "visual-blur": (12 * 1024, 1024),
    "brainhive-b32": (512, 512),
    "hmavd-best": (12 * 1024, 1024),
}
N_TRAIN = 16540 - 740


def _setup(name: str, batch: int, device: torch.device) -> tuple[TrainStep, tuple, int]:
    cfg = dataclasses.replace(load_config(TrainConfig, name), batch_size=batch, device=str(device))
    n_chans = len(VISUAL17) if cfg.channels == "visual17" else len(THINGS63)
    d_img, d_txt = BANKS[name]
    torch.manual_seed(0)
    model = build_model(cfg, n_chans, 250, d_img, d_txt).to(device)
    step = TrainStep(cfg, model, make_optimizer(cfg, model, 1000))
    g = torch.Generator().manual_seed(1)
    eeg = torch.randn(batch, n_chans, 250, generator=g).to(device)  # (B, C, T)
    img = torch.nn.functional.normalize(torch.randn(batch, d_img, generator=g), dim=-1).to(device)  # (B, F)
    txt = torch.nn.functional.normalize(torch.randn(batch, d_txt, generator=g), dim=-1).to(device)  # (B, D_t)
    return step, (eeg, img, txt), count_parameters(model)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=5, help="timed steps per recipe (after one warm-up step)")
    p.add_argument("--recipes", default=",".join(BANKS))
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    names = args.recipes.split(",")
    setups = {n: _setup(n, args.batch, device) for n in names}
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(args.steps + 1):
        for n in names:
            step, batch, _ = setups[n]
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            step(*batch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i:  # the first round warms up
                times[n].append(time.perf_counter() - t0)
    rows = []
    base = statistics.median(times["nice"]) if "nice" in times else None
    print(f"device {device}, batch {args.batch}, {args.steps} steps each; epoch = {N_TRAIN} trials")
    print("| recipe | parameters | step (ms) | × NICE | est. s / paper epoch |")
    print("|---|---|---|---|---|")
    for n in names:
        med = statistics.median(times[n])
        epoch = med * math.ceil(N_TRAIN / args.batch)
        ratio = f"{med / base:.2f}" if base else "-"
        print(f"| {n} | {setups[n][2]:,} | {1000 * med:.1f} | {ratio} | {epoch:.1f} |")
        rows.append({"recipe": n, "parameters": setups[n][2], "step_s": med, "epoch_s": epoch})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "batch": args.batch, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

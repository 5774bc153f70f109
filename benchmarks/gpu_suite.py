"""One-command GPU suite: tests, step times, paper-scale epoch time, live latency, torchrun; one JSON.

On a machine with CUDA it runs, within about 8 minutes (``--budget-s``; each stage is skipped, and
said so, once the budget is spent):

1. the ``gpu``-marked tests (``pytest -m gpu``);
2. training step time of NICE and HMAVD, fused and unfused TSConv, on a batch of 1000 × 63 × 250 resident
   on the device (:mod:`bench_step_time`; speed-ups and the HMAVD / NICE ratio);
3. seconds per training epoch at paper scale: 16,540 trials × 63 × 250 (ThingsEEG2's 16,540 training
   images, repetitions averaged) with 768-d features, generated in device memory (Gaussian noise: the
   time does not depend on the values), 740 held out for validation, batches of 1000 through the real
   :class:`hmavd.train.TrainStep`, then a validation forward pass; the second epoch is timed;
4. live decoding latency on CUDA over real LSL (:mod:`bench_latency`, 64 ch × 1000 Hz, previous /
   current path alternated, the minimal pylsl consumer beside it);
5. with more than one GPU, one ``torchrun`` multi-process ``hmavd-train`` run on a small simulated subject.

Without CUDA it runs its CPU-side checks only (fused == unfused TSConv on a small batch, a small-batch
step-time ratio, the ``gpu`` tests collected), lists what it skipped and exits 0. It writes one JSON
of figures (``--out``) and prints a table::

    python benchmarks/gpu_suite.py                       # -> runs/gpu_suite.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_step_time  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cpu_checks() -> dict:
    """Quick CPU-side checks: fused == unfused TSConv (outputs, every gradient, train mode) and a step-time ratio."""
    from hmavd.models.encoders import TSConv

    torch.manual_seed(0)
    fused, ref = TSConv(63, 250, fused=True).train(), TSConv(63, 250, fused=False).train()
    ref.load_state_dict(fused.state_dict())
    for m in (fused, ref):
        m.tsconv[7].p = 0.0  # dropout off: both see the same values
    x = torch.randn(16, 63, 250)  # (B, C, T)
    out_f, out_r = fused(x), ref(x)  # (B, F)
    out_f.square().sum().backward()
    out_r.square().sum().backward()
    grads = dict(fused.named_parameters())
    rel = {
        n: float((grads[n].grad - p.grad).norm() / p.grad.norm())
        for n, p in ref.named_parameters()
        if n not in ("tsconv.0.bias", "tsconv.4.bias")  # ~0 in both (a BatchNorm follows): rounding noise
    }
    times = bench_step_time.measure_step_times(["nice-unfused", "nice"], torch.device("cpu"), 32, 63, 250, 768, 1, 1)
    s = bench_step_time.summarise(times)
    return {
        "fused_vs_unfused_max_abs_output_diff": float((out_f - out_r).detach().abs().max()),
        "fused_vs_unfused_max_rel_grad_diff": max(rel.values()),
        "cpu_batch32_step_s": {k: v for k, v in s.items() if k.endswith("_median_s")},
        "cpu_batch32_speedup_nice_unfused/nice": s["nice_unfused/nice"],
    }


def gpu_tests(timeout_s: float, collect_only: bool = False) -> dict:
    """``pytest -m gpu`` in a subprocess: exit code and the summary line."""
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    if collect_only:
        cmd.append("--collect-only")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"rc": None, "summary": f"timed out after {timeout_s:.0f} s"}
    lines = [ln for ln in r.stdout.strip().splitlines() if ln.strip()]
    return {"rc": r.returncode, "summary": lines[-1] if lines else r.stderr[-300:], "wall_s": time.perf_counter() - t0}


def step_times(device: torch.device, steps: int) -> dict:
    """Step time of all four variants on a resident 1000 × 63 × 250 batch (bench_step_time)."""
    times = bench_step_time.measure_step_times(list(bench_step_time.VARIANTS), device, 1000, 63, 250, 768, steps, 3)
    return bench_step_time.summarise(times)


def paper_epoch_seconds(device: torch.device, labels: list[str], n: int = 16540, n_val: int = 740) -> dict:
    """Seconds per training epoch (batches of 1000 + validation forward) of each variant at paper scale."""
    import torch.nn.functional as F

    g = torch.Generator(device=device).manual_seed(0)
    eeg = torch.randn(n, 63, 250, device=device, generator=g)  # (N, C, T): 1.04 GB float32
    img = F.normalize(torch.randn(n, 768, device=device, generator=g), dim=1)  # (N, D)
    txt = F.normalize(torch.randn(n, 768, device=device, generator=g), dim=1)  # (N, D)
    out = {}
    for label in labels:
        step = bench_step_time.make_step(label, device, 63, 250, 768)
        walls = []
        for _epoch in range(2):
            _sync(device)
            t0 = time.perf_counter()
            perm = torch.randperm(n - n_val, device=device, generator=g)  # (N_train,)
            for i in range(0, n - n_val, 1000):
                b = perm[i : i + 1000]
                if len(b) < 2:
                    continue
                logs = step(eeg[b], img[b], txt[b])
            float(logs["total"])
            step.model.eval()
            with torch.no_grad():
                for i in range(n - n_val, n, 1000):
                    step.model(eeg[i : i + 1000], img[i : i + 1000], txt[i : i + 1000])
            step.model.train()
            _sync(device)
            walls.append(time.perf_counter() - t0)
        out[label] = {"first_epoch_s": walls[0], "epoch_s": walls[1]}
        del step
    return out


def live_latency(device: str, duration_s: float) -> dict:
    """bench_latency on ``device``: p50/p99 (ms) of every latency it measures."""
    import bench_latency

    ns = argparse.Namespace(device=device, threads=1, record=False, compare=True, minimal=True)
    res = bench_latency.run_once(64, 1000.0, duration_s, ns)
    out = {"decoded": res.decoded, "missed": res.missed, "dropped": res.dropped}
    for name, v in [*res.lat.items(), *((f"minimal consumer {k}", v) for k, v in res.minimal.items())]:
        out[name] = {"p50_ms": float(statistics.median(v)), "p99_ms": _p99(v)}
    return out


def _p99(v) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(v), 99))


def torchrun_run(n_gpus: int, timeout_s: float, device: str = "cuda") -> dict:
    """One ``torchrun`` hmavd-train run (2 epochs) on a small simulated subject written to a temp folder.

    Without CUDA the same command runs as one CPU process (``device="cpu"``), which checks the command.
    """
    from hmavd.config import load_config
    from hmavd.simulate_io import SimulateConfig, simulate_dataset

    small = {
        "n_train_concepts": 50,
        "n_train_images_per_concept": 4,
        "n_test_concepts": 20,
        "progress": False,
        "write_raw": False,
        "write_replay": False,
    }
    with tempfile.TemporaryDirectory(prefix="gpu-suite-") as tmp:
        simulate_dataset(load_config(SimulateConfig, None, small), Path(tmp) / "sim")
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n_gpus)]
        train = ["-m", "hmavd.cli.train", "--config", "hmavd-63", "--data", f"{tmp}/sim", "--subject", "1"]
        keys = ["epochs=2", "batch_size=64", "n_val=20", f"out_dir={tmp}/runs", f"device={device}"]
        cmd = run + train + keys
        t0 = time.perf_counter()
        try:
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return {"rc": None, "summary": f"timed out after {timeout_s:.0f} s"}
        tail = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        return {"rc": r.returncode, "n_procs": n_gpus, "wall_s": time.perf_counter() - t0, "tail": tail[0][-300:]}


def _table(fig: dict) -> str:
    rows = ["| stage | figure | value |", "|---|---|---|"]

    def walk(prefix: str, d) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(f"{prefix}{k} / ", v)
            else:
                rows.append(
                    f"| {prefix.split(' / ')[0]} | {prefix.partition(' / ')[2]}{k} | "
                    f"{f'{v:.4g}' if isinstance(v, float) else v} |"
                )

    walk("", {k: v for k, v in fig.items() if k not in ("machine", "skipped", "total_wall_s")})
    rows.append(f"| total | wall_s | {fig['total_wall_s']:.1f} |")
    rows += [f"| skipped | {s} | |" for s in fig["skipped"]]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/gpu_suite.json", help="JSON of all figures")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget; later stages are skipped")
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant on CUDA")
    p.add_argument("--latency-s", type=float, default=30.0, help="seconds streamed for the live latency")
    args = p.parse_args(argv)
    if args.budget_s <= 0 or args.steps < 1 or args.latency_s <= 0:
        print(
            f"--budget-s/--steps/--latency-s: got {args.budget_s}/{args.steps}/{args.latency_s}; give positive values",
            file=sys.stderr,
        )
        return 2
    t0, cuda = time.perf_counter(), torch.cuda.is_available()
    n_gpus = torch.cuda.device_count() if cuda else 0
    fig: dict = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cpus": os.cpu_count(),
            "gpus": [torch.cuda.get_device_name(i) for i in range(n_gpus)],
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "skipped": [],
    }

    def stage(name: str, fn, need_s: float, *a) -> None:
        left = args.budget_s - (time.perf_counter() - t0)
        if left < need_s:
            fig["skipped"].append(f"{name}: {left:.0f} s of the budget left, needs ~{need_s:.0f} s")
            return
        s0 = time.perf_counter()
        print(f"[{time.perf_counter() - t0:6.1f} s] {name} ...", flush=True)
        fig[name] = {**fn(*a), "stage_wall_s": time.perf_counter() - s0}

    stage("cpu checks", cpu_checks, 5.0)
    if not cuda:
        stage("gpu tests (collected)", gpu_tests, 5.0, 120.0, True)
        stage("torchrun command (1 CPU process)", torchrun_run, 30.0, 1, 300.0, "cpu")
        fig["skipped"] += [
            "gpu tests (no CUDA device)",
            "step times on CUDA",
            "paper-scale epoch on CUDA",
            "live latency on CUDA",
            "torchrun on > 1 GPU",
        ]
    else:
        dev = torch.device("cuda")
        stage("gpu tests", gpu_tests, 30.0, 150.0)
        stage("step times (batch 1000, resident)", step_times, 30.0, dev, args.steps)
        stage("paper-scale epoch (16540 x 63 x 250)", paper_epoch_seconds, 40.0, dev, ["nice-unfused", "nice", "hmavd"])
        stage("live latency (cuda, 64 ch x 1000 Hz)", live_latency, args.latency_s + 40.0, "cuda", args.latency_s)
        if n_gpus > 1:
            stage(f"torchrun ({n_gpus} GPUs)", torchrun_run, 60.0, n_gpus, 120.0)
        else:
            fig["skipped"].append("torchrun (needs > 1 GPU; this machine has 1)")
    fig["total_wall_s"] = time.perf_counter() - t0
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fig, indent=1, default=str))
    print(_table(fig))
    print(f"wrote {out}; {'CUDA: ' + ', '.join(fig['machine']['gpus']) if cuda else 'no CUDA device: CPU checks only'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

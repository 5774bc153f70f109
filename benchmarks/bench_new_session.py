"""Simulated new sessions: stale training whitening vs online MVNN vs each session's own offline MVNN.

Simulates ``--subjects`` subjects (2 training sessions each), gives every subject a new session with its
own noise (``hmavd.sim_sessions``, ``--change``; several comma-separated values run one after the
other), and decodes each new session's test block (200 images x 10 repetitions, in presentation order):

- **stale**: the training sessions' mean MVNN matrix (the live engine without ``mvnn_online``);
- **online wN**: :class:`bci.online_mvnn.OnlineMVNN` (warm-up N epochs, the stale matrix before), one
  epoch per poll, each epoch whitened with the estimate at its time, the accumulated curve as
  :class:`bci.accumulate.RepetitionAccumulator` computes it live;
- **online wN + re-whitened**: the same, the accumulator summing the raw epochs and whitening each
  image's average with the current estimate (``RepetitionAccumulator.add(raw=, whitening=)``);
- **offline**: ``hmavd-prepare``'s per-session whitening of the new session (from its training block;
  the ceiling).

The decoder is a model-free ridge map (EEG -> image features, fit on the subject's training sessions,
own-whitened) or, with ``--checkpoint`` (``{subject}`` is replaced by the subject number), a trained
run. Reported per subject and change: top-1 / top-5 / mean rank of the true image at k = 1, 2, 5, 10
repetitions averaged; the share of the stale -> offline difference each online policy recovers; the
relative distance between the online and offline matrices as epochs accumulate. Usage::

    nice -n 10 python benchmarks/bench_new_session.py --root /tmp/sim-new --change 1,2 --out /tmp/sim-new/ns.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bci.online_mvnn import OnlineMVNN, relative_distance
from hmavd.config import load_config
from hmavd.data.thingseeg2 import load_split
from hmavd.features.cache import load_feature_cache
from hmavd.preprocessing.prepare import epoch_recording, load_mvnn, session_whitening
from hmavd.preprocessing.presets import get_preset
from hmavd.preprocessing.raw_io import read_recording
from hmavd.preprocessing.transforms import apply_whitening
from hmavd.sim_sessions import NEW_SESSION_DIR, write_new_session
from hmavd.simulate_io import SimulateConfig, simulate_dataset

KS = (1, 2, 5, 10)
DIST_AT = (10, 50, 100, 200, 400, 800, 2000)


def _epochs(path: Path, preset) -> tuple[np.ndarray, np.ndarray]:
    raw, events = read_recording(path)
    events = events[events[:, 2] != preset.catch_id]
    x, codes, _, _ = epoch_recording(raw.load_data(), events, preset)
    return np.asarray(x, dtype=np.float64), np.asarray(codes)  # (n, C, T) unwhitened, time order


def _group(x: np.ndarray, codes: np.ndarray, n_img: int) -> np.ndarray:
    reps = min(int((codes == c).sum()) for c in range(1, n_img + 1))
    return np.stack([x[codes == c][:reps] for c in range(1, n_img + 1)])  # (img, rep, C, T) time order


def ridge_encoder(train_eeg: np.ndarray, train_feats: np.ndarray, alpha: float = 1.0):
    """Kernel ridge EEG -> features as a linear map; returns ``encode`` and the feature mean."""
    x = train_eeg.reshape(len(train_eeg), -1)
    mx = x.mean(axis=0)
    x = x - mx
    y = train_feats - train_feats.mean(axis=0)
    k = x @ x.T
    coef = np.linalg.solve(k + alpha * np.trace(k) / len(k) * np.eye(len(k)), y)  # (N, D)
    b = x.T @ coef  # (C*T, D)
    return (lambda e: (np.asarray(e, dtype=np.float64).reshape(len(e), -1) - mx) @ b), train_feats.mean(axis=0)


def model_encoder(checkpoint: str, cache, ch_names: list[str]):
    """A trained run's EEG encoder (on its channels of ``ch_names``) and its test-image templates."""
    import torch

    from hmavd.checkpoint import load_checkpoint
    from hmavd.evaluate import encode_eeg_batched
    from hmavd.templates import build_templates

    model, info = load_checkpoint(checkpoint, map_location="cpu")
    model.eval()
    pick = np.asarray([ch_names.index(c) for c in info["ch_names"]])
    n_times = len(info["times"])  # a run trained on a crop from 0 s (tmax_s) sees its first n_times samples
    n = cache.image_features("test").shape[0]
    with torch.no_grad():
        tmpl = build_templates(model, cache, "image", "test-images", np.arange(n), "cpu")
    tmpl = tmpl.detach().float().numpy() if isinstance(tmpl, torch.Tensor) else np.asarray(tmpl)

    def encode(x):
        x = np.asarray(x, dtype=np.float32)[:, pick, :n_times]  # (B, C_model, T_model)
        with torch.no_grad():
            return encode_eeg_batched(model, x, "cpu").float().numpy()

    return encode, tmpl


def scores(encode, means: np.ndarray, templates: np.ndarray) -> tuple[float, float, float]:
    """Top-1, top-5 (fractions) and the mean rank (1 = first) of image i's average among the templates."""
    f = encode(means.astype(np.float32))
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    t = templates / np.linalg.norm(templates, axis=1, keepdims=True)
    s = f @ t.T  # (n_img, n_img)
    true = np.diag(s)
    rank = (s >= true[:, None]).sum(axis=1) - 1  # ties count against the true image, as topk_accuracy
    return float(np.mean(rank < 1)), float(np.mean(rank < 5)), float(np.mean(rank) + 1)


def fixed_curve(encode, raw_g: np.ndarray, w: np.ndarray, templates: np.ndarray) -> list:
    white = apply_whitening(raw_g, w)  # (img, rep, C, T)
    return [scores(encode, white[:, :k].mean(axis=1), templates) for k in KS]


def online_curves(encode, x: np.ndarray, codes: np.ndarray, w_stale, w_off, templates, warmup: int):
    """The live path: OnlineMVNN fed one epoch per poll, each epoch whitened with the estimate at its time.

    The accumulated curve is computed in one batch per k from those epochs: ``RepetitionAccumulator``
    gives exactly these numbers (tests/bci/test_accumulate.py), only a thousand times slower here.
    ``rewhitened``: each image's raw k-average whitened with the matrix in use at its k-th repetition
    (``RepetitionAccumulator.add(raw=, whitening=)``).
    """
    est = OnlineMVNN(training=w_stale, warmup_epochs=warmup)
    n_img = len(templates)
    ws = np.empty((len(x), x.shape[1], x.shape[1]))  # (n, C, C) the matrix in use after each epoch
    dist = {}
    for i in range(len(x)):
        est.add(x[i : i + 1])
        ws[i] = est.training if est.whitening is None else est.whitening
        if i + 1 in DIST_AT:
            dist[i + 1] = relative_distance(ws[i], w_off)
    white = np.einsum("nij,njt->nit", ws, x)  # (n, C, T) each epoch with its own matrix
    rep = np.zeros(len(codes), dtype=int)
    for c in range(1, n_img + 1):
        rep[codes == c] = np.arange(int((codes == c).sum()))
    raw_g, white_g = _group(x, codes, n_img), _group(white, codes, n_img)  # (img, rep, C, T)
    t_of = np.stack([np.flatnonzero(codes == c)[: raw_g.shape[1]] for c in range(1, n_img + 1)])  # (img, rep)
    live, rewhite = [], []
    for k in KS:
        live.append(scores(encode, white_g[:, :k].mean(axis=1), templates))
        w_k = ws[t_of[:, k - 1]]  # (img, C, C) in use at each image's k-th repetition
        rewhite.append(scores(encode, np.einsum("nij,njt->nit", w_k, raw_g[:, :k].mean(axis=1)), templates))
    return {"live": live, "rewhitened": rewhite}, dist


def measure_subject(root: Path, sub: int, cache, preset, warmups, checkpoint: str) -> dict:
    sd = f"sub-{sub:02d}"
    mv = load_mvnn(root / "preprocessed_eeg" / sd / "mvnn.npz")
    w_stale = np.mean(mv["whitening"], axis=0)  # the live default: mean of the sessions' matrices
    n_img = cache.image_features("test").shape[0]
    if checkpoint:
        encode, templates = model_encoder(checkpoint.format(subject=sub), cache, list(mv["ch_names"]))
    else:
        tr = load_split(root / "preprocessed_eeg" / sd / "preprocessed_eeg_training.npy")
        feats = np.asarray(cache.image_features("training"), dtype=np.float64)
        encode, fmean = ridge_encoder(tr.average_repetitions().astype(np.float64), feats)
        templates = np.asarray(cache.image_features("test"), dtype=np.float64) - fmean
    ns = root / NEW_SESSION_DIR
    x, codes = _epochs(ns / "recordings" / f"{sd}_test.fif", preset)
    x_tr, codes_tr = _epochs(ns / "raw_eeg" / sd / "ses-01" / "raw_eeg_training.npy", preset)
    w_off, _ = session_whitening(_group(x_tr, codes_tr, int(codes_tr.max())), _group(x, codes, n_img), preset)
    raw_g = _group(x, codes, n_img)
    res = {
        "stale": fixed_curve(encode, raw_g, w_stale, templates),
        "offline": fixed_curve(encode, raw_g, w_off, templates),
    }
    dists = {}
    for w in warmups:
        curves, dists[w] = online_curves(encode, x, codes, w_stale, w_off, templates, w)
        res[f"online w{w}"] = curves["live"]
        res[f"online w{w} + re-whitened"] = curves["rewhitened"]
    return {"curves": res, "distance": dists, "stale_vs_offline": relative_distance(w_stale, w_off)}


def recovery(curves: dict, name: str, j: int, m: int) -> float:
    """Share of the stale -> offline difference of metric ``m`` at ``KS[j]`` that policy ``name`` recovers."""
    s, o, f = curves["stale"][j][m], curves[name][j][m], curves["offline"][j][m]
    return (o - s) / (f - s) if f != s else float("nan")


def summarise(change: float, subjects: dict) -> None:
    j = KS.index(10)
    names = [n for n in next(iter(subjects.values()))["curves"] if n not in ("stale",)]
    print(f"\n## change {change}: top-1 / top-5 % at k = 10 (mean rank of the true image, 1 = first)")
    for sub, r in subjects.items():
        cells = "  ".join(
            f"{n}: {100 * r['curves'][n][j][0]:.1f}/{100 * r['curves'][n][j][1]:.1f}"
            + (f" ({r['curves'][n][j][2]:.1f})" if len(r["curves"][n][j]) > 2 else "")
            for n in ["stale", *names]
        )
        print(f"sub-{sub:02d} {cells}")
    for n in names[1:]:
        rec = np.array([[recovery(r["curves"], n, j, m) for m in (0, 1, 2)] for r in subjects.values()])
        mean = {x: np.mean([r["curves"][x][j] for r in subjects.values()], axis=0) for x in ("stale", n, "offline")}
        pooled = (mean[n] - mean["stale"]) / (mean["offline"] - mean["stale"])  # (3,) top-1, top-5, mean rank
        print(
            f"recovered by {n}: per subject top-1 {np.round(100 * rec[:, 0]).tolist()}, top-5 "
            f"{np.round(100 * rec[:, 1]).tolist()}, mean rank {np.round(100 * rec[:, 2]).tolist()}; of the "
            f"subjects' mean: top-1 {100 * pooled[0]:.0f} %, top-5 {100 * pooled[1]:.0f} %, mean rank "
            f"{100 * pooled[2]:.0f} %"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default="/tmp/sim-new-session")
    ap.add_argument("--out", default="")
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--change", default="1,2", help="comma-separated sizes of the session change")
    ap.add_argument("--warmups", default="10,50", help="online MVNN warm-ups to compare (epochs)")
    ap.add_argument("--test-reps", type=int, default=10)
    ap.add_argument("--snr", type=float, default=0.05)
    ap.add_argument("--checkpoint", default="", help="decode with this hmavd-train run ({subject}: its number)")
    args = ap.parse_args()
    t0 = time.time()
    over = {
        "n_subjects": args.subjects,
        "n_train_concepts": 200,
        "n_train_images_per_concept": 4,
        "n_test_concepts": 200,
        "n_sessions": 2,
        "train_reps_per_session": 1,
        "test_reps_per_session": args.test_reps,
        "progress": False,
        "snr": args.snr,
        "write_replay": True,
    }
    cfg = load_config(SimulateConfig, None, over)
    root = Path(args.root)
    if not (root / "simulation.json").exists():
        simulate_dataset(cfg, root, force=True)
    cache = load_feature_cache(next((root / "features").iterdir()))
    preset = get_preset(cfg.preset)
    warmups = [int(w) for w in args.warmups.split(",")]
    out: dict = {"args": vars(args), "ks": KS, "changes": {}}
    for change in (float(c) for c in args.change.split(",")):
        done = root / NEW_SESSION_DIR / "session_change.json"
        if not (done.exists() and json.loads(done.read_text())["scale"] == change):
            write_new_session(cfg.resolved(), root, change)
        subjects = {}
        for sub in range(1, args.subjects + 1):
            subjects[sub] = measure_subject(root, sub, cache, preset, warmups, args.checkpoint)
            print(f"change {change} sub-{sub:02d} done at {time.time() - t0:.0f} s", flush=True)
        out["changes"][change] = subjects
        summarise(change, subjects)
        for w in warmups:
            d = {n: np.round([s["distance"][w][n] for s in subjects.values()], 3).tolist() for n in DIST_AT}
            stale = np.round([s["stale_vs_offline"] for s in subjects.values()], 3).tolist()
            print(f"distance online (w{w}) vs offline W per subject, by epochs: {d}; stale vs offline: {stale}")
    path = Path(args.out) if args.out else root / NEW_SESSION_DIR / "bench.json"
    path.write_text(json.dumps(out, indent=1))
    print(f"done in {time.time() - t0:.0f} s; wrote {path}")


if __name__ == "__main__":
    main()

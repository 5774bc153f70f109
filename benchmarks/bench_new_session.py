"""A simulated new session: stale training whitening vs online MVNN vs the session's own offline MVNN.

Simulates a subject (2 training sessions), adds a new session with its own noise
(``hmavd.sim_sessions``), fits a model-free ridge decoder (EEG -> image features) on the training
sessions, and decodes the new session's test block three ways:

- **stale**: the training sessions' mean MVNN matrix (what the live engine uses without ``mvnn_online``);
- **online**: :class:`bci.online_mvnn.OnlineMVNN` over the test epochs in presentation order (warm-up 50
  epochs), each epoch whitened with the estimate at its time, as the live engine does;
- **offline**: ``hmavd-prepare``'s per-session whitening of the new session (its training partition, the
  NICE preset; the ceiling).

Prints top-1/top-5 against the number of repetitions averaged (``hmavd.eval_reps.reps_curve``) and the
distance between the online and offline matrices as epochs accumulate. Usage::

    nice -n 10 python benchmarks/bench_new_session.py --out /tmp/sim-new --change 1.0
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
from hmavd.eval_reps import reps_curve
from hmavd.features.cache import load_feature_cache
from hmavd.preprocessing.prepare import epoch_recording, load_mvnn, session_whitening
from hmavd.preprocessing.presets import get_preset
from hmavd.preprocessing.raw_io import read_recording
from hmavd.preprocessing.transforms import apply_whitening, mvnn_covariance, whitening_matrix
from hmavd.sim_sessions import write_new_session
from hmavd.simulate_io import SimulateConfig, simulate_dataset


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


def model_encoder(checkpoint: str, cache):
    """A trained model's EEG encoder and its image templates of the test images."""
    import torch

    from hmavd.checkpoint import load_checkpoint
    from hmavd.evaluate import build_templates, encode_eeg_batched

    model, _ = load_checkpoint(checkpoint, map_location="cpu")
    model.eval()
    n = cache.image_features("test").shape[0]
    with torch.no_grad():
        tmpl = build_templates(model, cache, "image", "test-images", np.arange(n), "cpu")
        tmpl = tmpl.detach().float().numpy() if isinstance(tmpl, torch.Tensor) else np.asarray(tmpl)

    def encode(x):
        with torch.no_grad():
            return encode_eeg_batched(model, np.asarray(x, dtype=np.float32), "cpu").float().numpy()

    return encode, tmpl


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/sim-new-session")
    ap.add_argument("--change", type=float, default=1.0)
    ap.add_argument("--test-reps", type=int, default=10)
    ap.add_argument("--snr", type=float, default=0.05)
    ap.add_argument("--checkpoint", default="", help="decode with this hmavd-train run instead of the ridge decoder")
    args = ap.parse_args()
    t0 = time.time()
    over = {"n_train_concepts": 200, "n_train_images_per_concept": 4, "n_test_concepts": 200, "n_sessions": 2,
            "train_reps_per_session": 1, "test_reps_per_session": args.test_reps, "progress": False,
            "snr": args.snr, "write_replay": True}  # fmt: skip
    cfg = load_config(SimulateConfig, None, over)
    out = Path(args.out)
    if not (out / "simulation.json").exists():
        simulate_dataset(cfg, out, force=True)
    done = out / "new_session" / "session_change.json"
    if done.exists() and json.loads(done.read_text())["scale"] == args.change:
        info = json.loads(done.read_text())
    else:
        info = write_new_session(cfg.resolved(), out, args.change)
    print(f"simulated in {time.time() - t0:.0f} s; change {info['change']}")
    preset = get_preset(cfg.preset)
    n_img = cfg.n_test_concepts
    mv = load_mvnn(out / "preprocessed_eeg" / "sub-01" / "mvnn.npz")
    w_stale = np.mean(mv["whitening"], axis=0)  # the live default: mean of the sessions' matrices
    # the decoder: ridge on the training sessions' (their own MVNN, as hmavd-prepare wrote them) training split
    tr = load_split(out / "preprocessed_eeg" / "sub-01" / "preprocessed_eeg_training.npy")
    cache = load_feature_cache(next((out / "features").iterdir()))
    if args.checkpoint:
        encode, templates = model_encoder(args.checkpoint, cache)
    else:
        encode, fmean = ridge_encoder(
            tr.average_repetitions().astype(np.float64), np.asarray(cache.image_features("training"), dtype=np.float64)
        )
        templates = np.asarray(cache.image_features("test"), dtype=np.float64) - fmean
    # the new session: its test block (live) and its training block (hmavd-prepare's per-session MVNN)
    ns = out / "new_session" / "raw_eeg" / "sub-01" / "ses-01"
    x_test, codes = _epochs(out / info["subjects"][0]["paths"]["replay"], preset)
    x_tr, codes_tr = _epochs(ns / "raw_eeg_training.npy", preset)
    n_tr_img = int(codes_tr.max())
    w_off, _ = session_whitening(_group(x_tr, codes_tr, n_tr_img), _group(x_test, codes, n_img), preset)
    w_test_all = whitening_matrix(mvnn_covariance(x_test[:, None]))
    est = OnlineMVNN(training=w_stale, warmup_epochs=50)
    online = np.empty_like(x_test)
    dist = []
    for i in range(len(x_test)):  # one epoch per poll, as markers arrive
        est.add(x_test[i : i + 1])
        online[i] = est.whiten(x_test[i : i + 1])[0]
        if i + 1 in (50, 100, 200, 400, 800, 1600) or i + 1 == len(x_test):
            dist.append({"n_epochs": i + 1, "online_vs_offline": relative_distance(est.online, w_off),
                         "online_vs_test_all": relative_distance(est.online, w_test_all),
                         "stale_vs_offline": relative_distance(w_stale, w_off)})  # fmt: skip
    labels = np.arange(n_img)
    reps = min(int((codes == c).sum()) for c in range(1, n_img + 1))
    ks = sorted({1, 2, 5, reps} & set(range(1, reps + 1)))
    res = {}
    for name, white in (("stale", apply_whitening(x_test, w_stale)), ("online", online),
                        ("offline", apply_whitening(x_test, w_off))):  # fmt: skip
        res[name] = {a: reps_curve(encode, _group(white, codes, n_img), labels, templates, ks, a)
                     for a in ("epochs", "embeddings")}  # fmt: skip
    print(f"{'whitening':<10} {'average':<11} " + " ".join(f"k={k:<3} t1/t5    " for k in ks))
    for name, by_avg in res.items():
        for avg, rows in by_avg.items():
            cells = " ".join(f"{100 * r['top1']:5.1f}/{100 * r['top5']:5.1f}" for r in rows)
            print(f"{name:<10} {avg:<11} {cells}")
    for avg in ("epochs", "embeddings"):
        for j, k in enumerate(ks):
            s, o, f = (res[n][avg][j]["top1"] for n in ("stale", "online", "offline"))
            s5, o5, f5 = (res[n][avg][j]["top5"] for n in ("stale", "online", "offline"))
            rec = (o - s) / (f - s) if f != s else float("nan")
            rec5 = (o5 - s5) / (f5 - s5) if f5 != s5 else float("nan")
            print(f"recovered ({avg}, k={k}): top-1 {100 * rec:.0f} %, top-5 {100 * rec5:.0f} % of offline − stale")
    for d in dist:
        print(json.dumps(d))
    (out / "new_session" / f"bench{'_model' if args.checkpoint else ''}.json").write_text(
        json.dumps({"results": res, "distance": dist}, indent=1)
    )
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

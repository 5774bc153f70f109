"""Closed loop on real LSL (loopback, unique names): hmavd-present --dry-run -> virtual amp -> headless live decoding.

The presenter runs as its own process (the command), the virtual amplifier and the live engine
(``run_headless``, as ``hmavd-live --headless``) in this one; the amplifier streams µV with unit labels and
the 64 actiCAP names, as a real one. Checked: every shown image is answered by
the amplifier at the sample of its flip and decoded exactly once at that sample; the live epochs equal
the offline epochs of the amplifier's own record; and the live single-trial accuracy of a
nearest-template decoder matches the same decoder's offline accuracy on the simulated subject's
preprocessed test data (statistically: single trials of one subject, not a fixed number).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from bci_testkit import tiny_model

from bci.engine import LiveEngine
from bci.epocher import load_whitening
from bci.headless import run_headless
from bci.live_config import LiveConfig
from bci.markers import LSLMarkerSource
from bci.virtual_amp import AmpSettings, VirtualAmp
from bci.virtual_subject import load_virtual_subject
from hmavd.checkpoint import save_checkpoint
from hmavd.data.thingseeg2 import load_split
from hmavd.preprocessing.presets import get_preset
from hmavd.preprocessing.transforms import apply_whitening, epoch_window_samples, preprocess_epoch, preprocessed_times
from hmavd.simulate import cut_epochs
from hmavd.simulate_config import SimulateConfig
from hmavd.simulate_io import simulate_dataset

pytestmark = pytest.mark.lsl

N_TEST, REPS_OFFLINE, REPS_LIVE = 10, 10, 3


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A small high-SNR simulated subject: 10 test images x 10 repetitions (single trials well above chance)."""
    out = tmp_path_factory.mktemp("sim")
    cfg = SimulateConfig(
        n_train_concepts=20,
        n_train_images_per_concept=1,
        n_test_concepts=N_TEST,
        n_sessions=1,
        test_reps_per_session=REPS_OFFLINE,
        snr=1.0,
        write_raw=False,
        write_replay=False,
        progress=False,
    )
    simulate_dataset(cfg, out)
    return out


def _checkpoint(tmp: Path, ch_names, preset) -> Path:
    times = preprocessed_times(preset, 1000.0)
    model = tiny_model(len(ch_names), len(times), seed=0, feature_dim=768)
    extra = {"ch_names": list(ch_names), "times": times.tolist(), "sfreq": preset.sfreq}
    return save_checkpoint(tmp / "best.safetensors", model, extra=extra)


def _corr_scores(trials: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Cosine of each trial to each template after removing the templates' mean (the common ERP)."""
    t = templates.reshape(len(templates), -1).astype(np.float64)
    mean = t.mean(axis=0)
    a = trials.reshape(len(trials), -1).astype(np.float64) - mean
    t = t - mean
    return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (t / np.linalg.norm(t, axis=1, keepdims=True)).T


def _present_cmd(*args: str) -> list[str]:
    exe = Path(sys.executable).with_name("hmavd-present")
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-c", "import sys; from bci.cli_present import main; sys.exit(main(sys.argv[1:]))", *args]


def _run_closed_loop(sim: Path, tmp_path: Path, ckpt: Path, mvnn: Path, pres_dir: Path):
    """The presenter (a process), the amplifier and the headless engine on real LSL, until every image
    is decoded. Returns ``(amp, engine, messages, summary, presenter output, presenter exit code)``."""
    tag = uuid.uuid4().hex[:8]
    eeg_stream, marker_stream = f"test-amp-{tag}", f"test-present-{tag}"
    args = ("--data", str(sim), "--block", "test", "--dry-run", "--marker-stream", marker_stream)
    options = (f"reps={REPS_LIVE}", "seed=3", "wait_consumers_s=60", "lead_s=5")
    present = subprocess.Popen(
        _present_cmd(*args, "--out-dir", str(pres_dir), *options),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    settings = AmpSettings(unit="microvolts", montage="acticap64", sample_index=True, push_delay_s=0.1)
    markers = LSLMarkerSource(marker_stream, resolve_timeout_s=30.0)
    amp = VirtualAmp(
        load_virtual_subject(sim), settings, markers, eeg_stream=eeg_stream, poll_interval_s=0.01, keep_record=True
    )
    messages: list[dict] = []
    try:
        amp.connect()  # the presenter starts lead_s after this first consumer
        cfg = LiveConfig(
            eeg_stream=eeg_stream,
            marker_stream=marker_stream,
            checkpoint=str(ckpt),
            features=str(sim / "features" / "clip-vitl14-sim"),
            whitening=str(mvnn),
            device="cpu",
            resolve_timeout_s=20.0,
            marker_timeout_s=10.0,
        )
        engine = LiveEngine(cfg)
        engine.epoch_log = []

        def collect(msg: dict) -> None:  # stop as Ctrl-C would once every image is decoded (cap: 90 s)
            messages.append(msg)
            if sum(m["type"] == "prediction" for m in messages) == N_TEST * REPS_LIVE:
                raise KeyboardInterrupt

        summary = run_headless(cfg, duration_s=90.0, out_dir=tmp_path / "live", engine=engine, on_message=collect)
        out, _ = present.communicate(timeout=60)
    finally:
        amp.disconnect()
        if present.poll() is None:
            present.kill()
    return amp, engine, messages, summary, out, present.returncode


def test_present_amp_live_closed_loop(sim, tmp_path):
    preset = get_preset("nice")
    test_split = load_split(sim / "preprocessed_eeg" / "sub-01" / "preprocessed_eeg_test.npy")
    ch_names = list(test_split.ch_names)
    ckpt = _checkpoint(tmp_path, ch_names, preset)
    mvnn = sim / "preprocessed_eeg" / "sub-01" / "mvnn.npz"
    pres_dir = tmp_path / "present"
    amp, engine, messages, summary, out, returncode = _run_closed_loop(sim, tmp_path, ckpt, mvnn, pres_dir)
    assert returncode == 0, out
    # -- the presenter: every image shown once, on the 60 Hz flip grid, pushed right after its flip
    pres = json.loads((pres_dir / "presentation.json").read_text())
    with open(pres_dir / "shown.tsv") as fh:
        shown = list(csv.DictReader(fh, delimiter="\t"))
    n_images = N_TEST * REPS_LIVE
    assert pres["n_shown"] == pres["n_trials_planned"] == len(shown) == n_images + pres["n_targets"]
    assert sorted(int(r["image"]) for r in shown if r["target"] == "0") == sorted(list(range(1, N_TEST + 1)) * 3)
    flips = np.array([float(r["flip_time_s"]) for r in shown])
    frames = (flips - pres["first_flip_s"]) * 60.0
    np.testing.assert_allclose(frames, np.round(frames), atol=1e-3)  # every marker on a flip of the grid
    # -- the amplifier answered every marker at the sample of its flip
    assert [o.code for o in amp.onsets] == [r["code"] for r in shown]
    exact = (flips - amp.t0) * amp.sfreq
    np.testing.assert_allclose([o.sample for o in amp.onsets], exact, atol=0.5 + 1e-3)
    assert amp.lost_samples == 0
    # -- the live app decoded every image once, at its sample
    preds = [m for m in messages if m["type"] == "prediction"]
    image_onsets = [o.sample for o in amp.onsets if o.code != "99999"]
    assert [int(p["sample_index"]) for p in preds] == image_onsets
    assert summary["n_predictions"] == n_images and summary["rejected"] == {}
    # -- live epochs == offline epochs of the amplifier's own record
    record = amp.get_data()  # (C_stream, n) µV as streamed, sample s at column s
    assert np.array_equal(record[-1], np.arange(record.shape[1], dtype=np.float32))
    picks = [amp.ch_names.index(c) for c in ch_names]
    off, n_in = epoch_window_samples(preset.tmin_s, preset.tmax_s, amp.sfreq)
    raw = cut_epochs(record[picks].astype(np.float64) * 1e-6, np.array(image_onsets), off, n_in)  # volts
    w = load_whitening(str(mvnn), len(ch_names), ch_names=ch_names)
    offline = apply_whitening(preprocess_epoch(raw, amp.sfreq, preset), w)
    online = np.stack([e.data for e in engine.epoch_log])
    np.testing.assert_allclose(online, offline, rtol=1e-4, atol=1e-4 * np.abs(offline).max())
    offline_top = [list(r.concepts) for r in engine.decoder.decode(offline.astype(np.float32))]
    assert [[c for c, _ in p["topk"]] for p in preds] == offline_top
    # -- decoding is meaningful: live single-trial accuracy == offline accuracy of the same subject
    x = test_split.eeg.astype(np.float64)  # (N, R, C, T) preprocessed offline test data
    truth = np.array([int(o.code) - 1 for o in amp.onsets if o.code != "99999"])
    live_acc = float(np.mean(_corr_scores(online, x.mean(axis=1)).argmax(axis=1) == truth))
    hits = [
        _corr_scores(x[:, r], np.delete(x, r, axis=1).mean(axis=1)).argmax(axis=1) == np.arange(N_TEST)
        for r in range(REPS_OFFLINE)
    ]  # leave-one-repetition-out
    off_acc = float(np.mean(hits))
    chance = 1.0 / N_TEST
    sd = np.sqrt(off_acc * (1 - off_acc) / n_images)
    assert off_acc > 3 * chance, off_acc
    assert abs(live_acc - off_acc) <= 3 * sd + 0.05, (live_acc, off_acc)
    print(
        f"closed loop: live {live_acc:.3f} vs offline {off_acc:.3f} (chance {chance}); "
        f"marker push lag p50 {pres['push_lag_ms']['p50']:.2f} ms, {pres['n_dropped']} dropped frames"
    )

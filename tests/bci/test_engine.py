"""LiveEngine on in-memory sources (manual acquire): predictions, status, scope, recording round trip."""

import numpy as np
import pytest

from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.markers import InMemoryMarkers
from bci.recorder import read_session, recording_to_fif
from bci.sources import InMemorySource
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, SFREQ_IN, make_recording, offline_epochs, tiny_model
from hmavd.errors import UserError
from hmavd.preprocessing.raw_io import read_recording

T0 = 1000.0


def make_engine(ch_names=(*CH_NAMES, "sample_index"), sfreq=SFREQ_IN, whitening=None, **cfg):
    rng = np.random.default_rng(3)
    model = tiny_model()
    templates = rng.standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    dec = Decoder.from_model(model, templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")
    src = InMemorySource(list(ch_names), sfreq, t_start_s=T0)
    marks = InMemoryMarkers()
    eng = LiveEngine(LiveConfig(status_interval_s=0.0, scope_interval_s=0.0, **cfg), source=src, markers=marks,
                     decoder=dec, preset=PRESET, whitening=whitening)  # fmt: skip
    return eng, src, marks


def test_engine_decodes_like_offline_and_records(tmp_path):
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=6.0, extra_codes={150: 77})
    w = np.diag([1.0, 2.0, 0.5, 1.5]) * 1e5
    eng, src, marks = make_engine(whitening=w)
    eng.epoch_log = []
    eng.connect()
    eng.record_start(str(tmp_path / "session"))
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])  # (5, N)
    for s, _, c in events:
        marks.push(T0 + s / SFREQ_IN, int(c))
    marks.push(T0 + 150 / SFREQ_IN, 77)  # an image the templates do not know
    msgs = []
    for a in range(0, data.shape[1], 37):
        src.push(data[:, a : a + 37])
        eng.acquire()
        msgs += eng.get_data()
    eng.record_stop()
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert [p["sample_index"] for p in preds] == list(events[:, 0])  # none missed or duplicated
    off, off_events = offline_epochs(path, w)
    off = off[off_events[:, 2] != 77]  # the unknown image gets no epoch online
    online = np.stack([e.data for e in eng.epoch_log])
    np.testing.assert_allclose(online, off, rtol=1e-4, atol=1e-4 * np.abs(off).max())
    expected = eng.decoder.decode(off)
    assert [p["topk"][0][0] for p in preds] == [r.concepts[0] for r in expected]
    assert all(p["true_concept"] == CONCEPTS[c - 1] for p, c in zip(preds, events[:, 2]))
    status = [m for m in msgs if m["type"] == "status"][-1]
    assert status["n_epochs"] == len(events) and status["unknown_markers"] == 1
    n = len(preds)
    assert status["running_top1"] == pytest.approx(sum(p["top1_correct"] for p in preds) / n)
    scope = [m for m in msgs if m["type"] == "scope"]
    assert scope and scope[-1]["data"].shape[0] == 5 and scope[-1]["data"].dtype == np.float32
    assert msgs[0]["type"] == "connected" and msgs[0]["model_ch_names"] == CH_NAMES
    # the recording replays: same samples, same events (unknown 77 kept as a marker)
    rec, meta, rec_events = read_session(tmp_path / "session")
    np.testing.assert_allclose(rec, data.astype(np.float32))
    assert sorted(rec_events) == [(int(s), str(c)) for s, c in sorted([*zip(events[:, 0], events[:, 2]), (150, 77)])]
    fif = recording_to_fif(tmp_path / "session", tmp_path / "session_raw.fif")
    raw, ev = read_recording(fif)
    assert sorted(ev[:, 0].tolist()) == sorted([*events[:, 0].tolist(), 150])
    assert (tmp_path / "session" / "predictions.csv").read_text().count("\n") == n + 1


def test_connect_rejects_wrong_channels_and_rate():
    eng, _, _ = make_engine(ch_names=["O1", "Oz", "Cz"])
    with pytest.raises(UserError, match="eeg_stream: .*lacks"):
        eng.connect()
    eng, _, _ = make_engine(sfreq=50.0)
    with pytest.raises(UserError, match="50 Hz, below the model"):
        eng.connect()
    eng, _, _ = make_engine(sfreq=300.0)  # 300 Hz yields the same length: accepted unless pinned
    eng.connect()
    eng, _, _ = make_engine(sfreq=300.0, expected_sfreq=200.0)
    with pytest.raises(UserError, match="expected_sfreq"):
        eng.connect()


def test_stride_mode_cuts_epochs_without_markers():
    eng, src, _ = make_engine(stride_s=0.2)
    eng.connect()
    src.push(np.random.default_rng(0).standard_normal((5, 400)) * 1e-5)
    eng.acquire()
    preds = [m for m in eng.get_data() if m["type"] == "prediction"]
    # onsets every 40 samples from sample 20 while the window (−20 … +100) fits in 400 samples
    assert [p["onset_index"] for p in preds] == list(range(20, 300, 40))
    assert all(p["true_concept"] is None and p["top1_correct"] is None for p in preds)

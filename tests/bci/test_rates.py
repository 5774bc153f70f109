"""Stream rates 250…2048 Hz: epoch and baseline at the stream rate, resample to the model's, online == offline."""

import dataclasses

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, make_recording, offline_epochs, tiny_model

from bci.decoder import Decoder
from bci.engine import LiveConfig, LiveEngine
from bci.markers import InMemoryMarkers
from bci.rates import align_to_model
from bci.sources import InMemorySource
from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import preprocessed_times

NICE4 = dataclasses.replace(PRESETS["nice"], channels=tuple(CH_NAMES))
MODEL_TIMES = preprocessed_times(NICE4, 1000.0)  # a model trained on 1000 Hz recordings: 250 samples, 0…0.996 s


@pytest.mark.parametrize("rate", [250.0, 256.0, 500.0, 512.0, 1000.0, 1024.0, 2048.0])
def test_alignment_onto_the_model_time_axis(rate):
    aligned, offset = align_to_model(NICE4, rate, MODEL_TIMES)
    times = preprocessed_times(aligned, rate)
    assert len(times) == 250 and np.abs(times - MODEL_TIMES).max() == pytest.approx(offset)
    assert offset <= 0.5 / NICE4.sfreq
    if rate in (500.0, 1000.0):  # the grid falls on the model's: the offline preset unchanged
        np.testing.assert_allclose(times, preprocessed_times(NICE4, rate))
        assert offset < 1e-9


def test_no_alignment_when_the_window_is_too_short():
    short = dataclasses.replace(NICE4, tmax_s=0.5)
    assert align_to_model(short, 1000.0, MODEL_TIMES) is None


def _engine(rate):
    rng = np.random.default_rng(3)
    dec = Decoder.from_model(
        tiny_model(4, 250),
        rng.standard_normal((len(CONCEPTS), 16)).astype(np.float32),
        CONCEPTS,
        4,
        250,
        CH_NAMES,
        device="cpu",
    )
    src = InMemorySource([*CH_NAMES, "sample_index"], rate, t_start_s=50.0, ch_units=["V"] * 4 + [""])
    marks = InMemoryMarkers()
    eng = LiveEngine(
        LiveConfig(status_interval_s=0.0, scope_interval_s=0.0),
        source=src,
        markers=marks,
        decoder=dec,
        preset=NICE4,
        whitening=None,
    )
    eng.epoch_log = []
    return eng, src, marks


@pytest.mark.parametrize("rate", [250.0, 256.0, 500.0, 512.0, 1000.0, 1024.0, 2048.0])
def test_online_equals_offline_at_stream_rate(tmp_path, rate):
    """hmavd-prepare's epoch_recording (with the crop on the model's axis) == the live epocher, per rate."""
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=4.0, sfreq=rate, onset_every_s=0.25)
    eng, src, marks = _engine(rate)
    eng.connect()
    for s, _, c in events:
        marks.push(50.0 + s / rate, int(c))
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])
    step = int(rate * 0.05)
    for a in range(0, data.shape[1], step):
        src.push(data[:, a : a + step])
        eng.acquire()
    assert [e.extra["sample_index"] for e in eng.epoch_log] == events[:, 0].tolist()
    np.testing.assert_allclose(eng.epocher.times, MODEL_TIMES, atol=0.5 / 250 + 1e-9)
    off, _ = offline_epochs(path, preset=eng.epocher.preset)
    online = np.stack([e.data for e in eng.epoch_log])
    assert online.shape[1:] == (4, 250)
    np.testing.assert_allclose(online, off, rtol=1e-4, atol=1e-5 * np.abs(off).max())


def test_rate_below_the_model_is_refused():
    eng, _, _ = _engine(200.0)
    with pytest.raises(UserError, match="200 Hz, below the model's 250 Hz"):
        eng.connect()

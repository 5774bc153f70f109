"""A stream that looks nothing like ThingsEEG2: a real Muse recording (4 EEG + AUX, 256 Hz, µV, jittery stamps).

An independent pylsl player (not :class:`bci.replay.LSLPlayer`) streams the recording the way muse-lsl
did: channels TP9 AF7 AF8 TP10 labelled ``microvolts`` plus ``Right AUX`` typed AUX, each sample with the
file's own 1 ms-rounded, packet-interpolated timestamps (accelerated ``SPEED``×), markers (int32 codes
1 = house, 2 = face) stamped at the stimulus clock's time of their sample — the straight line through
the file's stamps. The live engine picks the 4 EEG channels, converts µV to the model's volts, ignores
AUX and the sample counter, dejitters the stamps and cuts epochs; they must equal ``mne.Epochs`` on a
``RawArray`` of the same file, with every marker on its own sample. The same test runs on a generated
stream with the same kind of jitter, so the logic is checked also where ``../shared`` is absent.
"""

import dataclasses
import threading
import time
import uuid

import mne
import numpy as np
import pytest
from bci_testkit import tiny_model

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import LSLMarkerSource
from bci.sources import LSLSource
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import preprocessed_times

pytestmark = pytest.mark.lsl

EEG4 = ["TP9", "AF7", "AF8", "TP10"]
SFREQ = 256.0
SPEED = 10.0
PRESET = dataclasses.replace(
    PRESETS["nice"],
    name="n170",
    tmin_s=-0.1,
    tmax_s=0.6,
    baseline_tmin_s=None,
    baseline_tmax_s=0.0,
    sfreq=128.0,
    crop_tmin_s=None,
    crop_tmax_s=None,
    channels=tuple(EEG4),
)
MUSE_RUN = "real-eeg/muse-n170-subject1/data_2017-09-13-15.30.01.csv"


def read_muse_csv(path):
    """``(stamps (N,), eeg µV (4, N), aux µV (N,), marker codes (N,))`` of one muse-lsl CSV."""
    d = np.loadtxt(path, delimiter=",", skiprows=1)
    return d[:, 0], d[:, 1:5].T, d[:, 5], d[:, 6].astype(int)


def generated_run(n=8004, seed=0):
    """A Muse-like run: 12-sample packets stamped at arrival (random delays), interpolated, rounded to 1 ms."""
    rng = np.random.default_rng(seed)
    true = 5000.0 + np.arange(n) / 256.02
    packet_t = true[11::12] + rng.gamma(2.0, 0.004, len(true[11::12]))  # stamp of each packet's last sample
    stamps = np.concatenate([t - (11 - np.arange(12)) / SFREQ for t in packet_t])[:n]
    stamps = np.round(stamps, 3)
    eeg = rng.standard_normal((4, n)) * 15.0 + 800.0 * (rng.random((4, 1)) - 0.5)  # µV with offsets
    codes = np.zeros(n, int)
    on = np.arange(300, n - 300, 97)
    codes[on] = 1 + (np.arange(len(on)) % 2)
    return stamps, eeg, rng.standard_normal(n) * 40.0, codes


class MusePlayer:
    """Pushes the run in its own 12-sample packets with the file's stamps (time-compressed by ``speed``)."""

    def __init__(self, name, stamps, eeg, aux, codes, speed=SPEED):
        import pylsl

        n = len(stamps)
        self.name, self.speed = name, speed
        t0 = stamps[0]
        self.stamps = (stamps - t0) / speed  # jitter compressed with the time: the same in samples
        fit = np.polyfit(np.arange(n), stamps, 1)
        self.marker_t = (np.polyval(fit, np.arange(n)) - t0) / speed  # the stimulus clock's time of each sample
        self.x = np.vstack([eeg, aux, np.arange(n)]).T.astype(np.float32)  # (N, 6)
        self.codes = codes
        info = pylsl.StreamInfo(name, "EEG", 6, SFREQ, pylsl.cf_float32, name)
        chans = info.desc().append_child("channels")
        for label, unit, kind in [
            *[(c, "microvolts", "EEG") for c in EEG4],
            ("Right AUX", "microvolts", "AUX"),
            ("sample_index", "", "misc"),
        ]:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", unit)
            ch.append_child_value("type", kind)
        self.eeg = pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360)
        self.mk = pylsl.StreamOutlet(pylsl.StreamInfo(name + "-mk", "Markers", 1, 0.0, pylsl.cf_int32, name + "-mk"))
        self.done = threading.Event()
        self._thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self._thread.start()

    def run(self):
        import pylsl

        time.sleep(0.5)
        base = pylsl.local_clock() + 0.05
        n = len(self.x)
        for a in range(0, n, 12):
            b = min(a + 12, n)
            wait = base + (b - 1) / (SFREQ * self.speed) - pylsl.local_clock()
            if wait > 0:
                time.sleep(wait)
            self.eeg.push_chunk(self.x[a:b], (base + self.stamps[a:b]).tolist())
            for k in np.flatnonzero(self.codes[a:b]) + a:
                self.mk.push_sample([int(self.codes[k])], base + self.marker_t[k])
        time.sleep(1.0)
        self.done.set()


def offline_epochs(eeg_uv, codes):
    """``mne.Epochs`` on a ``RawArray`` of the run (volts): baseline, then ``Epochs.resample``; by onset sample."""
    raw = mne.io.RawArray(eeg_uv * 1e-6, mne.create_info(EEG4, SFREQ, "eeg"), verbose="error")
    on = np.flatnonzero(codes)
    events = np.stack([on, np.zeros_like(on), codes[on]], axis=1)
    ep = mne.Epochs(
        raw,
        events,
        tmin=PRESET.tmin_s,
        tmax=PRESET.tmax_s,
        baseline=(None, 0.0),
        preload=True,
        reject_by_annotation=False,
        verbose="error",
    ).resample(PRESET.sfreq, verbose="error")
    return dict(zip(ep.events[:, 0].tolist(), ep.get_data()))


def decode_live(stamps, eeg, aux, codes):
    name = f"test-muse-{uuid.uuid4().hex[:8]}"
    player = MusePlayer(name, stamps, eeg, aux, codes)
    n_times = len(preprocessed_times(PRESET, SFREQ))
    templates = np.random.default_rng(0).standard_normal((2, 16)).astype(np.float32)
    dec = Decoder.from_model(tiny_model(4, n_times), templates, ["house", "face"], 4, n_times, EEG4, device="cpu")
    src = LSLSource(name, resolve_timeout_s=5.0, poll_interval_s=0.02)
    eng = LiveEngine(
        LiveConfig(marker_timeout_s=5.0),
        source=src,
        markers=LSLMarkerSource(name + "-mk", 5.0),
        decoder=dec,
        preset=PRESET,
        whitening=None,
    )
    eng.epoch_log = []
    msg = eng.connect()
    player.start()
    t_end = time.monotonic() + len(stamps) / (SFREQ * SPEED) + 20
    while time.monotonic() < t_end and not (player.done.is_set() and not eng.epocher.pending):
        eng.acquire(0.05)
        eng.get_data()
    eng.disconnect()
    return eng, src, msg


def check_online_equals_offline(stamps, eeg, aux, codes):
    eng, src, msg = decode_live(stamps, eeg, aux, codes)
    # units / montage / rate on a stream unlike ThingsEEG2
    assert msg["model_ch_names"] == EEG4 and eng.plan.picks == [0, 1, 2, 3]
    assert eng.plan.montage.ignored == ("Right AUX", "sample_index")
    assert np.allclose(eng.plan.scale, 1e-6) and eng.epocher.sfreq == SFREQ
    # the jittery stamps do not split the stream, and they are real jitter: the nearest raw stamp of a
    # marker's time is often another sample
    assert len(src.clock.segments) == 1 and src.clock.gap_samples_estimate == 0
    on = np.flatnonzero(codes)
    t_true = np.polyval(np.polyfit(np.arange(len(stamps)), stamps, 1), on)
    nearest_raw = np.abs(stamps[None, :] - t_true[:, None]).argmin(axis=1)
    assert np.mean(nearest_raw != on) > 0.2
    off = offline_epochs(eeg, codes)
    first, n_in = eng.epocher.first_offset, eng.epocher.n_in
    expected = [int(s) for s in on if s + first >= 0 and s + first + n_in <= len(stamps)]
    got = [e.extra["sample_index"] for e in eng.epoch_log]
    # every marker decoded exactly once on its own sample: 0 samples of misalignment
    assert got == expected and [e.onset_index for e in eng.epoch_log] == expected
    assert [e.marker.concept for e in eng.epoch_log] == [["house", "face"][codes[s] - 1] for s in expected]
    online = np.stack([e.data for e in eng.epoch_log])
    offline = np.stack([off[s] for s in expected]).astype(np.float32)
    np.testing.assert_allclose(online, offline, rtol=1e-4, atol=1e-4 * np.abs(offline).max())
    return len(expected), float(np.abs(online - offline).max())


def test_generated_muse_like_stream_online_equals_offline():
    stamps, eeg, aux, codes = generated_run()
    n, _ = check_online_equals_offline(stamps, eeg, aux, codes)
    assert n >= 70


def test_real_muse_recording_online_equals_mne(shared_data):
    stamps, eeg, aux, codes = read_muse_csv(shared_data / MUSE_RUN)
    n, diff = check_online_equals_offline(stamps, eeg, aux, codes)
    assert n >= 190  # 197 markers in this run

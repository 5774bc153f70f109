"""Online epoching on an in-memory source with manual acquire (no sleeping, injectable clock)."""

import dataclasses

import numpy as np
import pytest

from bci.epocher import OnlineEpocher, RejectConfig, load_whitening, quality_reason
from bci.markers import Marker
from bci.sources import InMemorySource
from hmavd.errors import UserError
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import apply_whitening, preprocess_epoch

SFREQ = 100.0
# -0.05 … 0.2 s at 100 Hz = 26 raw samples (offset -5); 50 Hz out, crop 0 … 0.2 s
PRESET = dataclasses.replace(
    PRESETS["nice"], tmin_s=-0.05, tmax_s=0.2, sfreq=50.0, crop_tmin_s=0.0, crop_tmax_s=None, channels=None
)
T0 = 50.0  # timestamp of sample 0


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def setup(n_chans=3, whitening=None, **kw):
    src = InMemorySource([f"E{i}" for i in range(n_chans)], SFREQ, t_start_s=T0)
    src.connect()
    now = FakeClock()
    ep = OnlineEpocher(src, PRESET, picks=range(n_chans), whitening=whitening, now=now, **kw)
    return src, ep, now


def marker(index, code="1", concept="a"):
    return Marker(T0 + index / SFREQ, code, code, concept)


def signal(n, n_chans=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n_chans, n)).astype(np.float32)


def test_epoch_is_cut_exactly_when_its_last_sample_arrives():
    src, ep, _ = setup()
    x = signal(200)
    ep.add_markers([marker(40)])  # window = samples 35 … 60
    src.push(x[:, :60])
    src.acquire()
    assert ep.poll() == [] and len(ep.pending) == 1  # sample 60 missing
    src.push(x[:, 60:61])
    src.acquire()
    (e,) = ep.poll()
    assert e.onset_index == 40 and abs(e.onset_s - (T0 + 0.4)) < 1e-9
    expected = preprocess_epoch(x[:, 35:61].astype(np.float64), SFREQ, PRESET).astype(np.float32)
    np.testing.assert_allclose(e.data, expected, rtol=1e-6)
    assert e.data.shape == (3, 10) and e.ready_s >= e.last_arrival_s
    assert ep.pending == []


def test_overlapping_epochs_and_whitening_use_the_offline_functions():
    w = np.linalg.inv(np.linalg.cholesky(np.cov(signal(500)))).T
    w = (w + w.T) / 2
    src, ep, _ = setup(whitening=w)
    x = signal(400, seed=1)
    ep.add_markers([marker(i) for i in (20, 40, 60, 80)])  # onsets 0.2 s apart, windows overlap
    src.push(x)
    src.acquire()
    out = ep.poll()
    assert [e.onset_index for e in out] == [20, 40, 60, 80]
    raw = np.stack([x[:, i - 5 : i + 21] for i in (20, 40, 60, 80)]).astype(np.float64)
    offline = apply_whitening(preprocess_epoch(raw, SFREQ, PRESET), w)
    np.testing.assert_allclose(np.stack([e.data for e in out]), offline, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("picks", [[1, 2], [2, 0], [0, 2]])  # a run (sliced read) and gathers
def test_picked_channels_in_model_order(picks):
    src = InMemorySource([f"E{i}" for i in range(3)], SFREQ, t_start_s=T0)
    src.connect()
    ep = OnlineEpocher(src, PRESET, picks=picks, now=FakeClock())
    x = signal(100, seed=3)
    ep.add_markers([marker(40)])
    src.push(x)
    src.acquire()
    (e,) = ep.poll()
    expected = preprocess_epoch(x[picks, 35:61].astype(np.float64), SFREQ, PRESET).astype(np.float32)
    np.testing.assert_allclose(e.data, expected, rtol=1e-6)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda x: x.__setitem__((1, 45), np.nan), "nan"),
        (lambda x: x.__setitem__((2, slice(30, 70)), 0.25), "flat"),
        (lambda x: x.__setitem__((0, slice(40, 55)), 9.0), "clipped"),
    ],
)
def test_bad_epochs_are_rejected_with_reason(mutate, reason):
    src, ep, _ = setup(reject=RejectConfig(clip_run=10))
    x = signal(200)
    mutate(x)
    ep.add_markers([marker(40), marker(150)])
    src.push(x)
    src.acquire()
    out = ep.poll()
    assert [e.onset_index for e in out] == [150]  # the good one still comes out
    assert ep.rejected == {reason: 1}


def test_quality_clip_abs_and_clean():
    x = signal(50).astype(np.float64)
    assert quality_reason(x, RejectConfig()) is None
    assert quality_reason(x, RejectConfig(clip_abs=0.5)) == "clipped"


def test_epoch_straddling_a_gap_and_marker_in_gap_are_rejected():
    src, ep, _ = setup()
    x = signal(300)
    src.push(x[:, :100])  # samples 0 … 99 at 50.00 … 50.99 s
    src.skip(50)  # outage: 0.5 s lost
    src.push(x[:, 100:200])  # received 100 … 199, at 51.50 … 52.49 s
    src.acquire()
    src.acquire()
    m_straddle = Marker(T0 + 0.9, "1", "1", "a")  # window runs into the outage
    m_in_gap = Marker(T0 + 1.2, "2", "2", "b")
    m_after = Marker(T0 + 1.7, "3", "3", "c")  # received index 120, entirely after the gap
    ep.add_markers([m_straddle, m_in_gap, m_after])
    out = ep.poll()
    assert [e.onset_index for e in out] == [120]
    np.testing.assert_allclose(
        out[0].data, preprocess_epoch(x[:, 115:141].astype(np.float64), SFREQ, PRESET), rtol=1e-5
    )
    assert ep.rejected == {"straddles_gap": 1, "marker_in_gap": 1}


def test_marker_before_data_waits_then_times_out():
    src, ep, now = setup(marker_timeout_s=2.0)
    x = signal(400)
    src.push(x[:, :10])
    src.acquire()
    ep.add_markers([marker(100), marker(300)])  # both ahead of the data
    now.t = 1.0
    assert ep.poll() == [] and len(ep.pending) == 2
    src.push(x[:, 10:130])
    src.acquire()
    now.t = 1.5
    (e,) = ep.poll()  # the first waited and is cut now
    assert e.onset_index == 100
    now.t = 2.5  # the second's data never arrive
    assert ep.poll() == []
    assert ep.rejected == {"timeout": 1} and ep.pending == []


def test_load_whitening_checks_shape(tmp_path):
    w = np.stack([np.eye(3), 2 * np.eye(3)])
    np.savez(tmp_path / "mvnn.npz", whitening=w)
    np.testing.assert_allclose(load_whitening(str(tmp_path / "mvnn.npz"), 3), 1.5 * np.eye(3))
    np.testing.assert_allclose(load_whitening(str(tmp_path / "mvnn.npz"), 3, session=1), 2 * np.eye(3))
    with pytest.raises(UserError, match="whitening"):
        load_whitening(str(tmp_path / "mvnn.npz"), 4)


class _FakeInlet:
    """Stands in for a pylsl inlet: a scripted ``time_correction`` and one chunk of markers."""

    def __init__(self, offsets, chunk):
        self.offsets, self.chunk = list(offsets), chunk

    def time_correction(self, timeout):
        value = self.offsets.pop(0)
        if isinstance(value, Exception):
            raise value
        return value

    def pull_chunk(self, timeout, max_samples, as_numpy):
        out, self.chunk = self.chunk, ([], [])
        return out


def test_marker_times_are_clock_corrected_and_offset_survives_outages():
    from bci.markers import LSLMarkerSource
    from bci.sources import ClockOffset

    inlet = _FakeInlet([0.25, TimeoutError("source away"), 0.5], ([["17"], [3.0], ["cat"]], [10.0, 10.2, 10.4]))
    off = ClockOffset(inlet)
    assert off.update() == 0.25
    assert off.update() == 0.25 and off.failures == 1  # the source is away: the last offset is kept
    src = LSLMarkerSource("m")
    src._inlet, src._offset = inlet, off
    assert src.pull() == [(10.25, "17"), (10.45, "3"), (10.65, "cat")]  # marker clock -> consumer clock
    assert off.update() == 0.5 and src.pull() == []


def test_clip_abs_rejects_at_the_threshold_itself():
    """Documented as |x| >= clip_abs: a sample exactly at the threshold is clipped (mutation testing)."""
    x = signal(50).astype(np.float64)
    peak = float(np.abs(x).max())
    assert quality_reason(x, RejectConfig(clip_abs=peak, clip_run=0)) == "clipped"
    assert quality_reason(x, RejectConfig(clip_abs=np.nextafter(peak, np.inf), clip_run=0)) is None


def test_epoch_counter_counts_every_epoch_of_a_poll():
    src, ep, _ = setup()
    ep.add_markers([marker(i) for i in (20, 40, 60)])  # three windows complete in the same poll
    src.push(signal(200))
    src.acquire()
    assert len(ep.poll()) == 3 and ep.n_epochs == 3


@pytest.mark.parametrize("spin_s", [5.0, 0.0])
def test_a_poll_waits_for_the_chunk_that_completes_an_epoch(spin_s):
    """With a background acquisition thread, the poll before the last chunk waits for it and cuts the epoch."""
    import threading

    src = InMemorySource([f"E{i}" for i in range(3)], SFREQ, t_start_s=T0, poll_interval_s=0.001)
    src.connect()
    try:
        ep = OnlineEpocher(src, PRESET, picks=range(3), marker_timeout_s=60.0)
        ep.spin_s = spin_s
        x = signal(200)
        ep.add_markers([marker(40)])  # window = samples 35 … 60
        src.push(x[:, :50])
        assert src.wait_for_data(49, 5.0) and src.n_written == 50
        if spin_s:
            late = threading.Timer(0.05, src.push, args=(x[:, 50:100],))  # the completing chunk, 50 ms later
            late.start()
            out = ep.poll()
            late.join()
            (e,) = out  # cut by the same poll, once the thread wrote the chunk
        else:
            assert ep.poll() == [] and len(ep.pending) == 1  # no wait: the poll returns at once
            src.push(x[:, 50:100])
            assert src.wait_for_data(99, 5.0)
            (e,) = ep.poll()
        expected = preprocess_epoch(x[:, 35:61].astype(np.float64), SFREQ, PRESET).astype(np.float32)
        np.testing.assert_allclose(e.data, expected, rtol=1e-6)
        assert ep.poll() == [] and not ep.pending
    finally:
        src.disconnect()


def test_no_wait_without_an_acquisition_thread():
    """Manual acquire (tests, replays): nothing can arrive during a poll, so it never waits."""
    src, ep, _ = setup()
    ep.spin_s = 60.0
    ep.add_markers([marker(40)])
    src.push(signal(60))
    src.acquire()
    assert ep._due_next_chunk() is None and ep.poll() == []


def test_a_burst_does_not_make_later_polls_wait():
    """The wait is for the typical chunk: after one large burst, an epoch 30 samples short is not waited for."""
    src = InMemorySource([f"E{i}" for i in range(3)], SFREQ, t_start_s=T0, poll_interval_s=0.001)
    src.connect()
    try:
        ep = OnlineEpocher(src, PRESET, picks=range(3), marker_timeout_s=60.0)
        ep.spin_s = 5.0
        x, n = signal(400), 0
        ep.add_markers([marker(390)])  # pending throughout: the polls record the chunk sizes
        for size in (5, 5, 5, 5, 200):  # four small chunks, then a burst
            src.push(x[:, n : n + size])
            n += size
            assert src.wait_for_data(n - 1, 5.0)
            ep.poll()
        ep.add_markers([marker(n - 10)])  # its window [n − 15, n + 11) lacks 11 samples: beyond the typical 5
        assert ep._due_next_chunk() is None
        ep.add_markers([marker(n - 16)])  # [n − 21, n + 5) lacks 5: the next chunk completes it
        assert ep._due_next_chunk() == n + 5
    finally:
        src.disconnect()


def test_a_poll_waits_for_the_last_sample_not_the_one_before():
    """The completing data arrive in two chunks, the first ending one sample short of the window: the poll
    keeps waiting through the first and cuts the epoch from the second."""
    import threading

    src = InMemorySource([f"E{i}" for i in range(3)], SFREQ, t_start_s=T0, poll_interval_s=0.001)
    src.connect()
    try:
        ep = OnlineEpocher(src, PRESET, picks=range(3), marker_timeout_s=60.0)
        ep.spin_s = 5.0
        x = signal(200)
        ep.add_markers([marker(40)])  # window = samples 35 … 60
        src.push(x[:, :50])
        assert src.wait_for_data(49, 5.0) and src.n_written == 50
        short = threading.Timer(0.05, src.push, args=(x[:, 50:60],))  # up to sample 59: one short
        last = threading.Timer(0.15, src.push, args=(x[:, 60:100],))
        short.start()
        last.start()
        out = ep.poll()
        short.join()
        last.join()
        (e,) = out  # the same poll, after the last sample (60) was written
        expected = preprocess_epoch(x[:, 35:61].astype(np.float64), SFREQ, PRESET).astype(np.float32)
        np.testing.assert_allclose(e.data, expected, rtol=1e-6)
    finally:
        src.disconnect()


@pytest.mark.parametrize("field", ["flat_ptp", "clip_abs", "clip_run"])
def test_negative_reject_threshold_is_one_line(field):
    with pytest.raises(UserError, match=f"^{field}: -1 must be >= 0"):
        RejectConfig(**{field: -1})

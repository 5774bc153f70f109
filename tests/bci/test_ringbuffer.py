"""Ring buffer by absolute sample index, dejittered sample clock and gap detection."""

import numpy as np
import pytest

from bci.ringbuffer import RingBuffer, SampleClock


def test_ring_buffer_wraps_around_by_absolute_index():
    buf = RingBuffer(n_chans=2, capacity=10)
    data = np.stack([np.arange(25), -np.arange(25)], axis=1).astype(np.float32)  # (25, 2)
    for a in range(0, 25, 7):  # chunks of 7 cross the wrap point several times
        assert buf.write(data[a : a + 7], arrival_s=float(a)) == a
    assert buf.n_written == 25 and buf.first_available == 15
    np.testing.assert_array_equal(buf.read(15, 25), data[15:25].T)  # wrapped range, (C, n)
    np.testing.assert_array_equal(buf.read(18, 20)[1], [-18, -19])
    assert buf.arrival(24) == 21.0
    with pytest.raises(IndexError, match="overwritten"):
        buf.read(14, 16)
    with pytest.raises(IndexError, match="not yet"):
        buf.read(20, 26)
    for start, stop in ((15, 25), (16, 19), (21, 25)):  # wrapped and unwrapped ranges, one channel or both
        for sel in (slice(0, 2), slice(1, 2)):
            got = buf.read_channels(start, stop, sel)
            assert got.dtype == np.float64 and got.flags.c_contiguous
            np.testing.assert_array_equal(got, buf.read(start, stop)[sel])
    with pytest.raises(IndexError, match="overwritten"):
        buf.read_channels(14, 16, slice(0, 1))


def test_ring_buffer_chunk_larger_than_capacity_keeps_newest():
    buf = RingBuffer(1, 4)
    buf.write(np.arange(10, dtype=np.float32)[:, None])
    np.testing.assert_array_equal(buf.read(6, 10)[0], [6, 7, 8, 9])


def test_clock_dejitters_and_locates_nearest_sample():
    rng = np.random.default_rng(0)
    clock = SampleClock(sfreq=1000.0)
    t = 100.0 + np.arange(5000) / 1000.0
    jittered = t + rng.uniform(-1e-4, 1e-4, t.size)
    for a in range(0, 5000, 37):
        clock.add(a, jittered[a : a + 37])
    assert len(clock.segments) == 1
    assert abs(clock.measured_sfreq() - 1000.0) < 0.05
    assert clock.locate(t[1234] + 0.0003) == ("ok", 1234)
    assert clock.locate(t[1234] - 0.0004) == ("ok", 1234)
    assert clock.locate(t[-1] + 0.01)[0] == "wait"
    assert clock.locate(99.0)[0] == "before"


def test_clock_detects_gap_and_marker_in_gap():
    clock = SampleClock(sfreq=100.0)
    clock.add(0, 10.0 + np.arange(50) / 100.0)  # 10.00 … 10.49
    clock.add(50, 11.0 + np.arange(50) / 100.0)  # outage of 0.5 s, then 11.00 … 11.49
    assert [s.start for s in clock.segments] == [0, 50]
    assert clock.gap_samples_estimate == 50
    assert clock.locate(10.7) == ("gap", -1)
    assert clock.locate(11.2) == ("ok", 70)
    assert clock.locate(10.2) == ("ok", 20)
    # a gap inside one chunk is found too (after the first second, when the stream's jitter is known)
    c2 = SampleClock(sfreq=100.0)
    c2.add(0, np.arange(150) / 100.0)
    c2.add(150, np.r_[np.arange(150, 160), np.arange(170, 180)] / 100.0)
    assert [s.start for s in c2.segments] == [0, 160]


def test_clock_follows_accelerated_stream():
    clock = SampleClock(sfreq=1000.0)
    t = np.arange(2000) / 10000.0  # 10x faster than nominal
    clock.add(0, t[:1000])
    clock.add(1000, t[1000:])
    assert len(clock.segments) == 1
    assert clock.locate(t[1500]) == ("ok", 1500)

"""Reconnects over real LSL: an outlet that disappears for 3 s and comes back loses no complete epoch."""

import threading
import time
import uuid

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, PRESET, SFREQ_IN, tiny_decoder

from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import LSLMarkerSource
from bci.sources import LSLSource

pytestmark = pytest.mark.lsl


class GapPlayer:
    """An independent pylsl player: EEG (4 ch + sample_index, µV) and markers every ``every_s``.

    At ``gap_at_s`` both outlets are destroyed; ``gap_s`` later they are created again under the same
    name and source id, and streaming resumes at the sample that is due then (the samples of the outage
    are lost, as with an amplifier app that crashed and was restarted). Markers fall on their sample's time;
    every chunk's stamps are late by a random push latency of up to ``jitter_s`` (as stamps taken at push).
    """

    def __init__(self, name, duration_s=10.0, gap_at_s=3.0, gap_s=3.0, every_s=0.2, seed=0, jitter_s=0.004):
        self.name, self.duration_s, self.gap_at_s, self.gap_s, self.every = name, duration_s, gap_at_s, gap_s, every_s
        n = int(duration_s * SFREQ_IN)
        self.data = (np.random.default_rng(seed).standard_normal((n, 4)) * 10.0).astype(np.float32)  # µV
        self.sent: list[int] = []  # sample indices pushed
        self.markers: list[int] = []  # marker samples pushed
        self.jitter_s = jitter_s
        self._rng = np.random.default_rng(seed + 1)
        self.done = threading.Event()
        self._thread = threading.Thread(target=self.run, daemon=True)

    def _outlets(self):
        import pylsl

        info = pylsl.StreamInfo(self.name, "EEG", 5, SFREQ_IN, pylsl.cf_float32, self.name)
        chans = info.desc().append_child("channels")
        for label in [*CH_NAMES, "sample_index"]:
            ch = chans.append_child("channel")
            ch.append_child_value("label", label)
            ch.append_child_value("unit", "microvolts" if label != "sample_index" else "")
            ch.append_child_value("type", "EEG" if label != "sample_index" else "misc")
        mk = pylsl.StreamInfo(self.name + "-mk", "Markers", 1, 0.0, pylsl.cf_string, self.name + "-mk")
        return pylsl.StreamOutlet(info, chunk_size=0, max_buffered=360), pylsl.StreamOutlet(mk)

    def start(self):
        self._thread.start()

    def run(self):
        import pylsl

        step = int(self.every * SFREQ_IN)
        chunk = 2
        eeg, mk = self._outlets()
        time.sleep(1.0)  # consumers find the streams
        t0 = self.t0 = pylsl.local_clock() + 0.05
        g, n, gone = 0, len(self.data), False
        try:
            while g < n:
                now_s = pylsl.local_clock() - t0
                if not gone and now_s >= self.gap_at_s:
                    del eeg, mk  # the outlets vanish
                    gone = True
                    time.sleep(self.gap_s)
                    eeg, mk = self._outlets()
                    g = max(g, int((pylsl.local_clock() - t0) * SFREQ_IN))  # resume at the sample due now
                    continue
                end = min(g + chunk, n)
                wait = t0 + (end - 1) / SFREQ_IN - pylsl.local_clock()
                if wait > 0:
                    time.sleep(wait)
                x = np.hstack([self.data[g:end], np.arange(g, end, dtype=np.float32)[:, None]])
                late = self._rng.uniform(0, self.jitter_s)
                eeg.push_chunk(x, (t0 + late + np.arange(g, end) / SFREQ_IN).tolist())
                for s in range(-(-g // step) * step, end, step):
                    if s > 0:
                        mk.push_sample([str(1 + (s // step) % len(CONCEPTS))], t0 + s / SFREQ_IN)
                        self.markers.append(s)
                self.sent.extend(range(g, end))
                g = end
            time.sleep(1.5)  # the last epochs' data reach the consumer before the outlets close
        finally:
            self.done.set()


def test_outlet_gone_3s_and_back_loses_no_complete_epoch():
    name = f"test-reconnect-{uuid.uuid4().hex[:8]}"
    player = GapPlayer(name)
    dec = tiny_decoder()
    player.start()
    src = LSLSource(name, resolve_timeout_s=5.0, poll_interval_s=0.02)
    eng = LiveEngine(
        LiveConfig(marker_timeout_s=8.0),
        source=src,
        markers=LSLMarkerSource(name + "-mk", 5.0),
        decoder=dec,
        preset=PRESET,
        whitening=None,
    )
    eng.epoch_log = []
    eng.connect()
    offsets = (src._offset, eng.markers._offset)
    got_markers: list[float] = []  # times of the markers the consumer received (LSL drops those sent before
    live_pull = eng.markers.pull  # the marker inlet reconnected, as it drops such EEG samples)

    def pull_and_note():
        out = live_pull()
        got_markers.extend(t for t, _ in out)
        return out

    eng.markers.pull = pull_and_note
    t_end = time.monotonic() + 25
    while time.monotonic() < t_end and not (player.done.is_set() and not eng.epocher.pending):
        eng.acquire(0.05)
        eng.get_data()
    received = src.get_data(src.buffer.first_available, src.n_written)[4].astype(int)  # sample_index column
    eng.disconnect()
    decoded = [e.extra["sample_index"] for e in eng.epoch_log]
    assert decoded == sorted(set(decoded))  # none duplicated, in order
    have = set(received.tolist())
    first, n_in = eng.epocher.first_offset, eng.epocher.n_in
    gap_start = max(s for s in player.sent if s + 1 not in player.sent and s + 1 < len(player.data)) + 1
    after = [s for s in player.markers if s > gap_start]
    # a complete epoch: its marker and every sample of its window were received (judged from what arrived)
    marker_samples = {int(round((t - player.t0) * SFREQ_IN)) for t in got_markers}
    complete = [s for s in after if s in marker_samples and all(k in have for k in range(s + first, s + first + n_in))]
    assert len(complete) >= 10, "too few epochs after the gap to judge"
    segs = [(s.start, s.n) for s in src.clock.segments]
    missed = sorted(set(complete) - set(decoded))
    hist = [[round(x * 1e3, 2) for x in o.history] for o in offsets]
    lost = sorted(set(after) - marker_samples)[:6]
    why = f"rejected {dict(eng.epocher.rejected)}; segments {segs}; offsets ms {hist}; markers not received {lost}"
    assert missed == [], f"complete epochs after the gap not decoded: {missed}; {why}"
    # nothing cut across the outage
    assert not any(s + first < gap_start <= s + first + n_in - 1 for s in decoded)
    assert len(src.clock.segments) >= 2


def test_markers_from_before_the_session_are_not_decoded_as_live():
    """An EEG outlet with history and a marker app that sends its queued, old-stamped markers at connect."""
    import pylsl

    name = f"test-stale-{uuid.uuid4().hex[:8]}"
    player = GapPlayer(name, duration_s=6.0, gap_at_s=99.0, jitter_s=0.0)
    dec = tiny_decoder()
    player.start()
    time.sleep(2.5)  # the outlets have streamed ~1.5 s before the session starts
    src = LSLSource(name, resolve_timeout_s=5.0, poll_interval_s=0.02)
    eng = LiveEngine(
        LiveConfig(), source=src, markers=LSLMarkerSource(name + "-mk", 5.0), decoder=dec, preset=PRESET, whitening=None
    )
    eng.epoch_log = []
    eng.connect()
    assert eng.t_session_s > pylsl.local_clock() - 5.0
    queued = pylsl.StreamOutlet(pylsl.StreamInfo(name + "-late", "Markers", 1, 0.0, pylsl.cf_string, name + "-late"))
    late = LSLMarkerSource(name + "-late", 5.0)
    late.connect()
    t_old = eng.t_session_s - 3.0
    queued.push_sample(["3"], t_old)  # stamped 3 s before the session started
    time.sleep(0.3)
    stale = late.pull()
    assert [c for _, c in stale] == ["3"] and stale[0][0] < eng.t_session_s
    live_pull = eng.markers.pull

    def pull_with_queued():  # the queued marker arrives once, with the live ones
        out = live_pull() + stale
        stale.clear()
        return out

    eng.markers.pull = pull_with_queued
    t_end = time.monotonic() + 15
    while time.monotonic() < t_end and not (player.done.is_set() and not eng.epocher.pending):
        eng.acquire(0.05)
        eng.get_data()
    eng.disconnect()
    late.disconnect()
    assert eng.stale_markers == 1
    assert len(eng.epoch_log) >= 10 and all(e.marker.t_s > t_old + 1.0 for e in eng.epoch_log)

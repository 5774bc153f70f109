"""Marker codes: numbers embedded in text, mapping files, catch and unknown codes, offsets, LSL formats."""

import json
import time
import uuid

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, SFREQ_IN, manual_engine

from bci.live_config import LiveConfig
from bci.markers import InMemoryMarkers, LSLMarkerSource, MarkerMap, load_marker_map, marker_number
from bci.recording_io import read_session
from bci.sources import InMemorySource
from hmavd.errors import UserError


@pytest.mark.parametrize(
    "code, num",
    [
        ("17", 17),
        ("S 17", 17),
        ("S  17", 17),
        ("stim/17", 17),
        ("image_00017", 17),
        ("Stimulus/S 17", 17),
        (17, 17),
        (17.0, 17),
        ("17.0", 17),
        ("face", None),
        (17.5, None),
        ("", None),
    ],
)
def test_marker_number_in_text(code, num):
    assert marker_number(code) == num


def test_thingseeg2_codes_catch_and_unknown():
    mm = MarkerMap(["aircraft carrier", "antelope"])
    assert mm.classify("1").concept == "aircraft carrier" and mm.classify("1").kind == "image"
    assert mm.classify("Stimulus/S  2").concept == "antelope"
    assert mm.classify("image_00002").concept == "antelope"
    catch = mm.classify("99999")
    assert (catch.kind, catch.label, catch.concept) == ("catch", "catch", None) and mm.n_ignored == 1
    assert mm.classify("S 99999").kind == "catch"
    unk = mm.classify("7")
    assert (unk.kind, unk.label) == ("unknown", "unknown 7")
    assert mm.lookup("7") is None and mm.lookup("bogus") is None
    assert mm.unknown == {"7": 2, "bogus": 1}


def test_mapping_file_codes_to_images_or_concepts(tmp_path):
    concepts = ["00001_aircraft_carrier", "00002_antelope"]
    (tmp_path / "map.csv").write_text(
        "code,target\n# face/house experiment\n1,aircraft_carrier_06s.jpg\nS 2,00002_antelope\n3,house\n"
    )
    (tmp_path / "map.json").write_text(json.dumps({"face": "test_images/00002_antelope/antelope_01b.jpg"}))
    mm = MarkerMap(concepts, mapping=load_marker_map(str(tmp_path / "map.csv")))
    assert mm.classify("1").concept == "00001_aircraft_carrier"  # an image file of that concept
    assert mm.classify("stim/2").concept == "00002_antelope"  # the key's number matches too
    house = mm.classify("3")
    assert house.kind == "image" and house.concept is None  # decoded, no true concept to score
    assert mm.classify("4").kind == "unknown"  # with a mapping, numbers are not ThingsEEG2 image numbers
    mm = MarkerMap(concepts, mapping=load_marker_map(str(tmp_path / "map.json")))
    assert mm.classify("face").concept == "00002_antelope"
    (tmp_path / "bad.csv").write_text("just one column\n")
    with pytest.raises(UserError, match="marker_map: .*holds no code"):
        load_marker_map(str(tmp_path / "bad.csv"))
    with pytest.raises(UserError, match="marker_map"):
        load_marker_map(str(tmp_path / "absent.json"))


def _engine(**cfg):
    src = InMemorySource(list(CH_NAMES), SFREQ_IN, t_start_s=0.0, ch_units=["V"] * 4)
    marks = InMemoryMarkers()
    eng = manual_engine(src, marks, **cfg)
    eng.epoch_log = []
    return eng, src, marks


def test_offset_catch_unknown_in_engine(tmp_path):
    eng, src, marks = _engine(marker_offset_s=0.05)
    eng.connect()
    eng.record_start(str(tmp_path / "session"))
    rng = np.random.default_rng(0)
    for t, code in [(0.5, "S 1"), (1.0, "99999"), (1.5, 77), (2.0, 2.0)]:
        marks.push(t, code)
    msgs = []
    for _ in range(8):
        src.push(rng.standard_normal((4, 100)) * 1e-5)
        eng.acquire()
        msgs += eng.get_data()
    eng.record_stop()
    preds = [m for m in msgs if m["type"] == "prediction"]
    # every marker moved by the offset: onsets at 0.55 s and 2.05 s -> samples 110 and 410
    assert [p["onset_index"] for p in preds] == [110, 410]
    assert [p["true_concept"] for p in preds] == [CONCEPTS[0], CONCEPTS[1]]
    labels = [label for m in msgs if m["type"] == "scope" for _, label in m["markers"]]
    assert labels == [CONCEPTS[0], "catch", "unknown 77", CONCEPTS[1]]
    _, _, events = read_session(tmp_path / "session")  # every marker recorded, moved by the offset
    assert sorted(events) == [(110, "S 1"), (210, "99999"), (310, "77"), (410, "2.0")]


def test_online_settings_validated(tmp_path):
    for bad, match in [
        ({"marker_offset_s": 5.0}, "marker_offset_s"),
        ({"stream_units": "furlongs"}, "stream_units"),
        ({"interpolate_missing": -1}, "interpolate_missing"),
        ({"amplitude_check": "maybe"}, "amplitude_check"),
    ]:
        with pytest.raises(UserError, match=match):  # refused when built, also in Python
            LiveConfig(**bad)
    eng, _, _ = _engine(marker_map=str(tmp_path / "x.csv"))  # files are checked when the session is resolved
    with pytest.raises(UserError, match="marker_map: .*is not a file"):
        eng.connect()


@pytest.mark.lsl
@pytest.mark.parametrize("fmt", ["string", "int32", "float32", "double64"])
def test_lsl_marker_formats_and_channels(fmt):
    """Integer, float and string marker streams, two channels (the first is the code); stale ones."""
    import pylsl

    name = f"test-mk-{fmt}-{uuid.uuid4().hex[:6]}"
    cf = {
        "string": pylsl.cf_string,
        "int32": pylsl.cf_int32,
        "float32": pylsl.cf_float32,
        "double64": pylsl.cf_double64,
    }[fmt]
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(name, "Markers", 2, 0.0, cf, name))
    src = LSLMarkerSource(name, resolve_timeout_s=3.0)
    src.connect()
    t0 = pylsl.local_clock()
    codes = ["17", "S 3"] if fmt == "string" else [17, 3]
    for k, c in enumerate(codes):
        outlet.push_sample([c, "x" if fmt == "string" else 99], t0 + k * 0.1)
    got, t_end = [], time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < t_end:
        got += src.pull()
        time.sleep(0.02)
    src.disconnect()
    assert [c for _, c in got] == [str(c) for c in codes]
    assert np.allclose([t for t, _ in got], [t0, t0 + 0.1], atol=1e-3)
    assert src.t_connected_s <= t0


def test_take_markers_records_and_scopes_every_marker_and_decodes_live_images():
    from bci.markers import STALE_MARGIN_S, take_markers

    class Log:
        def __init__(self):
            self.items = []

        def write_marker(self, t_s, code, label, concept):
            self.items.append((t_s, code))

        def add_marker(self, t_s, label):
            self.items.append((t_s, label))

    rec, scope = Log(), Log()
    mm = MarkerMap(CONCEPTS)
    t0 = 100.0
    items = [(t0 - STALE_MARGIN_S - 0.1, "1"), (t0 + 1.0, "99999"), (t0 + 2.0, "2"), (t0 + 3.0, "77")]
    out, n_stale = take_markers(items, mm, offset_s=0.05, t_session_s=t0, recorder=rec, scope=scope)
    assert [(m.t_s, m.code, m.concept) for m in out] == [(t0 + 2.05, "2", CONCEPTS[1])] and n_stale == 1
    assert [code for _, code in rec.items] == ["1", "99999", "2", "77"]  # every marker recorded, moved by the offset
    assert rec.items[2][0] == pytest.approx(t0 + 2.05)
    assert [label for _, label in scope.items] == [CONCEPTS[0], "catch", CONCEPTS[1], "unknown 77"]

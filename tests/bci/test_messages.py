"""The engine's messages are exactly what bci.messages declares, and they survive pickling (spawn queues)."""

import pickle

import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, SFREQ_IN, make_recording, tiny_model

from bci import messages as M
from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import InMemoryMarkers
from bci.sources import InMemorySource

T0 = 500.0
BY_TYPE = {
    "connected": M.ConnectedMessage,
    "scope": M.ScopeMessage,
    "prediction": M.PredictionMessage,
    "status": M.StatusMessage,
    "quality": M.QualityMessage,
    "error": M.ErrorMessage,
    "stopped": M.StoppedMessage,
}


def _keys_conform(msg: dict) -> None:
    typ = BY_TYPE[msg["type"]]
    missing = typ.__required_keys__ - msg.keys()
    extra = msg.keys() - typ.__required_keys__ - typ.__optional_keys__
    assert not missing and not extra, (msg["type"], missing, extra)


def _session_messages(tmp_path, accumulate: str) -> list[dict]:
    _, eeg, events = make_recording(tmp_path / f"rec-{accumulate}_raw.fif", duration_s=4.0)
    rng = np.random.default_rng(1)
    templates = rng.standard_normal((len(CONCEPTS), 16)).astype(np.float32)
    dec = Decoder.from_model(tiny_model(), templates, CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu")
    src = InMemorySource([*CH_NAMES, "sample_index"], SFREQ_IN, t_start_s=T0)
    marks = InMemoryMarkers()
    cfg = LiveConfig(status_interval_s=0.0, scope_interval_s=0.0, quality_interval_s=1e-6, accumulate=accumulate)
    eng = LiveEngine(cfg, source=src, markers=marks, decoder=dec, preset=PRESET)
    eng.connect()
    for s, _, c in events:
        marks.push(T0 + s / SFREQ_IN, int(c))
    data = np.vstack([eeg, np.arange(eeg.shape[1])[None]])  # (5, N)
    msgs = []
    for a in range(0, data.shape[1], 50):
        src.push(data[:, a : a + 50])
        eng.acquire()
        msgs += eng.get_data()
    assert eng.handle(M.record_stop_command()) and not eng.handle(M.stop_command())
    eng.handle({"cmd": "bogus"})
    msgs += eng.get_data()
    eng.disconnect()
    return msgs


@pytest.mark.parametrize("accumulate", ["epochs", "off"])
def test_every_engine_message_has_exactly_the_declared_fields(tmp_path, accumulate):
    msgs = _session_messages(tmp_path, accumulate)
    kinds = {m["type"] for m in msgs}
    assert {"connected", "scope", "prediction", "status", "quality", "error"} <= kinds
    for msg in msgs:
        _keys_conform(msg)
        assert type(msg) is dict  # plain dicts on the wire
    preds = [m for m in msgs if m["type"] == "prediction"]
    assert all("sample_index" in p for p in preds)
    assert all(("acc_n" in p) == (accumulate != "off") for p in preds)
    assert [m["message"] for m in msgs if m["type"] == "error"] == ["unknown command 'bogus'"]
    back = pickle.loads(pickle.dumps(msgs))  # the spawn process's queues pickle every message
    scope = next(m for m in back if m["type"] == "scope")
    assert scope["data"].dtype == np.float32 and scope["data"].shape[0] == 5


def test_constructors_build_plain_dicts_of_the_declared_shape():
    built = [M.error_message("boom"), M.stopped_message()]
    assert built == [{"type": "error", "message": "boom"}, {"type": "stopped"}]
    for msg in built:
        _keys_conform(msg)
    assert M.stop_command() == {"cmd": "stop"} and M.record_stop_command() == {"cmd": "record_stop"}
    assert M.record_start_command("x") == {"cmd": "record_start", "path": "x"}
    assert {c["cmd"] for c in (M.stop_command(), M.record_start_command(), M.record_stop_command())} == set(M.COMMANDS)
    assert set(M.MESSAGE_TYPES) == set(BY_TYPE)

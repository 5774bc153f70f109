"""The live transform split early / tail equals the offline transform; the split quality check equals the whole one."""

import numpy as np
import pytest

from bci.early_transform import EarlyTransform, LateEpoch, split_quality_reason
from bci.epocher import OnlineEpocher, RejectConfig, make_transform, quality_reason
from bci.markers import Marker
from bci.sources import InMemorySource
from hmavd.preprocessing.presets import PRESETS
from hmavd.preprocessing.transforms import apply_whitening, preprocess_epoch

SFREQ = 1000.0
T0 = 10.0


def _whitening(c, seed=0):
    a = np.random.default_rng(seed).standard_normal((c, c))
    return np.linalg.inv(np.linalg.cholesky(a @ a.T + np.eye(c)))


@pytest.mark.parametrize(
    ("preset", "sfreq"), [("nice", 1000.0), ("gifford", 1000.0), ("nice", 2048.0), ("gifford", 250.0)]
)
def test_split_equals_offline_transform_in_float64(preset, sfreq):
    p = PRESETS[preset]
    w = _whitening(5)
    et = EarlyTransform(p, sfreq, w)
    x = np.random.default_rng(1).standard_normal((5, et.n_in)) * 1e-5 + 4e-5  # (C, n_in), an offset too
    want = apply_whitening(preprocess_epoch(x, sfreq, p), w)  # (C, n_out) float64
    assert et.max_tail > 0 and want.shape == (5, et.n_out)
    for tail in (1, et.default_tail, et.max_tail // 2, et.max_tail):
        k = et.n_in - tail
        got = et.finish(LateEpoch(et.prepare(0, x[:, :k]), x[:, k:]), dtype=np.float64)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
    # and the float32 default equals the epocher's whole-window transform
    k = et.n_in - et.default_tail
    np.testing.assert_allclose(
        et.finish(LateEpoch(et.prepare(0, x[:, :k]), x[:, k:])), make_transform(p, sfreq, w)(x[None])[0], rtol=1e-6
    )


def test_prepare_refuses_an_early_part_without_the_whole_baseline():
    et = EarlyTransform(PRESETS["nice"], SFREQ, None)
    with pytest.raises(ValueError, match="early part"):
        et.prepare(0, np.zeros((2, 100)))  # the baseline (-0.2…0 s) needs 201 samples


def _cases():
    rng = np.random.default_rng(3)
    base = rng.standard_normal((4, 300))
    yield "clean", base
    flat = base.copy()
    flat[2] = 1.5
    yield "flat", flat
    big = base.copy()
    big[1, 250] = 40.0
    yield "clip_abs late", big
    for where, sl in (("early", slice(20, 45)), ("late", slice(260, 290)), ("across", slice(180, 215))):
        run = base.copy()
        run[3, sl] = run[3].max() + 1.0  # stuck at its maximum
        yield f"clip run {where}", run
    same_max = base.copy()
    same_max[0, [10, 250]] = 9.0  # the maximum in both parts
    yield "max in both parts", same_max
    for where, i in (("early", 5), ("late", 295)):
        nan = base.copy()
        nan[1, i] = np.nan
        yield f"nan {where}", nan


@pytest.mark.parametrize(
    "reject",
    [
        RejectConfig(),
        RejectConfig(flat_ptp=0.0, clip_abs=20.0, clip_run=20),
        RejectConfig(clip_run=2),
        RejectConfig(clip_run=0),
    ],
)
def test_split_quality_reason_equals_the_whole_window_check(reject):
    et = EarlyTransform(PRESETS["nice"], 250.0, None)  # 301 samples at 250 Hz
    seen = set()
    for name, x in _cases():
        x = x[:, : et.n_in] if x.shape[1] >= et.n_in else np.pad(x, ((0, 0), (0, et.n_in - x.shape[1])), "edge")
        for k in (et.n_in - et.max_tail, 200, et.n_in - 1):
            prep = et.prepare(0, x[:, :k])
            got, want = split_quality_reason(prep, x[:, k:], reject), quality_reason(x, reject)
            assert got == want, (name, k)
            seen.add(want)
    assert None in seen and "flat" in seen  # the cases do reach different answers


def _setup(n_chans=8, buffer_s=60.0, whitening=None):
    src = InMemorySource([f"E{i}" for i in range(n_chans)], SFREQ, t_start_s=T0, buffer_s=buffer_s)
    src.connect()
    ep = OnlineEpocher(src, PRESETS["nice"], picks=range(n_chans), whitening=whitening)
    return src, ep


def _stream(src, ep, x, chunk):
    out = []
    for i in range(0, x.shape[1], chunk):
        src.push(x[:, i : i + chunk])
        src.acquire()
        out += ep.poll()
    return out


@pytest.mark.parametrize("chunk", [1, 10, 37])
def test_live_epochs_use_the_early_part_and_equal_offline(chunk, monkeypatch):
    w = _whitening(8)
    src, ep = _setup(whitening=w)
    x = (np.random.default_rng(0).standard_normal((8, 4000)) * 1e-5).astype(np.float32)
    onsets = [400, 600, 1234, 2500]
    ep.add_markers([Marker(T0 + i / SFREQ, "1", "1", None) for i in onsets])
    finished = []
    real = ep.early_transform.finish
    monkeypatch.setattr(
        ep.early_transform, "finish", lambda late, **kw: finished.append(late.prep.first) or real(late, **kw)
    )
    epochs = _stream(src, ep, x, chunk)
    assert [e.onset_index for e in epochs] == onsets
    assert finished == [i - 200 for i in onsets]  # every epoch took the split path
    for e in epochs:
        raw = x[:, e.onset_index - 200 : e.onset_index + 1001].astype(np.float64)
        want = apply_whitening(preprocess_epoch(raw, SFREQ, PRESETS["nice"]), w).astype(np.float32)
        np.testing.assert_allclose(e.data, want, rtol=1e-6, atol=1e-7 * np.abs(want).max())


def test_one_big_chunk_takes_the_whole_window_path():
    src, ep = _setup()
    x = (np.random.default_rng(0).standard_normal((8, 3000)) * 1e-5).astype(np.float32)
    ep.add_markers([Marker(T0 + 500 / SFREQ, "1", "1", None)])
    (e,) = _stream(src, ep, x, 3000)
    assert not ep._prepared
    want = preprocess_epoch(x[:, 300:1501].astype(np.float64), SFREQ, PRESETS["nice"]).astype(np.float32)
    np.testing.assert_allclose(e.data, want, rtol=1e-6)


def test_prepared_epoch_whose_window_was_overwritten_is_too_old():
    src, ep = _setup(buffer_s=1.5)  # 1500 samples: one window fits, not two
    x = (np.random.default_rng(0).standard_normal((8, 4000)) * 1e-5).astype(np.float32)
    ep.add_markers([Marker(T0 + 500 / SFREQ, "1", "1", None)])
    assert _stream(src, ep, x[:, :1480], 10) == []
    assert 300 in ep._prepared  # the early part is ready, the tail is not
    src.push(x[:, 1480:2000])  # the tail and 500 more samples: the window's start is overwritten
    src.acquire()
    assert ep.poll() == [] and ep.rejected["too_old"] == 1


def test_flat_channel_in_the_early_part_is_rejected_on_the_split_path():
    src, ep = _setup()
    x = (np.random.default_rng(0).standard_normal((8, 2000)) * 1e-5).astype(np.float32)
    x[3] = 0.0
    ep.add_markers([Marker(T0 + 500 / SFREQ, "1", "1", None)])
    assert _stream(src, ep, x, 10) == []
    assert ep.rejected["flat"] == 1

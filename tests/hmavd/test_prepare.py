"""``hmavd-prepare`` on small ThingsEEG2-raw fixtures, raw readers, and every bad-input error."""

from __future__ import annotations

from pathlib import Path

import mne
import numpy as np
import pytest
import scipy.linalg
from sklearn.utils import shuffle

from hmavd.channels import THINGS63, VISUAL17
from hmavd.cli.prepare import main
from hmavd.data.thingseeg2 import load_split, load_subject
from hmavd.errors import UserError
from hmavd.preprocessing import PRESETS
from hmavd.preprocessing.prepare import PrepareConfig, load_mvnn, prepare_subject, repetition_permutation
from hmavd.preprocessing.raw_io import parse_event_code, read_recording, write_thingseeg2_raw
from hmavd.preprocessing.transforms import epoch_window_samples, mvnn_covariance, preprocess_epoch

SFREQ = 1000.0
SEED = 20200220
N_TRAIN, N_TEST = 4, 3
SHOWS_TRAIN, SHOWS_TEST = 3, 4  # presentations per image and session (more than kept: a subset is chosen)
REPS_TRAIN, REPS_TEST = 2, 3  # kept per image and session
CATCH = 99999


def _raw_order() -> list[str]:
    """A recording order unlike THINGS63 (so the NICE pick must reorder)."""
    rng = np.random.default_rng(11)
    return [THINGS63[i] for i in rng.permutation(len(THINGS63))]


def _session(rng: np.random.Generator, codes: np.ndarray, n_chans: int, sfreq: float = SFREQ):
    """Continuous correlated noise + an image-specific response; onset every 300 ms; events (n, 3)."""
    step = int(0.3 * sfreq)
    lead = int(0.5 * sfreq)
    n = lead + step * len(codes) + int(1.2 * sfreq)
    mix = np.eye(n_chans) + 0.3 * rng.standard_normal((n_chans, n_chans))
    data = mix @ rng.standard_normal((n_chans, n)) * 5e-6  # volts
    data += np.cumsum(rng.standard_normal((n_chans, n)), axis=1) * 2e-7  # slow drift: baseline matters
    onsets = lead + step * np.arange(len(codes))
    for s, c in zip(onsets, codes):
        if c != CATCH:
            pattern = np.sin(np.arange(n_chans) * (c % 7 + 1))[:, None]
            data[:, s + 100 : s + 300] += pattern * 3e-6
    events = np.column_stack([onsets, np.zeros_like(onsets), codes]).astype(np.int64)
    return data, events


def _codes(rng, n_images, shows, n_catch):
    codes = np.concatenate([np.repeat(np.arange(1, n_images + 1), shows), np.full(n_catch, CATCH)])
    return rng.permutation(codes)


def write_fixture(root: Path, n_sessions: int = 2, sfreqs=None, fmt: str = "npy") -> Path:
    """``<root>/raw_eeg/sub-01/ses-0k/raw_eeg_{training,test}.npy`` (or .fif) with 63 ch + stim."""
    rng = np.random.default_rng(0)
    names = _raw_order()
    raw_dir = root / "raw_eeg"
    for ses in range(1, n_sessions + 1):
        sf = (sfreqs or [SFREQ] * n_sessions)[ses - 1]
        for part, n_img, shows in (("training", N_TRAIN, SHOWS_TRAIN), ("test", N_TEST, SHOWS_TEST)):
            data, events = _session(rng, _codes(rng, n_img, shows, 2), len(names), sf)
            path = raw_dir / "sub-01" / f"ses-{ses:02d}" / f"raw_eeg_{part}.npy"
            write_thingseeg2_raw(path, data, names, sf, events)
            if fmt == "fif":
                raw, _ = read_recording(path)
                raw.save(path.with_suffix(".fif"), verbose="error")
                path.unlink()
    return raw_dir


def _args(raw_dir: Path, out: Path, preset: str = "nice", *extra: str) -> list[str]:
    reps = (f"max_reps_training={REPS_TRAIN}", f"max_reps_test={REPS_TEST}")
    return ["--config", f"prepare-{preset}", f"raw_dir={raw_dir}", f"out_dir={out}", *reps, "progress=false", *extra]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("things")
    write_fixture(root)
    return root


@pytest.fixture(scope="module")
def prepared_nice(fixture_root) -> Path:
    out = fixture_root / "prep-nice"
    assert main(_args(fixture_root / "raw_eeg", out)) == 0
    return out


def _direct_session(raw_dir: Path, ses: int, part: str, preset):
    """Direct numpy computation: read the dict, find pulses, cut, preprocess_epoch, group by image chronologically."""
    d = np.load(raw_dir / "sub-01" / f"ses-{ses:02d}" / f"raw_eeg_{part}.npy", allow_pickle=True).item()
    x = d["raw_eeg_data"]
    stim = x[-1]
    onsets = np.flatnonzero(stim)
    codes = stim[onsets].astype(int)
    keep = codes != CATCH
    onsets, codes = onsets[keep], codes[keep]
    chans = preset.select_channels(d["ch_names"])
    idx = [d["ch_names"].index(c) for c in chans]
    first, n = epoch_window_samples(preset.tmin_s, preset.tmax_s, SFREQ)
    cut = np.stack([x[idx, s + first : s + first + n] for s in onsets])  # (E, C, n)
    ep = preprocess_epoch(cut, SFREQ, preset)  # (E, C, T)
    by_image = {int(c): ep[codes == c] for c in np.unique(codes)}  # chronological per image
    return by_image, chans


def test_nice_outputs_equal_direct_computation(fixture_root, prepared_nice):
    raw_dir = fixture_root / "raw_eeg"
    train, test = load_subject(prepared_nice, 1)
    assert train.eeg.shape == (N_TRAIN, 2 * REPS_TRAIN, 63, 250)
    assert test.eeg.shape == (N_TEST, 2 * REPS_TEST, 63, 250)
    assert train.eeg.dtype == np.float32
    assert train.ch_names == THINGS63
    assert len(train.times) == 250 and train.times[0] == 0.0 and abs(train.times[-1] - 0.996) < 1e-9
    preset = PRESETS["nice"]
    mv = load_mvnn(prepared_nice / "sub-01" / "mvnn.npz")
    assert mv["whitening"].shape == (2, 63, 63) and mv["preset"] == "nice" and mv["ch_names"] == list(THINGS63)
    for split, n_img, reps in ((train, N_TRAIN, REPS_TRAIN), (test, N_TEST, REPS_TEST)):
        assert split.provenance.shape == (n_img, 2 * reps, 2)
    for ses in (1, 2):
        tr, _ = _direct_session(raw_dir, ses, "training", preset)
        te, _ = _direct_session(raw_dir, ses, "test", preset)
        # the public code's repetition subset, then MVNN from the training partition only
        sel_tr = {c: shuffle(np.arange(SHOWS_TRAIN), random_state=SEED, n_samples=REPS_TRAIN) for c in tr}
        grouped = np.stack([tr[c][sel_tr[c]] for c in sorted(tr)])  # (N, R, C, T) condition order = image order
        w = np.real(scipy.linalg.fractional_matrix_power(mvnn_covariance(grouped, "nice"), -0.5))
        np.testing.assert_allclose(mv["whitening"][ses - 1], w, rtol=1e-6, atol=1e-6 * np.abs(w).max())
        for split, direct in ((train, tr), (test, te)):
            for i in range(split.n_conditions):
                for r in range(split.n_reps):
                    s, chrono = split.provenance[i, r]
                    if s != ses:
                        continue
                    expected = np.einsum("ct,cd->dt", direct[i + 1][chrono], w)
                    np.testing.assert_allclose(split.eeg[i, r], expected, rtol=2e-4, atol=2e-4 * np.abs(expected).max())
    # provenance reproduces the public order: per-session subset, merged along reps, permuted with the seed
    sub = shuffle(np.arange(SHOWS_TRAIN), random_state=SEED, n_samples=REPS_TRAIN)
    merged = np.concatenate([np.column_stack([np.full(REPS_TRAIN, s), sub]) for s in (1, 2)])
    np.testing.assert_array_equal(train.provenance[0], merged[repetition_permutation(2 * REPS_TRAIN, SEED)])
    # whitened noise is roughly unit variance (unitless), far from volts
    assert 0.3 < float(train.eeg.std()) < 3.0


def test_chronological_order_and_npz_format(fixture_root, prepared_nice, tmp_path):
    out = tmp_path / "chrono"
    rc = main(_args(fixture_root / "raw_eeg", out, "nice", "rep_order=chronological", "format=npz"))
    assert rc == 0
    assert (out / "sub-01" / "preprocessed_eeg_training.npz").exists()
    assert not (out / "sub-01" / "preprocessed_eeg_training.npy").exists()
    train, _ = load_subject(out, 1)
    expected = np.array([[1, 0], [1, 1], [2, 0], [2, 1]])
    for i in range(N_TRAIN):
        np.testing.assert_array_equal(train.provenance[i], expected)
    # the same epochs as the preset order (where both kept them), once the different whitening is undone
    pre, _ = load_subject(prepared_nice, 1)
    w_chrono = load_mvnn(out / "sub-01" / "mvnn.npz")["whitening"]
    w_pre = load_mvnn(prepared_nice / "sub-01" / "mvnn.npz")["whitening"]
    n_shared = 0
    for i in range(N_TRAIN):
        for r in range(pre.n_reps):
            s, c = pre.provenance[i, r]
            j = np.flatnonzero((train.provenance[i, :, 0] == s) & (train.provenance[i, :, 1] == c))
            if len(j):
                a = np.linalg.solve(w_chrono[s - 1].T, train.eeg[i, j[0]].astype(np.float64))
                b = np.linalg.solve(w_pre[s - 1].T, pre.eeg[i, r].astype(np.float64))
                np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
                n_shared += 1
    assert n_shared > 0


def test_gifford_preset(fixture_root, tmp_path):
    out = tmp_path / "gif"
    assert main(_args(fixture_root / "raw_eeg", out, "gifford", "sessions=[1]")) == 0
    train, test = load_subject(out, 1)
    assert train.eeg.shape == (N_TRAIN, 2, 17, 100) and test.eeg.shape == (N_TEST, 3, 17, 100)
    raw_17 = [c for c in _raw_order() if c[0] in "OP"]
    assert list(train.ch_names) == raw_17 and sorted(raw_17) == sorted(VISUAL17)
    assert abs(train.times[0] + 0.2) < 1e-12 and abs(train.times[-1] - 0.79) < 1e-9
    mv = load_mvnn(out / "sub-01" / "mvnn.npz")
    preset = PRESETS["gifford"]
    tr, _ = _direct_session(fixture_root / "raw_eeg", 1, "training", preset)
    te, _ = _direct_session(fixture_root / "raw_eeg", 1, "test", preset)
    g_tr = np.stack([tr[c][shuffle(np.arange(SHOWS_TRAIN), random_state=SEED, n_samples=2)] for c in sorted(tr)])
    g_te = np.stack([te[c][shuffle(np.arange(SHOWS_TEST), random_state=SEED, n_samples=3)] for c in sorted(te)])
    cov = (mvnn_covariance(g_te, "gifford") + mvnn_covariance(g_tr, "gifford")) / 2  # mean of test and training
    np.testing.assert_allclose(mv["covariance"][0], cov, rtol=1e-6, atol=1e-6 * np.abs(cov).max())


def test_fif_sessions_give_the_same_output(tmp_path, prepared_nice):
    raw_dir = write_fixture(tmp_path, fmt="fif")
    assert (raw_dir / "sub-01" / "ses-01" / "raw_eeg_training.fif").exists()
    out = tmp_path / "prep"
    assert main(_args(raw_dir, out)) == 0
    a, _ = load_subject(out, 1)
    b, _ = load_subject(prepared_nice, 1)
    np.testing.assert_allclose(a.eeg, b.eeg, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(a.provenance, b.provenance)


def test_prepare_subject_api_returns_paths(fixture_root, tmp_path):
    reps = {"max_reps_training": 2, "max_reps_test": 3}
    cfg = PrepareConfig(
        raw_dir=str(fixture_root / "raw_eeg"), out_dir=str(tmp_path), sessions=(1,), **reps, progress=False
    )
    paths = prepare_subject(cfg)
    assert set(paths) == {"training", "test", "mvnn", "config"}
    assert all(p.exists() for p in paths.values())
    assert load_split(paths["training"]).eeg.shape == (N_TRAIN, 2, 63, 250)  # one session: 2 reps
    assert "preset: nice" in paths["config"].read_text()


# --------------------------------------------------------------------------- readers


def _events_fixture():
    rng = np.random.default_rng(3)
    names = list(THINGS63[:4])
    data = rng.standard_normal((4, 3000)) * 1e-5
    events = np.array([[300, 0, 16540], [900, 0, 7], [1500, 0, CATCH], [2100, 0, 200]])
    return data, names, events


def _write_brainvision(folder: Path, data, names, events, **kw) -> None:
    """``folder/rec.vhdr`` with the events as ``Stimulus/S<code>`` markers (pybv)."""
    import pybv

    pybv.write_brainvision(
        data=data, sfreq=SFREQ, ch_names=names, fname_base="rec", folder_out=str(folder), events=events[:, [0, 2]], **kw
    )


def test_thingseeg2_fif_brainvision_edf_readers_agree(tmp_path):
    data, names, events = _events_fixture()
    npy = write_thingseeg2_raw(tmp_path / "raw_eeg_test.npy", data, names, SFREQ, events)
    raw, ev = read_recording(npy)
    np.testing.assert_array_equal(ev[:, [0, 2]], events[:, [0, 2]])
    assert raw.ch_names == [*names, "stim"] and raw.get_channel_types()[-1] == "stim"
    np.testing.assert_allclose(raw.get_data()[:4], data)
    # FIF with a stim channel
    raw.save(tmp_path / "rec_raw.fif", verbose="error")
    _, ev_fif = read_recording(tmp_path / "rec_raw.fif")
    np.testing.assert_array_equal(ev_fif, ev)
    # BrainVision via pybv: markers "Stimulus/S16540" must map to 16540 (not MNE's default renumbering)
    _write_brainvision(tmp_path, data, names, events, unit="µV")
    raw_bv, ev_bv = read_recording(tmp_path / "rec.vhdr")
    np.testing.assert_array_equal(ev_bv[:, [0, 2]], events[:, [0, 2]])
    np.testing.assert_allclose(raw_bv.get_data(), data, rtol=1e-6, atol=1e-9)
    # EDF with annotations named by image number
    ann_raw = mne.io.RawArray(data, mne.create_info(names, SFREQ, "eeg"), verbose="error")
    ann_raw.set_annotations(mne.Annotations(events[:, 0] / SFREQ, 0.0, [str(c) for c in events[:, 2]]))
    mne.export.export_raw(tmp_path / "rec.edf", ann_raw, verbose="error")
    _, ev_edf = read_recording(tmp_path / "rec.edf")
    np.testing.assert_array_equal(ev_edf[:, [0, 2]], events[:, [0, 2]])


def _xdf_chunk(tag: int, content: bytes) -> bytes:
    """One XDF chunk: [NumLengthBytes=4][Length][Tag][Content] (XDF 1.0 specification)."""
    import struct

    return b"\x04" + struct.pack("<I", len(content) + 2) + struct.pack("<H", tag) + content


def _xdf_varlen(n: int) -> bytes:
    import struct

    return b"\x04" + struct.pack("<I", n)


def _xdf_header(name: str, kind: str, n_chans: int, srate: float, fmt: str, desc: str = "") -> str:
    fields = f"<name>{name}</name><type>{kind}</type><channel_count>{n_chans}</channel_count>"
    fields += f"<nominal_srate>{srate}</nominal_srate><channel_format>{fmt}</channel_format>"
    return f"<?xml version='1.0'?><info>{fields}{desc}</info>"


def write_xdf(path: Path, data_uv: np.ndarray, names, sfreq: float, t0: float, markers) -> Path:
    """A minimal XDF file: a float32 EEG stream in µV (time stamps from ``t0``) and a string marker stream."""
    import struct

    chans = "".join(f"<channel><label>{n}</label><unit>microvolts</unit></channel>" for n in names)
    eeg_hdr = _xdf_header("eeg", "EEG", len(names), sfreq, "float32", f"<desc><channels>{chans}</channels></desc>")
    mk_hdr = _xdf_header("mk", "Markers", 1, 0, "string")
    out = [b"XDF:", _xdf_chunk(1, b"<?xml version='1.0'?><info><version>1.0</version></info>")]
    out += [
        _xdf_chunk(2, struct.pack("<I", 1) + eeg_hdr.encode()),
        _xdf_chunk(2, struct.pack("<I", 2) + mk_hdr.encode()),
    ]
    body = bytearray()
    for k in range(data_uv.shape[1]):
        body += b"\x08" + struct.pack("<d", t0 + k / sfreq) + data_uv[:, k].astype("<f4").tobytes()
    out.append(_xdf_chunk(3, struct.pack("<I", 1) + _xdf_varlen(data_uv.shape[1]) + bytes(body)))
    body = bytearray()
    for t, text in markers:
        body += b"\x08" + struct.pack("<d", t) + _xdf_varlen(len(text)) + text.encode()
    out.append(_xdf_chunk(3, struct.pack("<I", 2) + _xdf_varlen(len(markers)) + bytes(body)))
    path.write_bytes(b"".join(out))
    return path


def test_xdf_reader_maps_markers_to_nearest_samples_and_converts_units(tmp_path, caplog):
    data, names, events = _events_fixture()
    t0 = 1234.5  # LSL clock: time stamps do not start at 0
    # markers 0.3 ms after the onset sample (nearest = onset), one marker without a number, one after the end
    markers = [(t0 + s / SFREQ + 3e-4, f"Stimulus/S{c}") for s, c in events[:, [0, 2]]]
    markers += [(t0 + 0.05, "New Segment/"), (t0 + 10.0, "Stimulus/S5")]
    path = write_xdf(tmp_path / "rec.xdf", data * 1e6, names, SFREQ, t0, sorted(markers))
    with caplog.at_level("WARNING"):
        raw, ev = read_recording(path)
    np.testing.assert_array_equal(ev[:, [0, 2]], events[:, [0, 2]])
    assert "1 of 5 markers fall outside" in caplog.text
    assert raw.ch_names == [*names, "stim"]
    np.testing.assert_allclose(raw.get_data(picks=names), data, rtol=1e-6, atol=1e-12)  # µV -> V


def test_nearest_samples():
    from hmavd.preprocessing.raw_io import nearest_samples

    ts = 10.0 + np.arange(5) / 100.0  # 10.00 … 10.04
    idx, inside = nearest_samples(ts, np.array([9.9, 9.996, 10.004, 10.016, 10.04, 10.046, 10.2]), 100.0)
    np.testing.assert_array_equal(idx, [0, 0, 0, 2, 4, 4, 4])
    np.testing.assert_array_equal(inside, [False, True, True, True, True, False, False])


def test_brainvision_default_mapping_is_the_pitfall(tmp_path):
    """MNE's default ``events_from_annotations`` does not give 16540 for ``Stimulus/S16540`` (why we parse)."""
    data, names, events = _events_fixture()
    _write_brainvision(tmp_path, data, names, events)
    raw = mne.io.read_raw_brainvision(tmp_path / "rec.vhdr", verbose="error")
    default, _ = mne.events_from_annotations(raw, verbose="error")
    assert 16540 not in default[:, 2]
    _, ours = read_recording(tmp_path / "rec.vhdr")
    assert 16540 in ours[:, 2]


def test_parse_event_code():
    assert parse_event_code("Stimulus/S16540") == 16540
    assert parse_event_code("Stimulus/S  7") == 7
    assert parse_event_code("New Segment/") is None


# --------------------------------------------------------------------------- bad input: exit 2, one line


def _run_err(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.count("\n") == 0 and err.startswith("hmavd-prepare: error:")
    return err


def test_missing_folder_and_files(capsys, tmp_path, fixture_root):
    assert "raw_dir" in _run_err(capsys, _args(tmp_path / "nope", tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    assert "subject" in _run_err(capsys, _args(tmp_path / "empty", tmp_path / "o"))
    (tmp_path / "empty" / "sub-01").mkdir()
    assert "ses-YY" in _run_err(capsys, _args(tmp_path / "empty", tmp_path / "o"))
    (tmp_path / "empty" / "sub-01" / "ses-01").mkdir()
    assert "raw_eeg_training" in _run_err(capsys, _args(tmp_path / "empty", tmp_path / "o"))
    err = _run_err(capsys, _args(fixture_root / "raw_eeg", tmp_path / "o", "nice", "sessions=[3]"))
    assert "sessions" in err
    assert not (tmp_path / "o").exists()  # nothing written on bad input


def test_bad_config_values(capsys, tmp_path):
    assert "unknown config key" in _run_err(capsys, _args(tmp_path, tmp_path, "nice", "bogus=1"))
    assert "preset" in _run_err(capsys, _args(tmp_path, tmp_path, "nice", "preset=xyz"))
    assert "rep_order" in _run_err(capsys, _args(tmp_path, tmp_path, "nice", "rep_order=random"))
    assert "format" in _run_err(capsys, _args(tmp_path, tmp_path, "nice", "format=mat"))
    # gifford's covariance is over repetitions: refused before any file is read
    err = _run_err(capsys, _args(tmp_path / "nope", tmp_path, "gifford", "max_reps_training=1"))
    assert "max_reps_training: 1" in err and "preset=nice" in err


def _one_session(tmp_path: Path, mutate) -> Path:
    """A one-session fixture whose training file is rewritten by ``mutate(dict) -> dict``."""
    rng = np.random.default_rng(5)
    names = _raw_order()
    raw_dir = tmp_path / "raw"
    for part, n_img, shows in (("training", N_TRAIN, SHOWS_TRAIN), ("test", N_TEST, SHOWS_TEST)):
        data, events = _session(rng, _codes(rng, n_img, shows, 0), len(names))
        write_thingseeg2_raw(raw_dir / "sub-01" / "ses-01" / f"raw_eeg_{part}.npy", data, names, SFREQ, events)
    path = raw_dir / "sub-01" / "ses-01" / "raw_eeg_training.npy"
    d = np.load(path, allow_pickle=True).item()
    np.save(path, mutate(d), allow_pickle=True)
    return raw_dir


def _without_stim_pulses(d):
    d["raw_eeg_data"][-1] = 0.0
    return d


def _renamed_channel(d):
    d["ch_names"] = [("Oz_x" if c == "Oz" else c) for c in d["ch_names"]]
    return d


def _wrong_keys(d):
    d["eeg"] = d.pop("raw_eeg_data")
    return d


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [(_without_stim_pulses, "no stimulus events"), (_renamed_channel, "'Oz'"), (_wrong_keys, "lacks keys")],
)
def test_bad_recordings(capsys, tmp_path, mutate, needle):
    raw_dir = _one_session(tmp_path, mutate)
    err = _run_err(capsys, _args(raw_dir, tmp_path / "out"))
    assert needle in err
    assert "ses-01/raw_eeg_training.npy" in err  # names the file
    assert not (tmp_path / "out").exists()


def test_unknown_stim_channel(capsys, fixture_root, tmp_path):
    err = _run_err(capsys, _args(fixture_root / "raw_eeg", tmp_path / "o", "nice", "stim_channel=TRIG"))
    assert "stim_channel: ['TRIG']" in err and "raw_eeg_training.npy" in err


def test_inconsistent_sfreq(capsys, tmp_path):
    raw_dir = write_fixture(tmp_path, sfreqs=[1000.0, 500.0])
    err = _run_err(capsys, _args(raw_dir, tmp_path / "out"))
    assert "500.0 Hz" in err and "1000.0 Hz" in err


def test_too_few_repetitions(capsys, fixture_root, tmp_path):
    err = _run_err(capsys, _args(fixture_root / "raw_eeg", tmp_path / "o", "nice", "max_reps_training=5"))
    assert "max_reps" in err


def test_unknown_recording_suffix_and_missing(tmp_path):
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(UserError, match="unsupported suffix"):
        read_recording(tmp_path / "x.txt")
    with pytest.raises(UserError, match="does not exist"):
        read_recording(tmp_path / "y.fif")


# --------------------------------------------------------------------------- --convert


def test_convert_writes_pickle_free_twins(capsys, prepared_nice, tmp_path):
    from hmavd.data.thingseeg2 import ImageMetadata, load_image_metadata, save_image_metadata

    meta = ImageMetadata(("00001_a",), ("a_01b.jpg",), ("00001_b",), ("b_01s.jpg",))
    save_image_metadata(prepared_nice / "image_metadata.npy", meta)
    assert main(["--convert", str(prepared_nice)]) == 0
    sub = prepared_nice / "sub-01"
    a = load_split(sub / "preprocessed_eeg_training.npz")
    b = load_split(sub / "preprocessed_eeg_training.npy")
    np.testing.assert_array_equal(a.eeg, b.eeg)
    np.testing.assert_array_equal(a.provenance, b.provenance)
    assert a.ch_names == b.ch_names
    with np.load(sub / "preprocessed_eeg_test.npz", allow_pickle=False) as z:  # truly pickle-free
        assert "preprocessed_eeg_data" in z.files
    assert load_image_metadata(prepared_nice / "image_metadata.json") == meta
    (sub / "preprocessed_eeg_training.npz").unlink()  # keep the module fixture as it was
    (sub / "preprocessed_eeg_test.npz").unlink()
    assert "--convert" in _run_err(capsys, ["--convert", str(tmp_path / "none")])
    (tmp_path / "e").mkdir()
    assert "no preprocessed_eeg" in _run_err(capsys, ["--convert", str(tmp_path / "e")])


# --------------------------------------------------------------------------- pure grouping / merging


def test_group_repetitions_public_subset_and_chronological():
    from hmavd.preprocessing.prepare import group_repetitions

    codes = np.array([2, 1, 2, 1, 1, 2, 1])
    images, index, chrono = group_repetitions(codes, 2, "preset", SEED)
    np.testing.assert_array_equal(images, [1, 2])
    occ1 = np.flatnonzero(codes == 1)
    np.testing.assert_array_equal(index[0], shuffle(occ1, random_state=SEED, n_samples=2))
    np.testing.assert_array_equal(occ1[chrono[0]], index[0])
    _, index_c, chrono_c = group_repetitions(codes, 2, "chronological")
    np.testing.assert_array_equal(index_c, [[1, 3], [0, 2]])
    np.testing.assert_array_equal(chrono_c, [[0, 1], [0, 1]])


def test_merge_checks_condition_order():
    from hmavd.preprocessing.prepare import SessionEpochs, merge_test_sessions, merge_training_sessions

    def ses(images, s):
        n = len(images)
        data = np.arange(n * 2 * 3, dtype=float).reshape(n, 2, 1, 3) + 100 * s
        prov = np.stack([np.full((n, 2), s), np.tile([0, 1], (n, 1))], -1)
        return SessionEpochs(data, np.asarray(images), prov)

    # training: images 1..4, each in two of three sessions -> 4 reps, session order
    data, prov = merge_training_sessions([ses([1, 2], 1), ses([3, 4], 2), ses([1, 2, 3, 4], 3)], "chronological")
    assert data.shape == (4, 4, 1, 3)
    np.testing.assert_array_equal(prov[0, :, 0], [1, 1, 3, 3])
    np.testing.assert_array_equal(prov[3, :, 0], [2, 2, 3, 3])
    np.testing.assert_array_equal(data[3, 0], ses([3, 4], 2).data[1, 0])
    with pytest.raises(UserError, match="1…N"):
        merge_training_sessions([ses([1, 3], 1), ses([1, 3], 2)])
    with pytest.raises(UserError, match="same number of repetitions"):
        merge_training_sessions([ses([1, 2], 1), ses([1], 2)])
    with pytest.raises(UserError, match="same test images"):
        merge_test_sessions([ses([1, 2], 1), ses([1, 2, 3], 2)])
    data, prov = merge_test_sessions([ses([1, 2], 1), ses([1, 2], 2)], "preset", SEED)
    perm = repetition_permutation(4, SEED)
    np.testing.assert_array_equal(prov[0, :, 0], np.array([1, 1, 2, 2])[perm])

"""``hmavd.data.thingseeg2`` on small fixtures written in the real ThingsEEG2 file format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hmavd.channels import THINGS63, VISUAL17
from hmavd.data.thingseeg2 import (
    EEGSplit,
    ImageMetadata,
    concept_name,
    load_image_metadata,
    load_pickled_dict,
    load_split,
    load_subject,
    save_image_metadata,
    save_split,
    split_file,
    subject_dir,
    validation_split,
)
from hmavd.errors import UserError

N_TRAIN, R_TRAIN, N_TEST, R_TEST, T = 6, 4, 3, 5, 250


def _times_nice(n: int = 300) -> np.ndarray:
    """NICE saves the 300 uncropped times (-0.2…0.996 s at 250 Hz)."""
    return np.arange(n) / 250.0 - 0.2


def _write_real_format(path: Path, data: np.ndarray, ch_names, times) -> Path:
    """Exactly as the public code writes: np.save of a dict (float64 data, list of names)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, {"preprocessed_eeg_data": data, "ch_names": list(ch_names), "times": times}, allow_pickle=True)
    return path


@pytest.fixture()
def root(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    sub = tmp_path / "preprocessed_eeg" / "sub-01"
    _write_real_format(
        sub / "preprocessed_eeg_training.npy", rng.standard_normal((N_TRAIN, R_TRAIN, 63, T)), THINGS63, _times_nice()
    )
    _write_real_format(
        sub / "preprocessed_eeg_test.npy", rng.standard_normal((N_TEST, R_TEST, 63, T)), THINGS63, _times_nice()
    )
    meta = {
        "train_img_concepts": [f"{i // 2 + 1:05d}_c{i // 2}" for i in range(N_TRAIN)],
        "train_img_files": [f"c{i // 2}_{i % 2:02d}b.jpg" for i in range(N_TRAIN)],
        "test_img_concepts": [f"{i + 1:05d}_t{i}" for i in range(N_TEST)],
        "test_img_files": [f"t{i}_01s.jpg" for i in range(N_TEST)],
    }
    (tmp_path / "image_set").mkdir()
    np.save(tmp_path / "image_set" / "image_metadata.npy", meta, allow_pickle=True)
    return tmp_path


def test_load_real_format_split(root):
    s = load_split(root / "preprocessed_eeg" / "sub-01" / "preprocessed_eeg_training.npy", N_TRAIN, R_TRAIN)
    assert s.eeg.shape == (N_TRAIN, R_TRAIN, 63, T) and s.eeg.dtype == np.float32
    assert s.ch_names == THINGS63
    # 300 uncropped NICE times beside 250 samples: the last 250 (0…0.996 s) are kept
    assert len(s.times) == T and s.times[0] == pytest.approx(0.0) and s.times[-1] == pytest.approx(0.996)
    assert s.sfreq == pytest.approx(250.0)
    assert s.provenance is None
    assert (s.n_conditions, s.n_reps, s.n_chans, s.n_times) == (N_TRAIN, R_TRAIN, 63, T)


def test_load_subject_with_metadata(root):
    meta = load_image_metadata(root / "image_set" / "image_metadata.npy")
    train, test = load_subject(root / "preprocessed_eeg", 1, meta)
    assert train.n_conditions == len(meta.train_img_files) and test.n_conditions == len(meta.test_img_files)
    assert meta.train_concepts == ("00001_c0", "00002_c1", "00003_c2")
    np.testing.assert_array_equal(meta.concept_index("training"), [0, 0, 1, 1, 2, 2])
    np.testing.assert_array_equal(meta.concept_index("test"), [0, 1, 2])


def test_channel_and_time_selection_and_averaging(root):
    s = load_split(root / "preprocessed_eeg" / "sub-01" / "preprocessed_eeg_training.npy")
    v = s.pick_channels("visual17")
    assert v.ch_names == VISUAL17 and v.eeg.shape[2] == 17
    np.testing.assert_array_equal(v.eeg[:, :, 0], s.eeg[:, :, THINGS63.index("P7")])
    picked = s.pick_channels(["Oz", "Fp1"])
    np.testing.assert_array_equal(picked.eeg[:, :, 1], s.eeg[:, :, 0])
    c = s.crop(0.1, 0.5)
    assert c.times[0] == pytest.approx(0.1) and c.times[-1] < 0.5 and c.n_times == 100
    avg = s.average_repetitions()
    np.testing.assert_allclose(avg, s.eeg.astype(np.float64).mean(1), rtol=1e-6, atol=1e-6)
    assert avg.shape == (N_TRAIN, 63, T)
    with pytest.raises(UserError, match="not in the data"):
        s.pick_channels(["Oz", "XYZ"])
    with pytest.raises(UserError, match="selects no sample"):
        s.crop(2.0, 3.0)


#: Channel order of the official 17-channel release (Gifford's regexp pick keeps the recording's order).
OFFICIAL17 = ("Pz", "P3", "P7", "O1", "Oz", "O2", "P4", "P8", "P1", "P5", "PO7", "PO3", "POz", "PO4", "PO8", "P6", "P2")


def test_official_17_channel_100_hz_files(tmp_path):
    """The official release: (N, R, 17, 100) float64, times -0.2…0.79 s at 100 Hz, channels in raw order."""
    rng = np.random.default_rng(2)
    times = np.arange(100) / 100.0 - 0.2
    data = rng.standard_normal((N_TEST, R_TEST, 17, 100))
    p = _write_real_format(tmp_path / "preprocessed_eeg_test.npy", data, OFFICIAL17, times)
    s = load_split(p, expected_conditions=N_TEST)
    assert s.eeg.shape == (N_TEST, R_TEST, 17, 100) and s.sfreq == pytest.approx(100.0)
    assert sorted(s.ch_names) == sorted(VISUAL17) and s.ch_names == OFFICIAL17
    v = s.pick_channels("visual17")  # by name: the paper's order, whatever the file's
    assert v.ch_names == VISUAL17
    for j, name in enumerate(VISUAL17):
        np.testing.assert_array_equal(v.eeg[:, :, j], data[:, :, OFFICIAL17.index(name)].astype(np.float32))
    c = s.crop(0.0, None)
    assert c.n_times == 80 and c.times[0] == pytest.approx(0.0) and c.times[-1] == pytest.approx(0.79)
    np.testing.assert_array_equal(c.eeg, s.eeg[..., 20:])
    with pytest.raises(UserError, match="preprocessed_eeg_test.npy"):  # 63-channel pick on 17-channel data
        s.pick_channels("all63")


def test_generated_concept_lists_follow_thingseeg2_numbering():
    """Generated names (the project ships no real lists; the real ones are tested in test_sim_concepts.py)."""
    from hmavd.data.concepts import test_concepts, train_concepts

    tr, te = train_concepts(), test_concepts()
    assert len(tr) == 1654 and len(te) == 200
    assert [int(c[:5]) for c in tr] == list(range(1, 1655)) and [int(c[:5]) for c in te] == list(range(1, 201))
    assert [c[6:] for c in tr] == sorted(c[6:] for c in tr)  # training folders: plain sorted order
    assert te[0] == "00001_concept_0009" and te[-1] == "00200_concept_1800"
    assert not {c[6:] for c in tr} & {c[6:] for c in te}


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_save_load_round_trip_with_provenance(tmp_path, suffix):
    rng = np.random.default_rng(1)
    prov = np.stack(np.meshgrid(np.arange(3), np.arange(2), indexing="ij"), -1)[None].repeat(2, 0)  # (2, 3, 2, 2)
    split = EEGSplit(
        rng.standard_normal((2, 3, 4, 10)).astype(np.float32), ("a", "b", "c", "d"), np.arange(10) / 100.0,
        prov[:, :, 0, :],
    )  # fmt: skip
    path = save_split(tmp_path / f"preprocessed_eeg_training{suffix}", split)
    assert path.suffix == suffix
    back = load_split(path)
    np.testing.assert_array_equal(back.eeg, split.eeg)
    np.testing.assert_array_equal(back.provenance, split.provenance)
    assert back.ch_names == split.ch_names
    np.testing.assert_array_equal(back.times, split.times)
    assert not list(tmp_path.glob(".*part*"))  # atomic write left no temporary file
    assert split_file(tmp_path, "training") == path.with_suffix(".npz") if suffix == ".npz" else path


def test_npz_twin_is_preferred(root):
    sub = root / "preprocessed_eeg" / "sub-01"
    s = load_split(sub / "preprocessed_eeg_test.npy")
    save_split(sub / "preprocessed_eeg_test.npz", s)
    assert split_file(sub, "test").suffix == ".npz"
    assert split_file(sub, "training").suffix == ".npy"
    with pytest.raises(UserError, match="split"):
        split_file(sub, "validation")


def test_metadata_formats(tmp_path, root):
    meta = load_image_metadata(root / "image_set" / "image_metadata.npy")
    save_image_metadata(tmp_path / "m.json", meta)
    assert json.loads((tmp_path / "m.json").read_text())["test_img_files"][0] == "t0_01s.jpg"
    assert load_image_metadata(tmp_path / "m.json") == meta
    save_image_metadata(tmp_path / "m.npy", meta)
    assert load_image_metadata(tmp_path / "m.npy") == meta
    np.savez(tmp_path / "m.npz", **{k: np.array(v) for k, v in meta.to_dict().items()})
    assert load_image_metadata(tmp_path / "m.npz") == meta
    assert concept_name("00001_aircraft_carrier") == "aircraft carrier"
    assert concept_name("wok") == "wok"


def test_validation_split():
    tr, val = validation_split(100, 20, seed=3)
    assert len(val) == 20 and len(tr) == 80 and not set(tr) & set(val)
    assert sorted(np.concatenate([tr, val]).tolist()) == list(range(100))
    np.testing.assert_array_equal(validation_split(100, 20, seed=3)[1], val)
    assert not np.array_equal(validation_split(100, 20, seed=4)[1], val)
    assert len(validation_split(16540)[1]) == 740
    with pytest.raises(UserError, match="n_val"):
        validation_split(10, 10)


# --------------------------------------------------------------------------- every bad input


def _err(match, fn, *a, **kw):
    with pytest.raises(UserError, match=match) as ei:
        fn(*a, **kw)
    assert "\n" not in str(ei.value)
    return str(ei.value)


def test_bad_eeg_files(tmp_path):
    good = np.zeros((2, 3, 4, 10))
    names = ["a", "b", "c", "d"]
    times = np.arange(10) / 100.0
    msg = _err("does not exist", load_split, tmp_path / "missing.npy")
    assert "missing.npy" in msg
    p = _write_real_format(tmp_path / "ndim.npy", good[0], names, times)
    assert "ndim.npy" in _err(r"expected \(n_conditions, n_reps, n_chans, n_times\)", load_split, p)
    p = _write_real_format(tmp_path / "names.npy", good, names[:3], times)
    _err("3 ch_names for 4 channels", load_split, p)
    p = _write_real_format(tmp_path / "times.npy", good, names, times[:5])
    _err("5 times for 10 samples", load_split, p)
    p = _write_real_format(tmp_path / "ok.npy", good, names, times)
    _err("has 2 conditions, expected 16540", load_split, p, expected_conditions=16540)
    _err("has 3 repetitions, expected 4", load_split, p, expected_reps=4)
    np.save(tmp_path / "keys.npy", {"eeg": good, "ch_names": names}, allow_pickle=True)
    _err("lacks keys", load_split, tmp_path / "keys.npy")
    np.save(tmp_path / "array.npy", good)
    _err("holds a ndarray, expected a dict", load_split, tmp_path / "array.npy")
    (tmp_path / "junk.npy").write_bytes(b"not a numpy file")
    _err("not a readable .npy dict", load_split, tmp_path / "junk.npy")
    np.savez(tmp_path / "keys.npz", eeg=good)
    _err("lacks keys", load_split, tmp_path / "keys.npz")
    _err("does not exist", load_split, tmp_path / "gone.npz")
    (tmp_path / "junk.npz").write_bytes(b"PK not a zip")
    assert "junk.npz" in _err("not a readable .npz", load_split, tmp_path / "junk.npz")
    p = _write_real_format(tmp_path / "dup.npy", good, ["a", "b", "a", "d"], times)
    assert "dup.npy" in _err(r"repeats channel names \['a'\]", load_split, p)
    p = _write_real_format(tmp_path / "order.npy", good, names, times[::-1])
    _err("times do not increase", load_split, p)
    p = _write_real_format(tmp_path / "obj.npy", np.full((2, 3, 4, 10), None), names, times)
    _err("dtype object", load_split, p)
    np.save(tmp_path / "prov.npy", {"preprocessed_eeg_data": good, "ch_names": names, "times": times,
                                    "provenance": np.zeros((2, 2, 2))}, allow_pickle=True)  # fmt: skip
    _err(r"provenance has shape \(2, 2, 2\); expected \(2, 3, 2\)", load_split, tmp_path / "prov.npy")
    s = load_split(tmp_path / "ok.npy")
    msg = _err("not in the data's 4 channels in", s.pick_channels, ["a", "Oz"])
    assert "ok.npy" in msg and "['Oz']" in msg
    assert "ok.npy" in _err("selects no sample", s.crop, 5.0, 6.0)


def test_bad_subject_folders(tmp_path, root):
    _err("subject: 2 has no folder", subject_dir, root / "preprocessed_eeg", 2)
    _err("no sub-XX folders", subject_dir, tmp_path / "nowhere", 1)
    sub = root / "preprocessed_eeg" / "sub-01"
    s = load_split(sub / "preprocessed_eeg_test.npy")
    save_split(sub / "preprocessed_eeg_test.npz", s.pick_channels(list(reversed(THINGS63))))
    _err("channel names differ", load_subject, root / "preprocessed_eeg", 1)
    (sub / "preprocessed_eeg_test.npz").unlink()
    meta = ImageMetadata(("a",) * 5, ("f",) * 5, ("t",) * N_TEST, ("g",) * N_TEST)
    _err("expected 5", load_subject, root / "preprocessed_eeg", 1, meta)
    (sub / "preprocessed_eeg_training.npy").unlink()
    _err("does not exist", load_subject, root / "preprocessed_eeg", 1)


def test_bad_metadata(tmp_path):
    _err("does not exist", load_image_metadata, tmp_path / "image_metadata.npy")
    np.save(tmp_path / "m.npy", {"train_img_concepts": []}, allow_pickle=True)
    _err("lacks keys", load_image_metadata, tmp_path / "m.npy")
    (tmp_path / "m.json").write_text(json.dumps({"train_img_concepts": []}))
    _err("lacks keys", load_image_metadata, tmp_path / "m.json")
    bad = {"train_img_concepts": ["a", "b"], "train_img_files": ["x"], "test_img_concepts": [], "test_img_files": []}
    np.save(tmp_path / "len.npy", bad, allow_pickle=True)
    _err("2 train concepts but 1 train files", load_image_metadata, tmp_path / "len.npy")
    (tmp_path / "bad.json").write_text("{not json")
    assert "bad.json" in _err("not readable JSON", load_image_metadata, tmp_path / "bad.json")


def test_load_pickled_dict_names_file_and_keys(tmp_path):
    np.save(tmp_path / "d.npy", {"a": 1}, allow_pickle=True)
    assert load_pickled_dict(tmp_path / "d.npy", ["a"], "thing")["a"] == 1
    msg = _err("thing", load_pickled_dict, tmp_path / "d.npy", ["a", "b"], "thing")
    assert "['b']" in msg and "d.npy" in msg

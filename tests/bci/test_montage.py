"""Montage matching: case, 10-20 aliases, non-EEG channels, missing channels refused or interpolated."""

import mne
import numpy as np
import pytest
from bci_testkit import CH_NAMES, CONCEPTS, N_TIMES, PRESET, SFREQ_IN, make_recording, offline_epochs, tiny_model

from bci.decoder import Decoder
from bci.engine import LiveEngine
from bci.live_config import LiveConfig
from bci.markers import InMemoryMarkers
from bci.montage import interpolation_matrix, is_non_eeg, match_montage, normalize_label, standard_montage
from bci.sources import InMemorySource, StreamDescription
from bci.stream_setup import plan_input
from hmavd.channels import THINGS63
from hmavd.errors import UserError


def test_labels_normalized_and_aliases():
    assert [normalize_label(x) for x in ["EEG Fp1-REF", "FCz", "Fp1-A1", "EEG:O1", " CZ "]] == [
        "fp1",
        "fcz",
        "fp1",
        "o1",
        "cz",
    ]
    m = match_montage(["t3", "T4", "T5", "t6", "FP1"], ["T7", "T8", "P7", "P8", "Fp1"], "amp")
    assert m.picks == (0, 1, 2, 3, 4) and not m.missing
    assert ("t3", "T7") in m.renamed and ("FP1", "Fp1") in m.renamed


@pytest.mark.parametrize(
    "name",
    [
        "Right AUX",
        "AUX1",
        "EOG",
        "HEOG",
        "ECG",
        "EMG2",
        "Trigger",
        "STI 014",
        "Status",
        "sample_index",
        "Counter",
        "x_acc",
        "ACC_X",
        "TRIG",
    ],
)
def test_non_eeg_names(name):
    assert is_non_eeg(name)


def test_all_things63_are_eeg_and_types_win():
    assert not any(is_non_eeg(c) for c in THINGS63)
    assert is_non_eeg("Fp1", "EOG") and is_non_eeg("O1", "AUX") and not is_non_eeg("O1", "EEG")
    assert is_non_eeg("Right AUX", "EEG")  # muse-lsl types every channel EEG: the name still counts


def test_non_eeg_channel_never_stands_in():
    # a channel typed AUX but labelled like a model channel is not used
    with pytest.raises(UserError, match=r"lacks 1 of the model's 2: \['Oz'\]"):
        match_montage(["O1", "Oz"], ["O1", "Oz"], "amp", ch_types=["EEG", "AUX"])


def test_missing_refused_in_one_line_or_allowed():
    names = [c for c in THINGS63 if c not in ("Oz", "T7")]
    with pytest.raises(UserError) as err:
        match_montage(names, THINGS63, "amp")
    msg = str(err.value)
    assert "\n" not in msg and "['T7', 'Oz']" in msg and "interpolate_missing=2" in msg
    with pytest.raises(UserError, match="lacks 2"):
        match_montage(names, THINGS63, "amp", interpolate_missing=1)
    m = match_montage(names, THINGS63, "amp", interpolate_missing=2)
    assert m.missing == ("T7", "Oz") and len(m.picks) == 61


def test_unnamed_channels_positional():
    m = match_montage(["Ch1", "Ch2", "Ch3"], ["O1", "Oz", "O2"], "amp")
    assert m.picks == (0, 1, 2)
    with pytest.raises(UserError, match="3 unnamed channels, the model needs 4"):
        match_montage(["Ch1", "Ch2", "Ch3"], ["O1", "Oz", "O2", "Pz"], "amp")


def test_interpolation_equals_mne_interpolate_bads():
    """The once-computed matrix applied to data == MNE's interpolate_bads on the same data."""
    model = ["Fp1", "Fz", "C3", "Cz", "C4", "Pz", "O1", "Oz", "O2", "P3", "P4", "T7", "T8"]
    stream = [c for c in model if c not in ("Cz", "Oz")][::-1]  # another order, two missing
    m = match_montage(stream, model, "amp", interpolate_missing=2)
    mat = interpolation_matrix(model, m)  # (13, 11)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((len(stream), 50)) * 1e-5
    ours = mat @ x[list(m.picks)]
    full = np.zeros((len(model), 50))
    full[list(m.present)] = x[list(m.picks)]
    info = mne.create_info(model, 250.0, "eeg")
    info.set_montage(standard_montage(), verbose="error")
    info["bads"] = ["Cz", "Oz"]
    raw = mne.io.RawArray(full, info, verbose="error").interpolate_bads(verbose="error")
    np.testing.assert_allclose(ours, raw.get_data(), rtol=1e-6, atol=1e-12)
    keep = [model.index(c) for c in model if c not in ("Cz", "Oz")]
    np.testing.assert_allclose(ours[keep], full[keep])


def test_plan_combines_units_and_interpolation():
    model = ["Fp1", "Fz", "C3", "Cz", "C4", "Pz", "O1", "O2"]
    names = ("FP1", "fz", "C3", "C4", "Pz", "O1", "O2", "Right AUX")
    desc = StreamDescription("amp", names, 500.0, ch_units=("microvolts",) * 8, ch_types=("EEG",) * 7 + ("AUX",))
    plan = plan_input(desc, model, "V", interpolate_missing=1)
    assert plan.units_known and plan.montage.missing == ("Cz",)
    x = np.random.default_rng(2).standard_normal((len(plan.picks), 20)) * 10.0  # µV
    out = plan.apply(x)
    assert out.shape == (8, 20)
    np.testing.assert_allclose(out[model.index("O1")], x[plan.picks.index(names.index("O1"))] * 1e-6)
    assert any("interpolated 1" in n and "Cz" in n for n in plan.notes)
    assert any("Right AUX" in n for n in plan.notes) and any("converted" in n for n in plan.notes)


def test_engine_interpolates_a_missing_channel_like_mne(tmp_path):
    """Stream without Oz, interpolate_missing=1: online epochs == hmavd-prepare epochs of the MNE-interpolated file."""
    path, eeg, events = make_recording(tmp_path / "rec_raw.fif", duration_s=5.0)
    raw = mne.io.read_raw_fif(path, preload=True, verbose="error")
    raw.set_montage(standard_montage(), on_missing="ignore", verbose="error")
    raw.info["bads"] = ["Oz"]
    raw.interpolate_bads(reset_bads=True, verbose="error")
    raw.save(tmp_path / "interp_raw.fif", verbose="error")
    off, _ = offline_epochs(tmp_path / "interp_raw.fif")
    stream = ["O2", "o1", "PZ", "Right AUX"]  # Oz missing, other order and case, an AUX channel
    data = np.vstack([eeg[2], eeg[0], eeg[3], np.zeros(eeg.shape[1])]) * 1e6  # µV
    dec = Decoder.from_model(
        tiny_model(), np.zeros((len(CONCEPTS), 16), np.float32), CONCEPTS, 4, N_TIMES, CH_NAMES, device="cpu"
    )
    src = InMemorySource(stream, SFREQ_IN, ch_units=["uV"] * 4, ch_types=["EEG", "EEG", "EEG", "AUX"])
    marks = InMemoryMarkers()
    eng = LiveEngine(
        LiveConfig(interpolate_missing=1, status_interval_s=0.0),
        source=src,
        markers=marks,
        decoder=dec,
        preset=PRESET,
        whitening=None,
    )
    eng.epoch_log = []
    msg = eng.connect()
    assert any("interpolated 1" in n and "Oz" in n for n in msg["notes"])
    for s, _, c in events:
        marks.push(s / SFREQ_IN, int(c))
    for a in range(0, data.shape[1], 40):
        src.push(data[:, a : a + 40])
        eng.acquire()
    online = np.stack([e.data for e in eng.epoch_log])
    assert online.shape == off.shape
    np.testing.assert_allclose(online, off, rtol=1e-4, atol=1e-4 * np.abs(off).max())
    with pytest.raises(UserError, match=r"lacks 1 of the model's 4: \['Oz'\]; interpolate_missing=1"):
        LiveEngine(
            LiveConfig(), source=InMemorySource(stream, SFREQ_IN), markers=InMemoryMarkers(), decoder=dec, preset=PRESET
        ).connect()

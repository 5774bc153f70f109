"""The virtual amplifier: the simulator's forward model answered live, pure parts and the command on real LSL."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from bci.markers import InMemoryMarkers
from bci.virtual_amp import AmpSettings, VirtualAmp, montage_names
from bci.virtual_subject import (
    ACTICAP64,
    AR1Noise,
    PendingResponse,
    image_response,
    load_virtual_subject,
    model_at_rate,
    parse_code,
    render_chunk,
)
from hmavd.channels import THINGS63
from hmavd.errors import UserError
from hmavd.sim_forward import forward_model_path
from hmavd.simulate import noise_mixing, render_signal
from hmavd.simulate_config import SimulateConfig
from hmavd.simulate_io import simulate_dataset


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    cfg = SimulateConfig(
        n_train_concepts=12,
        n_train_images_per_concept=1,
        n_test_concepts=6,
        n_sessions=1,
        test_reps_per_session=2,
        write_raw=False,
        write_replay=False,
        progress=False,
    )
    simulate_dataset(cfg, out)
    return out


def manual_amp(subject, **settings):
    markers = InMemoryMarkers()
    amp = VirtualAmp(subject, AmpSettings(**settings), markers=markers, keep_record=True, clock=lambda: 50.0)
    amp.connect()
    return amp, markers


def test_acticap64_is_the_things63_channels_plus_fz():
    assert len(ACTICAP64) == len(set(ACTICAP64)) == 64
    assert set(ACTICAP64) - set(THINGS63) == {"Fz"} and set(THINGS63) <= set(ACTICAP64)
    assert montage_names("subject", THINGS63) == THINGS63
    with pytest.raises(UserError, match="montage: 'O1,O2'"):
        montage_names("O1,O2", THINGS63)


def test_forward_model_written_and_checked(sim, tmp_path):
    subject = load_virtual_subject(sim)
    assert subject.ch_names == THINGS63 and subject.latents["test"].shape[0] == 6
    assert subject.latents["training"].shape == (12, subject.model.patterns.shape[1])
    with pytest.raises(UserError, match="subject: 2 is not simulated"):
        load_virtual_subject(sim, 2)
    # a forward model that does not reproduce simulation.json's gain is refused
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(sim, bad)
    with np.load(forward_model_path(bad, 1)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["latents_test"] = arrays["latents_test"] * 2
    np.savez(forward_model_path(bad, 1), **arrays)
    with pytest.raises(UserError, match="does not reproduce its signal gain"):
        load_virtual_subject(bad)
    with pytest.raises(UserError, match="holds no simulation.json"):
        load_virtual_subject(tmp_path / "nowhere")


def test_live_responses_equal_the_simulators_render(sim):
    """Markers at arbitrary samples, answered chunk by chunk == render_signal of the whole recording."""
    subject = load_virtual_subject(sim)
    amp, markers = manual_amp(subject, unit="volts", montage="subject", chunk_ms=7.0)
    plan = [(120, "3"), (321, "Stimulus/S  6"), (500, "block:training"), (555, "12"), (700, "99999"), (800, "77")]
    for sample, code in plan:
        markers.push(amp.time_of(sample), code)
    while amp.n_written < 2000:
        amp.acquire()
    assert [(o.sample, o.partition, o.image) for o in amp.onsets] == [
        (120, "test", 3),
        (321, "test", 6),
        (555, "training", 12),
        (700, "training", 99999),
    ]
    assert amp.n_unknown == 1 and amp.lost_samples == 0  # image 77 does not exist
    signal = amp.get_data(signal=True)  # (C, n) volts
    lat = np.stack([subject.latents["test"][2], subject.latents["test"][5], subject.latents["training"][11]])
    ref = render_signal(
        signal.shape[1], np.array([120, 321, 555]), lat, subject.model, subject.gain_v, subject.erp_gain_v
    )
    target = amp.get_data(signal=True)[:, 700:] - ref[:, 700:]  # the target's random-latent response
    assert np.abs(target).max() > 0.1 * np.abs(ref).max()
    np.testing.assert_allclose(signal[:, :700], ref[:, :700], atol=1e-6 * np.abs(ref).max())
    data = amp.get_data()  # (C, n) volts streamed = noise + signal
    assert data.shape == (63, amp.n_written)
    noise_uv = (data - signal).std(axis=1) * 1e6
    np.testing.assert_allclose(noise_uv, subject.noise_uv, rtol=0.6)


def test_late_marker_loses_only_what_was_pushed(sim):
    subject = load_virtual_subject(sim)
    amp, markers = manual_amp(subject, unit="volts", montage="subject", chunk_ms=10.0)
    for _ in range(30):
        amp.acquire()  # 300 samples out
    onset = amp.add_marker(amp.time_of(150), "2")  # its window starts at 250: 50 samples already gone
    assert onset.sample == 150 and onset.lost == 50 and amp.lost_samples == 50
    while amp.n_written < 1000:
        amp.acquire()
    ref = render_signal(
        1000, np.array([150]), subject.latents["test"][1:2], subject.model, subject.gain_v, subject.erp_gain_v
    )
    sig = amp.get_data(signal=True)
    np.testing.assert_allclose(sig[:, 300:], ref[:, 300:], atol=1e-6 * np.abs(ref).max())
    assert not sig[:, :300].any()


def test_rates_units_and_noise(sim):
    subject = load_virtual_subject(sim)
    half = model_at_rate(subject, 500.0)
    assert half.model.window_offset == subject.model.window_offset // 2
    np.testing.assert_array_equal(half.model.waveforms, subject.model.waveforms[:, ::2])
    np.testing.assert_allclose(
        image_response(half, subject.latents["test"][0]), image_response(subject, subject.latents["test"][0])[:, ::2]
    )
    amp, markers = manual_amp(subject, sfreq=500.0, unit="microvolts", sample_index=True)
    markers.push(amp.time_of(100), "1")
    while amp.n_written < 20000:
        amp.acquire()
    assert amp.onsets[0].sample == 100 and amp.ch_names == (*ACTICAP64, "sample_index")
    data = amp.get_data()
    np.testing.assert_array_equal(data[-1], np.arange(20000))
    std = data[:-1, 2000:].std(axis=1)  # µV, after the response
    np.testing.assert_allclose(std, subject.noise_uv, rtol=0.35)  # AR(1) at 0.95/ms: few independent samples
    # the AR(1) correlation per second is the simulator's at any rate
    rng = np.random.default_rng(0)
    mix = noise_mixing(["O1", "O2"])
    lag = {}
    for fs in (500.0, 1000.0):
        x = AR1Noise(rng, mix, 0.95, 1.0, fs).next(400_000)[0]
        k = int(0.01 * fs)  # 10 ms
        lag[fs] = np.corrcoef(x[:-k], x[k:])[0, 1]
    assert abs(lag[500.0] - 0.95**10) < 0.03 and abs(lag[1000.0] - 0.95**10) < 0.03


def test_pure_helpers():
    assert parse_code("block:training") == ("block", 0)
    assert parse_code("Stimulus/S 17") == ("image", 17) and parse_code("go") == ("unknown", None)
    p = [PendingResponse(5, np.ones((2, 4))), PendingResponse(7, 2 * np.ones((2, 4)))]
    out = np.concatenate([render_chunk(p, a, a + 3, 2) for a in range(0, 15, 3)], axis=1)
    np.testing.assert_array_equal(out[0], [0, 0, 0, 0, 0, 1, 1, 3, 3, 2, 2, 0, 0, 0, 0])
    with pytest.raises(UserError, match="unit: 'furlongs'"):
        AmpSettings(unit="furlongs").validate()


def _cmd(*args):
    exe = Path(sys.executable).with_name("hmavd-virtual-amp")
    if exe.exists():
        return [str(exe), *args]
    return [
        sys.executable,
        "-c",
        "import sys; from bci.cli_virtual_amp import main; sys.exit(main(sys.argv[1:]))",
        *args,
    ]


def _channel_labels_and_units(info) -> tuple[list[str], list[str]]:
    ch = info.desc().child("channels").child("channel")
    labels, units = [], []
    while not ch.empty():
        labels.append(ch.child_value("label"))
        units.append(ch.child_value("unit"))
        ch = ch.next_sibling()
    return labels, units


def _pull_until(inlet, chunks: list, stamps: list, done, timeout_s: float) -> None:
    """Pull chunks into ``chunks`` / ``stamps`` until ``done()`` or ``timeout_s`` passes."""
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end and not done():
        d, ts = inlet.pull_chunk(timeout=0.2)
        if ts:
            chunks.append(np.asarray(d))
            stamps += ts


@pytest.mark.lsl
def test_command_streams_labelled_microvolts_and_answers_markers(sim, tmp_path):
    """The command on real LSL. Every wait is for a condition, with generous timeouts (a loaded machine); the
    command runs until interrupted as with Ctrl-C (``--duration`` only caps it should the test die)."""
    import signal

    import pylsl

    tag = uuid.uuid4().hex[:8]
    eeg, mk = f"test-vamp-{tag}", f"test-vamp-markers-{tag}"
    outlet = pylsl.StreamOutlet(pylsl.StreamInfo(mk, "Markers", 1, 0, pylsl.cf_string, mk))
    args = ("--subject-dir", str(sim), "--eeg-stream", eeg, "--marker-stream", mk, "--duration", "300")
    proc = subprocess.Popen(
        _cmd(*args, "--out-dir", str(tmp_path / "amp"), "sample_index=true"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    chunks, stamps = [], []
    try:
        found = pylsl.resolve_byprop("name", eeg, 1, 60.0)
        assert found, "the amplifier's stream did not appear"
        inlet = pylsl.StreamInlet(found[0], max_buflen=360)
        inlet.open_stream(timeout=30.0)  # the amplifier answers markers once its EEG has a reader
        info = inlet.info()
        labels, units = _channel_labels_and_units(info)
        assert labels == [*ACTICAP64, "sample_index"] and set(units[:-1]) == {"microvolts"}
        assert info.nominal_srate() == 1000.0 and info.channel_format() == pylsl.cf_float32
        assert outlet.wait_for_consumers(60.0)  # the amplifier's marker inlet is open
        _pull_until(inlet, chunks, stamps, lambda: len(stamps) >= 500, 60.0)  # streaming for 0.5 s
        t_marker = pylsl.local_clock()
        outlet.push_sample(["4"], t_marker)
        past_response = lambda: bool(stamps) and stamps[-1] > t_marker + 1.5  # noqa: E731
        _pull_until(inlet, chunks, stamps, past_response, 60.0)
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the command stops, then writes onsets.tsv and its summary
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    data, stamps = np.concatenate(chunks), np.asarray(stamps)
    index = data[:, -1]
    np.testing.assert_array_equal(np.diff(index), 1)  # no sample dropped or duplicated
    np.testing.assert_allclose(np.diff(stamps), 1e-3, atol=1e-6)  # stamped on the nominal grid
    assert 2.0 < data[:, :-1].std() < 50.0  # µV, not volts
    rows = (tmp_path / "amp" / "onsets.tsv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split("\t")[0] == "4"
    sample = int(rows[1].split("\t")[2])
    k = int(np.searchsorted(index, sample))
    assert index[k] == sample and abs(stamps[k] - t_marker) <= 0.5e-3 + 1e-6  # onset = the marker's sample
    assert "answered 1 markers" in out


def test_command_bad_input_and_print_config(sim):
    from bci.cli_virtual_amp import main

    assert main(["--subject-dir", str(sim), "--print-config"]) == 0
    assert main(["--subject-dir", str(sim), "sfreq=20"]) == 2
    assert main(["--subject-dir", str(sim), "bogus=1"]) == 2
    assert main(["--subject-dir", str(sim / "nope"), "--duration", "0.1"]) == 2


def test_packaged_config_equals_defaults():
    from bci.cli_virtual_amp import VirtualAmpConfig
    from hmavd.config import load_config

    assert load_config(VirtualAmpConfig, "virtual-amp") == VirtualAmpConfig()


def test_display_delay_and_photodiode(sim):
    """A slow simulated screen: responses and the Photo channel start display_delay_s after each marker."""
    from bci.present import photodiode_delays

    subject = load_virtual_subject(sim)
    amp, markers = manual_amp(subject, unit="microvolts", montage="subject", display_delay_s=0.031, photodiode=True)
    onsets = [300, 500, 700, 1300]
    for s in onsets:
        markers.push(amp.time_of(s), "5")
    while amp.n_written < 3000:
        amp.acquire()
    assert amp.ch_names[-1] == "Photo" and [(o.sample, o.shown) for o in amp.onsets] == [(s, s + 31) for s in onsets]
    photo = amp.get_data()[-1]
    np.testing.assert_array_equal(photodiode_delays(photo, onsets, amp.sfreq), 0.031)
    assert photo.sum() == 4 * 100
    ref = render_signal(
        3000,
        np.array(onsets) + 31,
        np.repeat(subject.latents["test"][4:5], 4, axis=0),
        subject.model,
        subject.gain_v,
        subject.erp_gain_v,
    )
    np.testing.assert_allclose(amp.get_data(signal=True), ref, atol=1e-6 * np.abs(ref).max())


def test_other_rates_interpolate_the_waveforms(sim):
    subject = load_virtual_subject(sim)
    z = subject.latents["test"][2]
    full = image_response(subject, z)  # (C, L) at 1000 Hz from the window's first sample
    at512 = model_at_rate(subject, 512.0)
    resp = image_response(at512, z)
    t_new = at512.model.window_offset / 512.0 + np.arange(resp.shape[1]) / 512.0
    t_src = subject.model.window_offset / 1000.0 + np.arange(full.shape[1]) / 1000.0
    ref = np.stack([np.interp(t_new, t_src, row) for row in full])
    np.testing.assert_allclose(resp, ref, atol=1e-9 * np.abs(full).max())
    assert at512.model.window_offset == 52 and abs(t_new[-1] - t_src[-1]) < 1 / 512

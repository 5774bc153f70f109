"""hmavd-analyze: the pure pieces on hand-made inputs, then every subcommand end to end on a tiny
simulated subject whose signal sits in a known time window."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hmavd.analysis import gradients as grad_mod
from hmavd.analysis import regions as reg_mod
from hmavd.analysis import sweeps
from hmavd.analysis import time_windows as tw
from hmavd.analysis import topomaps as topo
from hmavd.analysis.common import read_csv
from hmavd.channels import REGIONS, THINGS63
from hmavd.cli.analyze import main
from hmavd.errors import UserError

# ---------------------------------------------------------------------------------------- pure


def test_window_specs_three_families():
    ws = tw.window_specs(0.0, 1.0, step_s=0.1, width_s=0.1)
    fwd = [w for w in ws if w.kind == "forward"]
    bwd = [w for w in ws if w.kind == "backward"]
    sld = [w for w in ws if w.kind == "sliding"]
    assert len(fwd) == len(bwd) == len(sld) == 10
    assert all(w.tmin_s == 0.0 for w in fwd) and [w.tmax_s for w in fwd][:3] == [0.1, 0.2, 0.3]
    assert fwd[-1].tmax_s == 1.0 and bwd[0].tmin_s == 0.0 and bwd[-1].tmin_s == 0.9
    assert all(w.tmax_s == 1.0 for w in bwd)
    assert [(w.tmin_s, w.tmax_s) for w in sld[:2]] == [(0.0, 0.1), (0.1, 0.2)] and sld[-1].tmax_s == 1.0
    assert sld[1].name == "sliding_100-200ms"
    # stride 0.1 with 0.3 s windows over 0.8 s: 6 windows, the last ends at 0.8
    s2 = tw.window_specs(0.0, 0.8, 0.1, 0.3, kinds=("sliding",))
    assert len(s2) == 6 and s2[-1].tmax_s == pytest.approx(0.8)
    with pytest.raises(UserError, match="window_kinds"):
        tw.window_specs(0, 1, kinds=("diagonal",))
    with pytest.raises(UserError, match="empty"):
        tw.window_specs(0.5, 0.5)


def test_informative_span_uses_chance_of_the_metric():
    rows = [
        {"kind": "sliding", "tmin_s": a / 10, "tmax_s": a / 10 + 0.1, "top1": 0.0, "top5": v}
        for a, v in enumerate([0.1, 0.3, 0.5, 0.15, 0.26])
    ]
    assert tw.informative_span(rows, 1 / 40) == (0.1, 0.5)  # top-5 chance 12.5 %: > 25 % at 0.1-0.3 and 0.4-0.5
    assert tw.informative_span(rows, 1 / 20) is None  # top-5 chance 25 %: nothing beats 50 %
    assert tw.informative_span(rows, None) is None


def test_sweep_paper_reference_parsing():
    from hmavd.analysis.common import AnalyzeConfig

    cfg = AnalyzeConfig(sweep_paper=("16/8=15.8/44.2", "0.7 = 15.8/44.2"))
    assert cfg.paper_reference() == {"16/8": (15.8, 44.2), "0.7": (15.8, 44.2)}
    for bad in ("0.7", "0.7=15.8", "=1/2", "0.7=a/b"):
        with pytest.raises(UserError, match="sweep_paper"):
            AnalyzeConfig(sweep_paper=(bad,)).validate()
    rows = sweeps.run_sweep(
        lambda name, ov: {"top1": 0.5, "top5": 0.9},
        ["mcdb_gamma=0.7", "mcdb_gamma=0.2"],
        paper=cfg.paper_reference() | {"0.2": (1.0, 2.0)},
        progress=False,
    )
    assert [(r["paper_top1"], r["paper_top5"]) for r in rows] == [(0.158, 0.442), (0.01, 0.02)]
    rows = sweeps.run_sweep(lambda name, ov: {"top1": 0.5, "top5": 0.9}, ["mcdb_gamma=0.3"], progress=False)
    assert rows[0]["paper_top1"] == "" and "Paper" not in sweeps.paper_table(rows)


def test_best_window_picks_highest_of_kind():
    rows = [
        {"kind": "sliding", "tmin_s": 0.0, "tmax_s": 0.1, "top1": 0.1, "top5": 0.2},
        {"kind": "sliding", "tmin_s": 0.1, "tmax_s": 0.2, "top1": 0.3, "top5": 0.6},
        {"kind": "forward", "tmin_s": 0.0, "tmax_s": 0.2, "top1": 0.9, "top5": 0.9},
    ]
    assert tw.best_window(rows)["tmin_s"] == 0.1
    assert tw.best_window(rows, "forward")["tmax_s"] == 0.2


def test_region_conditions_and_drops():
    conds = reg_mod.region_conditions(["occipital", "frontal"], available=THINGS63)
    assert [c["condition"] for c in conds] == ["all", "-occipital", "-frontal"]
    assert conds[1]["n_removed"] == len(REGIONS["occipital"])
    with pytest.raises(UserError, match="regions"):
        reg_mod.region_conditions(["cerebellum"])
    rows = reg_mod.accuracy_drops(
        [
            {"condition": "all", "removed": "", "top1": 0.15, "top5": 0.40},
            {"condition": "-occipital", "removed": "occipital", "top1": 0.10, "top5": 0.30},
        ]
    )
    assert rows[0]["drop_top1"] == 0 and rows[1]["drop_top1"] == pytest.approx(5.0)
    assert rows[1]["drop_top5"] == pytest.approx(10.0)


def test_every_channel_belongs_to_one_region():
    seen = [c for chans in REGIONS.values() for c in chans]
    assert sorted(seen) == sorted(THINGS63)


def test_sweep_grid_parsing_and_paper_table():
    assert sweeps.parse_grid_entry("txt_reduction=16;img_reduction=8") == {"txt_reduction": 16, "img_reduction": 8}
    assert sweeps.entry_label({"txt_reduction": 16, "img_reduction": 8}) == "16/8"
    with pytest.raises(UserError):
        sweeps.parse_grid_entry(" ; ")
    rows = [{"label": "0.1", "top1": 0.142, "top5": 0.43}, {"label": "0.7", "top1": 0.158, "top5": 0.442}]
    lines = sweeps.paper_table(rows, "Ratio γ").splitlines()
    assert lines[0] == "| Ratio γ | 0.1 | 0.7 |"
    assert lines[2] == "| Top-1 | 14.2 | 15.8 |" and lines[3] == "| Top-5 | 43.0 | 44.2 |"


def test_gradient_epoch_means_and_torn_log(tmp_path):
    recs = [
        {"type": "step", "epoch": 1, "step": 1, "grad_norm/eeg": 1.0, "grad_norm/img": 2.0, "grad_norm/text": 4.0},
        {"type": "step", "epoch": 1, "step": 2, "grad_norm/eeg": 3.0, "grad_norm/img": 2.0, "grad_norm/text": 6.0},
        {"type": "epoch", "epoch": 1, "val_loss": 3.2},
        {"type": "step", "epoch": 2, "step": 3, "grad_norm/eeg": 5.0, "grad_norm/img": 1.0, "kappa/text": 0.5},
    ]
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "st')
    steps = grad_mod.step_records(grad_mod.read_metrics(run))
    assert len(steps) == 3
    ep = grad_mod.epoch_means(steps)
    assert [r["epoch"] for r in ep] == [1, 2] and [r["n_steps"] for r in ep] == [2, 1]
    assert ep[0]["grad_norm/eeg"] == 2.0 and ep[0]["grad_norm/text"] == 5.0
    assert np.isnan(ep[1]["grad_norm/text"]) and ep[1]["kappa/text"] == 0.5
    with pytest.raises(UserError, match="metrics.jsonl"):
        grad_mod.read_metrics(tmp_path / "nowhere")


def test_gradient_x_input_of_linear_encoder_is_analytic():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4 * 6, generator=g)  # (D, C*T)
    x = torch.randn(5, 4, 6, generator=g)  # (N, C, T)
    t = torch.randn(5, 3, generator=g)  # (N, D)
    sal = topo.gradient_x_input(lambda e: e.flatten(1) @ w.T, x, t, batch_size=2)  # batches of 2, 2, 1
    expected = ((t @ w).reshape(5, 4, 6) * x).abs().mean(0)  # ds_n/dx_n = w^T t_n
    np.testing.assert_allclose(sal, expected.double().numpy(), rtol=1e-5, atol=1e-6)


def test_window_average_bins_by_time():
    times = np.arange(-0.2, 0.8, 0.01)  # 100 Hz, -0.2 … 0.79 s (the Gifford preset's epoch)
    vals = np.tile(times, (2, 1))  # (C=2, T)
    means, wins = topo.window_average(vals, times, 0.1)
    assert wins[0] == (-0.2, -0.1) and wins[-1] == (0.7, 0.8) and len(wins) == 10
    np.testing.assert_allclose(means[0], [a + 0.045 for a, _ in wins], atol=1e-9)
    with pytest.raises(UserError, match="topo_window_s"):
        topo.window_average(vals, times, 5.0)


# ------------------------------------------------------------------------------ end to end

SFREQ, N_TIMES = 100.0, 80  # 0 … 0.79 s
SIGNAL_S = (0.2, 0.4)
CHANS = ("Fp1", "Fz", "C3", "Cz", "C4", "T7", "T8", "P3", "Pz", "P4", "PO7", "POz", "PO8", "O1", "Oz", "O2")


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    """A tiny simulated subject: EEG = occipital/parietal patterns x image features, only in SIGNAL_S."""
    from hmavd.data.thingseeg2 import EEGSplit, save_split
    from hmavd.datasets import write_planted_dataset
    from hmavd.features.cache import load_feature_cache

    root = tmp_path_factory.mktemp("sim")
    write_planted_dataset(
        root,
        n_train_concepts=60,
        images_per_concept=4,
        n_test_concepts=40,
        ch_names=CHANS,
        n_times=N_TIMES,
        sfreq=SFREQ,
        dim=16,
        seed=3,
    )
    cache = load_feature_cache(root / "features" / "planted")
    rng = np.random.default_rng(7)
    times = np.arange(N_TIMES) / SFREQ
    in_win = (times >= SIGNAL_S[0]) & (times < SIGNAL_S[1])
    weight = np.array([2.0 if c.startswith(("O", "PO", "P")) else 0.3 for c in CHANS])  # visual channels strongest
    mix = rng.standard_normal((len(CHANS), 16)) * weight[:, None]  # (C, D)
    wave = np.zeros((16, N_TIMES))
    wave[:, in_win] = np.sin(2 * np.pi * rng.uniform(5, 15, (16, 1)) * times[in_win] + rng.uniform(0, 6, (16, 1)))
    for split, reps in (("training", 2), ("test", 4)):
        f = cache.image_features(split) * 4.0  # (N, D)
        sig = np.einsum("cd,nd,dt->nct", mix, f, wave)  # (N, C, T)
        eeg = sig[:, None] + rng.standard_normal((len(f), reps, len(CHANS), N_TIMES))
        save_split(
            root / "preprocessed_eeg" / "sub-01" / f"preprocessed_eeg_{split}.npy",
            EEGSplit(eeg.astype(np.float32), CHANS, times),
        )
    (root / "simulation.json").write_text(json.dumps({"signal_tmin_s": SIGNAL_S[0], "signal_tmax_s": SIGNAL_S[1]}))
    return root


def _args(sim_dir, out, *extra):
    train = "[epochs=4,batch_size=64,lr=0.001,encoder=resmlp,device=cpu,n_val=20,use_spr=false]"
    return ["--data", str(sim_dir), "--subject", "1", "--out", str(out), f"train_overrides={train}", *extra]


def test_time_windows_finds_the_signal_window(sim_dir, tmp_path, capsys):
    rc = main(["time-windows", *_args(sim_dir, tmp_path, "window_step_s=0.2", "sliding_width_s=0.2")])
    assert rc == 0
    out = tmp_path / "time-windows"
    assert (out / "time_windows.png").stat().st_size > 10_000
    rows = read_csv(out / "time_windows.csv")
    assert list(rows[0]) == list(tw.COLUMNS)
    kinds = [r["kind"] for r in rows]
    assert kinds.count("forward") == kinds.count("backward") == kinds.count("sliding") == 4
    sliding = [r for r in rows if r["kind"] == "sliding"]
    best = max(sliding, key=lambda r: float(r["top5"]))
    assert (float(best["tmin_s"]), float(best["tmax_s"])) == SIGNAL_S
    chance5 = 5 / 40
    assert float(best["top5"]) >= 3 * chance5
    outside = [
        float(r["top5"]) for r in sliding if float(r["tmin_s"]) >= SIGNAL_S[1] or float(r["tmax_s"]) <= SIGNAL_S[0]
    ]
    assert max(outside) < float(best["top5"]) - 0.15
    out_text = capsys.readouterr().out
    assert "best sliding window: 200-400 ms" in out_text
    # the span of sliding windows above twice chance is the planted window, and the summary says so
    rows_f = [{**r, **{k: float(r[k]) for k in ("tmin_s", "tmax_s", "top1", "top5")}} for r in rows]
    assert tw.informative_span(rows_f, 1 / 40) == SIGNAL_S
    assert "above 2x chance (top-5): 200-400 ms; simulator signal window 200-400 ms" in out_text


def test_regions_sweep_gradients_topomaps(sim_dir, tmp_path):
    common = _args(sim_dir, tmp_path)
    assert main(["regions", *common, "regions=[occipital,central]"]) == 0
    rows = read_csv(tmp_path / "regions" / "regions.csv")
    assert list(rows[0]) == list(reg_mod.COLUMNS)
    assert [r["condition"] for r in rows] == ["all", "-occipital", "-central"]
    assert (tmp_path / "regions" / "regions.png").is_file()

    grid = "sweep_grid=[txt_reduction=4;img_reduction=4, txt_reduction=16;img_reduction=8]"
    assert main(["sweep", "--config", "sweep-reduction", *common, grid, "sweep_labels=[4/4,16/8]"]) == 0
    md = (tmp_path / "sweep" / "sweep_reduction.md").read_text().splitlines()
    assert md[0] == "| Ratio r (text/image) | 4/4 | 16/8 |" and md[2].startswith("| Top-1 |")
    assert md[4:] == ["| Paper Top-1 | 14.1 | 15.8 |", "| Paper Top-5 | 43.2 | 44.2 |"]  # Table 5's values
    rows = read_csv(tmp_path / "sweep" / "sweep_reduction.csv")
    assert [r["label"] for r in rows] == ["4/4", "16/8"] and list(rows[0]) == list(sweeps.COLUMNS)
    assert [r["paper_top1"] for r in rows] == ["0.141", "0.158"]
    assert (tmp_path / "sweep" / "sweep_reduction.png").stat().st_size > 10_000

    assert main(["gradients", *common]) == 0
    rows = read_csv(tmp_path / "gradients" / "gradients.csv")
    assert list(rows[0]) == list(grad_mod.COLUMNS)
    assert [r["run"] for r in rows] == ["without MCDB"] * 4 + ["with MCDB"] * 4  # one row per epoch
    assert all(float(r["grad_norm/eeg"]) > 0 and float(r["grad_norm/text"]) > 0 for r in rows)
    assert all(r["kappa/img"] in ("", "nan") for r in rows[:4])  # no κ logged without MCDB
    assert all(0 < float(r["kappa/img"]) <= 1 for r in rows[4:])
    assert all(float(r["grad_norm/eeg_sd"]) > 0 for r in rows)  # 4 steps per epoch: they differ
    assert (tmp_path / "gradients" / "gradients.png").is_file()
    # re-running with the same settings reuses the finished runs; other settings are refused
    lasts = sorted((tmp_path / "gradients" / "runs").glob("*/last.safetensors"))
    stamps = [p.stat().st_mtime_ns for p in lasts]
    assert main(["gradients", *common]) == 0
    assert [p.stat().st_mtime_ns for p in lasts] == stamps and read_csv(
        tmp_path / "gradients" / "gradients.csv"
    ) == rows
    bad = _args(sim_dir, tmp_path)
    bad[bad.index(next(a for a in bad if a.startswith("train_overrides")))] = "train_overrides=[epochs=2,device=cpu]"
    assert main(["gradients", *bad]) == 2

    runs = sorted(str(p) for p in (tmp_path / "gradients" / "runs").iterdir())
    assert main(["topomaps", *common, "--runs", *runs, "montage=standard_1005"]) == 0  # override after --runs
    rows = read_csv(tmp_path / "topomaps" / "topomaps.csv")
    assert list(rows[0]) == list(topo.COLUMNS)
    maps = {r["map"] for r in rows}
    assert maps == {"input ERP", *(f"{Path(r).name} saliency" for r in runs)}  # same method: rows named by run
    assert len(rows) == 3 * 8 * len(CHANS)  # 3 maps x 8 windows of 100 ms x channels
    assert (tmp_path / "topomaps" / "topomaps.png").stat().st_size > 10_000
    # the trained encoder's saliency is largest inside the signal window
    sal = [r for r in rows if r["map"].endswith("saliency")]
    per_win: dict[str, float] = {}
    for r in sal:
        per_win[r["window_start_ms"]] = per_win.get(r["window_start_ms"], 0.0) + float(r["value"])
    assert int(max(per_win, key=per_win.get)) in (200, 300)
    # Fig. 8 from existing logs: each run labelled by its folder and whether its config used MCDB
    assert main(["gradients", *common, "--runs", *runs]) == 0
    labels = list(dict.fromkeys(r["run"] for r in read_csv(tmp_path / "gradients" / "gradients.csv")))
    assert labels == ["grad_with-MCDB (MCDB on)", "grad_without-MCDB (MCDB off)"]
    # without --runs: one run per topo_configs entry (NICE vs HMAVD, as Fig. 6), each row named by its method
    assert main(["topomaps", *_args(sim_dir, tmp_path / "default", "topo_window_s=0.2")]) == 0
    rows = read_csv(tmp_path / "default" / "topomaps" / "topomaps.csv")
    assert {r["map"] for r in rows} == {"input ERP", "nice saliency", "hmavd-63 saliency"}
    assert len(rows) == 3 * 4 * len(CHANS)  # 4 windows of 200 ms


def test_cli_bad_input_exit_2(sim_dir, tmp_path, capsys):
    assert main(["regions", "--out", str(tmp_path), "nonsense_key=1"]) == 2
    assert "nonsense_key" in capsys.readouterr().err
    assert main(["time-windows", "--runs", str(tmp_path), "--out", str(tmp_path)]) == 2
    assert "--runs" in capsys.readouterr().err
    # 100 ms windows are too short for NICE's TSConv: told before any training starts
    rc = main(["time-windows", "--data", str(sim_dir), "--out", str(tmp_path), "train_overrides=[epochs=1]"])
    assert rc == 2 and "encoder=resmlp" in capsys.readouterr().err
    assert not (tmp_path / "time-windows" / "runs").exists()
    # a region none of the trained channels belongs to is refused before training
    rc = main(["regions", "--data", str(sim_dir), "--out", str(tmp_path), 'train_overrides=["channels=O1,Oz,O2"]'])
    err = capsys.readouterr().err
    assert rc == 2 and "'temporal' has no channel" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "regions" / "runs").exists()
    rc = main(
        [
            "sweep",
            "--data",
            str(sim_dir),
            "--out",
            str(tmp_path),
            "sweep_grid=[mcdb_gamma=0.5, nokey=1]",
            "sweep_labels=[]",
        ]
    )
    assert rc == 2 and "sweep_grid: entry 'nokey=1'" in capsys.readouterr().err
    assert not (tmp_path / "sweep" / "runs").exists()


def test_interrupted_condition_is_resumed_and_finished_one_reused(sim_dir, tmp_path):
    from hmavd.analysis.common import AnalyzeConfig, TrainEvalScorer, existing_run_state
    from hmavd.config import load_config
    from hmavd.train import TrainConfig, train

    ov = ["epochs=3", "batch_size=64", "encoder=resmlp", "device=cpu", "n_val=20", "use_spr=false"]
    cfg = AnalyzeConfig(train_overrides=(*ov, f"data_dir={sim_dir}"), out_dir=str(tmp_path))
    scorer = TrainEvalScorer(cfg, "x/runs")
    tcfg = load_config(
        TrainConfig, "hmavd-63", [*ov, f"data_dir={sim_dir}", f"out_dir={scorer.runs_dir}", "run_name=c"]
    )
    assert existing_run_state(scorer.runs_dir / "c", tcfg) == "new"

    class Killed(Exception):
        pass

    def kill_after_first(epoch, rec):
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train(tcfg, progress=False, on_epoch_end=kill_after_first)
    assert existing_run_state(scorer.runs_dir / "c", tcfg) == "partial"
    run = scorer.train("c", {})
    epochs = [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert sorted(set(epochs)) == [1, 2, 3] and existing_run_state(run, tcfg) == "done"
    other = load_config(
        TrainConfig, "hmavd-63", [*ov[1:], "epochs=5", f"data_dir={sim_dir}", f"out_dir={run.parent}", "run_name=c"]
    )
    with pytest.raises(UserError, match="other \\['epochs'\\]"):
        existing_run_state(run, other)

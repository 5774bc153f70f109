"""hmavd-demo end to end on a tiny simulated subject: both models, the reference rows, saved results."""

import json

from hmavd.checkpoint import load_checkpoint
from hmavd.cli.demo import main as demo_main
from hmavd.config import load_config
from hmavd.simulate_io import SimulateConfig, simulate_dataset

TINY = {"n_train_concepts": 10, "n_train_images_per_concept": 2, "n_test_concepts": 12, "n_sessions": 2,
        "train_reps_per_session": 1, "test_reps_per_session": 2, "n_sources": 8, "progress": False,
        "write_raw": False, "write_replay": False}  # fmt: skip


def test_demo_trains_both_models_and_prints_one_table(tmp_path, capsys):
    data, out = tmp_path / "sim", tmp_path / "runs"
    sim = simulate_dataset(load_config(SimulateConfig, None, TINY), data)
    args = ["--data", str(data), "--out", str(out), "--no-progress", "epochs=1", "batch_size=8", "n_val=2"]
    assert demo_main(args) == 0
    table = capsys.readouterr().out
    for row in ("| NICE (baseline) |", "| HMAVD |", "| oracle ceiling |", "| chance | 8.3 | 41.7 |"):
        assert row in table, row
    assert f"| oracle ceiling | {100 * sim['oracle']['top1']:.1f} |" in table
    saved = json.loads((out / "results.json").read_text())
    assert set(saved["evaluations"]) == {"NICE", "HMAVD", "NICE (last epoch)", "HMAVD (last epoch)"}
    last = saved["evaluations"]["HMAVD (last epoch)"]["results"]["image[test-images]"]
    assert f"| {100 * last['top1']:.1f} | {100 * last['top5']:.1f} | image |" in table
    _, nice_info = load_checkpoint(out / "nice" / "best.safetensors")
    _, hmavd_info = load_checkpoint(out / "hmavd" / "best.safetensors")
    assert nice_info["train_config"]["image_projection"] is False  # NICE's identity image side
    assert hmavd_info["train_config"]["image_projection"] is True
    assert saved["references"]["oracle ceiling"] == sim["oracle"]
    assert "text" in saved["evaluations"]["HMAVD"]["results"]
    assert "text" not in saved["evaluations"]["NICE"]["results"]  # the baseline has no text branch
    assert (out / "results.md").read_text().startswith("Zero-shot 12-way")
    # a second call reuses the runs (resume of finished runs), --fresh retrains; a foreign folder is refused
    assert demo_main(args) == 0
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("not a simulation")
    assert demo_main(["--data", str(tmp_path / "other"), "--out", str(out)]) == 2
    assert "simulation.json" in capsys.readouterr().err

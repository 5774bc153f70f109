"""hmavd-eval --reps: accuracy of k-repetition averages (first k, chronological), both averages."""

import dataclasses
import json

import numpy as np
import pytest

from hmavd.cli.evaluate import main as eval_main
from hmavd.config import load_config
from hmavd.datasets import write_planted_dataset
from hmavd.errors import UserError
from hmavd.eval_reps import chronological_order, first_k_mean, parse_reps, reps_curve
from hmavd.evaluate import evaluate_checkpoint
from hmavd.train import TrainConfig, train


def test_first_k_mean_follows_the_chronological_order():
    x = np.arange(2 * 3 * 2, dtype=np.float64).reshape(2, 3, 2)  # (img, rep, D)
    prov = np.array([[[1, 0], [0, 1], [0, 0]], [[0, 0], [0, 1], [1, 0]]])  # (session, rep) per image and slot
    order = chronological_order(prov, 3)
    assert order.tolist() == [[2, 1, 0], [0, 1, 2]]
    np.testing.assert_allclose(first_k_mean(x, 2, order), [(x[0, 2] + x[0, 1]) / 2, (x[1, 0] + x[1, 1]) / 2])
    np.testing.assert_allclose(first_k_mean(x, 3), x.mean(axis=1))
    with pytest.raises(UserError, match="k=4 is outside"):
        first_k_mean(x, 4)


def test_parse_reps():
    assert parse_reps("80, 1,2,5") == [1, 2, 5, 80]
    assert parse_reps("1,2,5,80", n_reps=4) == [1, 2]
    for bad in ("1,x", "0,2", ""):
        with pytest.raises(UserError, match="--reps"):
            parse_reps(bad)


def test_reps_curve_at_all_reps_is_the_usual_evaluation_and_cli_writes_it(tmp_path, capsys):
    root = write_planted_dataset(tmp_path / "data", n_train_concepts=12, images_per_concept=3, n_test_concepts=10,
                                 n_test_reps=4, n_times=80, dim=16)  # fmt: skip
    base = dict(data_dir=str(root), out_dir=str(tmp_path / "runs"), epochs=1, batch_size=8, device="cpu")
    run = train(dataclasses.replace(load_config(TrainConfig, "nice"), **base), progress=False)
    ev = evaluate_checkpoint(run, templates=("image",), ways=())
    assert eval_main([str(run), "--templates", "image", "--ways", "2", "--reps", "1,2,4,80",
                      "--out", str(tmp_path / "ev")]) == 0  # fmt: skip
    res = json.loads((tmp_path / "ev" / "results.json").read_text())["evaluations"][0]
    rows = {(r["average"], r["k"]): r for r in res["reps"]}
    assert {k for _, k in rows} == {1, 2, 4}  # 80 > the 4 repetitions: dropped
    # k = all repetitions, averaged as epochs, is exactly the standard (all-repetition average) evaluation
    assert rows[("epochs", 4)]["top1"] == pytest.approx(ev["results"]["image[test-images]"]["top1"])
    assert rows[("epochs", 4)]["top5"] == pytest.approx(ev["results"]["image[test-images]"]["top5"])
    lines = (tmp_path / "ev" / "reps.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 6 and lines[0].startswith("run,selection,")  # best and last checkpoints
    assert {x.split(",")[1] for x in lines[1:]} == {"val-selected", "last"}
    assert "average,k,n_images,top1,top5" in capsys.readouterr().out


def test_embeddings_average_of_one_repetition_equals_epochs_average():
    rng = np.random.default_rng(0)
    eeg = rng.standard_normal((6, 3, 2, 5))
    w = rng.standard_normal((10, 4))
    enc = lambda x: np.tanh(np.asarray(x).reshape(len(x), -1) @ w)  # noqa: E731
    tmpl = rng.standard_normal((6, 4))
    a = reps_curve(enc, eeg, np.arange(6), tmpl, [1], "epochs")[0]
    b = reps_curve(enc, eeg, np.arange(6), tmpl, [1], "embeddings")[0]
    assert (a["top1"], a["top5"]) == (b["top1"], b["top5"])
    with pytest.raises(UserError, match="average: 'median'"):
        reps_curve(enc, eeg, np.arange(6), tmpl, [1], "median")

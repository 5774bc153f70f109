"""Zero-shot metrics on hand-made score matrices, n-way seeding, templates and result tables."""

import numpy as np
import pytest
import torch

from hmavd.evaluate import aggregate, n_way_accuracy, results_csv, table_markdown, topk_accuracy, zero_shot

# 3 trials x 4 templates; true labels 0, 1, 2
SCORES = np.array(
    [
        [0.9, 0.1, 0.2, 0.3],  # label 0 ranked 1st
        [0.5, 0.4, 0.1, 0.0],  # label 1 ranked 2nd
        [0.3, 0.2, 0.1, 0.4],  # label 2 ranked 4th (last)
    ]
)
LABELS = np.array([0, 1, 2])


def test_topk_on_hand_made_matrix():
    assert topk_accuracy(SCORES, LABELS, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(SCORES, LABELS, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(SCORES, LABELS, 3) == pytest.approx(2 / 3)
    assert topk_accuracy(SCORES, LABELS, 4) == pytest.approx(1.0)
    assert topk_accuracy(torch.tensor(SCORES), torch.tensor(LABELS), 1) == pytest.approx(1 / 3)


def test_ties_count_against_the_true_label():
    flat = np.zeros((2, 5))
    assert topk_accuracy(flat, np.array([0, 3]), 1) == 0.0
    assert topk_accuracy(flat, np.array([0, 3]), 5) == 1.0


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        topk_accuracy(SCORES, np.array([0, 1]), 1)
    with pytest.raises(ValueError):
        topk_accuracy(SCORES, np.array([0, 1, 4]), 1)
    with pytest.raises(ValueError):
        n_way_accuracy(SCORES, LABELS, n_way=5)


def test_n_way_full_equals_topk_and_exact_expectations():
    assert n_way_accuracy(SCORES, LABELS, 4, k=1) == topk_accuracy(SCORES, LABELS, 1)
    # 2-way: trial 0 always wins; trial 1 loses only when the one better class (0) is drawn: p = 1/3;
    # trial 2 always loses (every other class scores higher).
    acc = n_way_accuracy(SCORES, LABELS, 2, k=1, seed=0, n_draws=3000)
    assert acc == pytest.approx((1 + 2 / 3 + 0) / 3, abs=0.02)
    # 3-way top-2: trial 1 misses only if... it is never outranked by 2 of the drawn ones (only 1 better)
    assert n_way_accuracy(SCORES, LABELS, 3, k=2, seed=1, n_draws=200) == pytest.approx(2 / 3)


def test_n_way_is_seeded_and_near_chance_for_random_scores():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((200, 200))
    y = np.arange(200)
    a = n_way_accuracy(s, y, 10, seed=3, n_draws=20)
    assert a == n_way_accuracy(s, y, 10, seed=3, n_draws=20)
    assert a != n_way_accuracy(s, y, 10, seed=4, n_draws=20)
    assert a == pytest.approx(0.1, abs=0.03)
    assert n_way_accuracy(s, y, 2, seed=0, n_draws=20) == pytest.approx(0.5, abs=0.05)
    perfect = np.eye(200)
    assert n_way_accuracy(perfect, y, 50, seed=0, n_draws=5) == 1.0


def test_zero_shot_keys():
    s = np.eye(6) + 0.01
    out = zero_shot(s, np.arange(6), ways=(2, 4, 6, 200), n_draws=5)
    assert out["top1"] == 1.0 and out["top5"] == 1.0 and out["n_templates"] == 6
    assert "2way_top1" in out and "4way_top1" in out and "6way_top1" not in out and "200way_top1" not in out


def _ev(method, subject, seed, t1, t5, selection="val-selected", key="k0", protocol="intra"):
    return {"method": method, "protocol": protocol, "subject": subject, "seed": seed, "selection": selection,
            "config_key": key, "results": {"image[test-images]": {"top1": t1, "top5": t5}}}  # fmt: skip


def test_aggregate_mean_std_and_tables():
    evals = [_ev("hmavd-63", 1, 0, 0.10, 0.40), _ev("hmavd-63", 1, 1, 0.20, 0.50),
             _ev("hmavd-63", 2, 0, 0.30, 0.60), _ev("hmavd-63", 2, 1, 0.40, 0.70)]  # fmt: skip
    rows = aggregate(evals)
    sub1 = next(r for r in rows if r["subject"] == 1)
    assert sub1["mean_top1"] == pytest.approx(15.0) and sub1["std_top1"] == pytest.approx(5.0)
    avg = next(r for r in rows if r["subject"] == "Avg")
    assert avg["mean_top1"] == pytest.approx(25.0) and avg["mean_top5"] == pytest.approx(55.0)
    assert avg["std_top1"] == pytest.approx(5.0)  # per-seed averages 20 and 30
    md = table_markdown(rows)
    cells = "15.0±5.0/45.0±5.0 | 35.0±5.0/65.0±5.0 | 25.0±5.0/55.0±5.0"
    published = "15.8/44.2 (not stated)"  # the HMAVD paper's figure, beside ours
    assert f"| hmavd-63 | val-selected | image[test-images] | {cells} | {published} |" in md
    assert "Sub1" in md and "Avg." in md and "nothing is selected on the test set" in md
    csv_text = results_csv(evals)
    assert csv_text.splitlines()[0].startswith("method,protocol,subject,seed,selection,epoch,templates,run,top1,top5")
    assert len(csv_text.strip().splitlines()) == 5
    single = table_markdown(aggregate([_ev("my-model", 3, 0, 0.123, 0.456)]))
    assert "| my-model | val-selected | image[test-images] | 12.3/45.6 | 12.3/45.6 | – |" in single


def test_last_and_selected_epochs_are_separate_lines_and_configs_are_not_mixed():
    # the last run has the same name but another config (key k1, e.g. more epochs)
    evals = [_ev("ubp", 1, 0, 0.10, 0.30), _ev("ubp", 1, 1, 0.30, 0.50),
             _ev("ubp", 1, 0, 0.20, 0.40, "last"), _ev("ubp", 1, 1, 0.20, 0.60, "last"),
             _ev("ubp", 1, 0, 0.90, 0.90, key="k1")]  # fmt: skip
    rows = aggregate(evals)
    avg = {(r["method"], r["selection"]): r for r in rows if r["subject"] == "Avg"}
    assert set(avg) == {("ubp [k0]", "val-selected"), ("ubp [k0]", "last"), ("ubp [k1]", "val-selected")}
    assert avg[("ubp [k0]", "val-selected")]["mean_top1"] == pytest.approx(20.0)
    assert avg[("ubp [k0]", "val-selected")]["std_top1"] == pytest.approx(10.0)
    assert avg[("ubp [k0]", "last")]["mean_top5"] == pytest.approx(50.0) and avg[("ubp [k0]", "last")]["n_seeds"] == 2
    assert avg[("ubp [k1]", "val-selected")]["n_seeds"] == 1  # never averaged with the other config
    md = table_markdown(rows)
    lines = [x for x in md.splitlines() if x.startswith("| ubp [k0]")]
    assert [x.split(" | ")[1] for x in lines] == ["val-selected", "last"]  # selected first, then last
    assert all(x.endswith("| 50.9/79.7 (last) |") for x in lines)  # UBP's published figure is its last epoch
    loso = table_markdown(aggregate([_ev("visual-blur", 2, 0, 0.1, 0.2, protocol="loso")]))
    assert "| visual-blur (loso) | val-selected |" in loso and "20.0/48.0 (last)" in loso
    small = _ev("ubp", 1, 0, 0.5, 0.9)
    small["results"]["image[test-images]"]["n_templates"] = 40  # e.g. a small simulated subject
    assert table_markdown(aggregate([small])).splitlines()[2].endswith("| not 200-way |")
    small["results"]["image[test-images]"]["n_templates"] = 200
    assert table_markdown(aggregate([small])).splitlines()[2].endswith("| 50.9/79.7 (last) |")


def test_published_figures_say_which_epoch_they_report():
    from hmavd.results import PUBLISHED, format_published, published_for

    assert published_for("neurobridge").epoch == "test-selected"
    assert (published_for("visual-blur", "loso").top1, published_for("visual-blur").top1) == (20.0, 80.0)
    assert published_for("hmavd-best") is None and published_for("ubp", "loso") is None
    assert format_published(published_for("nice")) == "13.8/– (not stated)" and format_published(None) == "–"
    for figures in PUBLISHED.values():
        for p in figures:
            assert p.epoch in ("last", "test-selected", "not stated") and p.source and p.protocol in ("intra", "loso")


def test_config_key_ignores_only_seed_subject_and_where_a_run_is_written():
    from hmavd.evaluate import config_key, selection_of

    base = {"name": "ubp", "epochs": 50, "seed": 0, "subject": 1, "out_dir": "a", "run_name": "", "device": "cpu"}
    same = {**base, "seed": 7, "subject": 3, "out_dir": "b", "run_name": "x", "device": "cuda"}
    assert config_key(base) == config_key(same) != config_key({**base, "epochs": 51})
    assert selection_of({"path": "runs/x/best.safetensors"}) == "val-selected"
    assert selection_of({"path": "runs/x/last.safetensors"}) == "last"
    assert selection_of({"selection": "last", "path": "runs/x/best.safetensors"}) == "last"

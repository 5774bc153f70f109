"""hmavd-train / hmavd-eval: configs, CLI end to end, learning, resume, determinism, protocols."""

import copy
import dataclasses
import json
import math

import pytest
import torch
from safetensors.torch import load_file

from hmavd.cli.evaluate import main as eval_main
from hmavd.cli.train import main as train_main
from hmavd.config import available_configs, load_config
from hmavd.datasets import load_training_set, resolve_channel_names, write_planted_dataset
from hmavd.errors import UserError
from hmavd.evaluate import evaluate_checkpoint
from hmavd.losses import hmavd_loss
from hmavd.train import TrainConfig, train

TABLE_ROWS = {  # config: (encoder, channels, text, adapters, mcdb, spr)
    "nice": ("tsconv", "all", False, False, False, False),
    "nice-sa": ("tsconv_sa", "all", False, False, False, False),
    "nice-ga": ("tsconv_ga", "all", False, False, False, False),
    "hmavd-17": ("tsconv", "visual17", True, True, True, True),
    "hmavd-63": ("tsconv", "all", True, True, True, True),
    "hmavd-63-sa": ("tsconv_sa", "all", True, True, True, True),
    "hmavd-63-ga": ("tsconv_ga", "all", True, True, True, True),
    "ablation-base": ("tsconv", "all", False, False, False, False),
    "ablation-text": ("tsconv", "all", True, False, False, False),
    "ablation-text-adapter": ("tsconv", "all", True, True, False, False),
    "ablation-text-mcdb-spr": ("tsconv", "all", True, False, True, True),
    "ablation-full": ("tsconv", "all", True, True, True, True),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return write_planted_dataset(root, n_train_concepts=12, images_per_concept=3, n_test_concepts=10,
                                 n_subjects=2, n_times=80, dim=16)  # fmt: skip


def _cfg(data_dir, tmp_path, **kw):
    base = dict(data_dir=str(data_dir), out_dir=str(tmp_path / "runs"), epochs=2, batch_size=8, lr=1e-3,
                spr_sigma_max=1e-3, device="cpu")  # fmt: skip
    return dataclasses.replace(load_config(TrainConfig, "hmavd-63"), **{**base, **kw})


def test_every_table_row_has_a_config_with_paper_defaults():
    assert set(TABLE_ROWS) <= set(available_configs())
    for name, (enc, chans, text, adapters, mcdb, spr) in TABLE_ROWS.items():
        c = load_config(TrainConfig, name)
        assert c.name == name
        assert (c.encoder, c.channels, c.use_text, c.use_adapters, c.use_mcdb, c.use_spr) == (
            enc, chans, text, adapters, mcdb, spr)  # fmt: skip
        assert (c.epochs, c.batch_size, c.lr, c.beta1, c.beta2, c.weight_decay, c.n_val) == (
            200, 1000, 2e-4, 0.5, 0.999, 0.0, 740)  # fmt: skip
        assert (c.tau, c.mcdb_gamma, c.img_reduction, c.txt_reduction) == (0.07, 0.7, 8, 16)
    demo = load_config(TrainConfig, "demo")
    assert demo.epochs < 200


def test_unknown_key_and_bad_values_exit_2(capsys, tmp_path):
    assert train_main(["--config", "hmavd-63", "bogus=1"]) == 2
    assert "unknown config key 'bogus'" in capsys.readouterr().err
    assert train_main(["--config", "nice", "protocol=cross"]) == 2
    assert "protocol" in capsys.readouterr().err
    assert train_main(["--data", str(tmp_path / "missing"), "epochs=1"]) == 2
    assert eval_main([str(tmp_path)]) == 2


def test_cli_one_epoch_end_to_end(data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    rc = train_main(["--config", "hmavd-63", "--data", str(data_dir), "--subject", "1", "epochs=1",
                     "batch_size=8", f"out_dir={out}", "--no-progress"])  # fmt: skip
    assert rc == 0
    run = out / "hmavd-63_sub-01_seed0"
    assert {"config.yaml", "metrics.jsonl", "best.safetensors", "last.safetensors"} <= {p.name for p in run.iterdir()}
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if x["type"] == "step"]
    # 36 images - 3 held out = 33 = 4 x 8 + 1: the one-sample tail batch is dropped
    assert len(steps) == 4 and lines[-1]["type"] == "epoch" and "val_loss" in lines[-1]
    for key in ("total", "ce_eeg_img", "ce_text_eeg", "cos_img_text", "adapter_consistency", "rho/img",
                "kappa/text", "grad_norm/eeg", "grad_norm/img", "grad_norm/text", "sigma"):  # fmt: skip
        assert key in steps[0], key
    capsys.readouterr()
    assert eval_main([str(run), "--out", str(tmp_path / "ev"), "--ways", "2,4"]) == 0
    printed = capsys.readouterr().out
    for epoch in ("val-selected", "last"):  # both epochs of the run, never a test-selected one
        assert f"| hmavd-63 | {epoch} | image[test-images] |" in printed and f"| {epoch} | text |" in printed
    assert "| not 200-way |" in printed  # the HMAVD paper's 200-way figure is not put beside 10-way numbers
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert [e["selection"] for e in res["evaluations"]] == ["val-selected", "last"]
    assert {e["templates_from"] for e in res["evaluations"]} == {"gallery"}
    assert res["evaluations"][0]["results"]["fused[test-images]"]["n_templates"] == 10
    assert (tmp_path / "ev" / "results.csv").exists() and (run / "eval_test-images.json").exists()
    assert (run / "eval_test-images_last.json").exists()
    # a second train into the same run folder is refused (no data lost)
    assert train_main(["--data", str(data_dir), "epochs=1", f"out_dir={out}", "--no-progress"]) == 2


def _weights(run_dir, which="last"):
    return {k: v for k, v in load_file(str(run_dir / f"{which}.safetensors")).items() if k.startswith("model/")}


def test_deterministic_and_resume_equals_uninterrupted(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, epochs=3)
    a = train(dataclasses.replace(cfg, run_name="a"), progress=False)
    b = train(dataclasses.replace(cfg, run_name="b"), progress=False)

    class Killed(Exception):
        pass

    def kill_after_first(epoch, record):
        if epoch == 1:
            raise Killed

    c_cfg = dataclasses.replace(cfg, run_name="c")
    with pytest.raises(Killed):
        train(c_cfg, progress=False, on_epoch_end=kill_after_first)
    with open(c_cfg.out_dir + "/c/metrics.jsonl", "a") as fh:  # a half-written later epoch is dropped on resume
        fh.write(json.dumps({"type": "step", "epoch": 2, "step": 99}) + "\n")
    c = train(c_cfg, resume=True, progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # determinism on CPU
        assert torch.equal(wa[k], wc[k]), k  # resume == uninterrupted
    strip = lambda p: [{k: v for k, v in json.loads(x).items() if k != "time_s"} for x in p.read_text().splitlines()]  # noqa: E731
    assert strip(a / "metrics.jsonl") == strip(c / "metrics.jsonl")
    with pytest.raises(UserError, match="resume"):
        train(dataclasses.replace(c_cfg, lr=1.0), resume=True, progress=False)


def test_learning_beats_chance_by_a_wide_margin(tmp_path):
    root = write_planted_dataset(tmp_path / "data", n_train_concepts=80, images_per_concept=4, n_test_concepts=50,
                                 n_times=80, dim=32, snr=1.0)  # fmt: skip
    cfg = _cfg(root, tmp_path, epochs=8, batch_size=64)
    run = train(cfg, progress=False)
    ev = evaluate_checkpoint(run, templates=("image",), ways=(2, 10))
    res = ev["results"]["image[test-images]"]
    assert res["n_templates"] == 50
    assert res["top5"] >= 4 * 5 / 50 and res["top1"] >= 4 / 50, res  # chance: top-5 10 %, top-1 2 %
    assert res["2way_top1"] > 0.7  # chance 0.5


def test_nice_baseline_and_loso_and_region_exclusion(data_dir, tmp_path):
    cfg = _cfg(data_dir, tmp_path, epochs=1, protocol="loso", subject=1, exclude_channels=("occipital", "Cz"))
    cfg = dataclasses.replace(cfg, **{k: False for k in ("use_text", "use_adapters", "use_mcdb", "use_spr")})
    run = train(cfg, progress=False)
    assert run.name.endswith("_loso")
    ev = evaluate_checkpoint(run, templates=("image", "text"), ways=())
    assert ev["subject"] == 1 and ev["protocol"] == "loso" and list(ev["results"]) == ["image[test-images]"]
    from hmavd.checkpoint import read_checkpoint

    _, info = read_checkpoint(run / "best.safetensors")
    assert info["train_subjects"] == [2]
    assert not {"O1", "Oz", "O2", "PO7", "POz", "PO8", "Cz"} & set(info["ch_names"]) and "Pz" in info["ch_names"]
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    assert "rho/img" not in steps[0] and "grad_norm/eeg" in steps[0]


def test_training_set_assembly(data_dir):
    ts = load_training_set(data_dir, [1, 2], n_val=740, seed=0, average_train_reps=False, tmin_s=0.0, tmax_s=0.2)
    # 36 images, n_val clamped to 3; 2 subjects x 2 reps
    assert ts.val_eeg.shape[0] == 3 * 2 * 2 and ts.eeg.shape[0] == 33 * 2 * 2 and ts.eeg.shape[2] == 50
    assert ts.image_features.shape == (132, 16) and ts.text_features.shape == (132, 16)
    with pytest.raises(UserError, match="exclude_channels"):
        resolve_channel_names(["O1", "Oz"], "all", ["nowhere"])


def test_checkpoint_selection_uses_the_eeg_image_terms_by_default(data_dir, tmp_path):
    from hmavd.train import selection_loss

    terms = {"ce_eeg_img": 3.0, "ce_img_eeg": 5.0, "ce_eeg_text": 9.0, "cos_img_text": 0.0, "total": 2.5}
    assert selection_loss(terms, "eeg_img") == 4.0 and selection_loss(terms, "total") == 2.5
    with pytest.raises(UserError, match="select_on"):
        load_config(TrainConfig, "hmavd-63", ["select_on=val"])
    run = train(_cfg(data_dir, tmp_path, epochs=3), progress=False)
    epochs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    epochs = [e for e in epochs if e["type"] == "epoch"]
    for e in epochs:  # the selection loss is the EEG-image part; the whole loss is logged beside it
        assert e["val_loss"] == pytest.approx((e["val/ce_eeg_img"] + e["val/ce_img_eeg"]) / 2)
        assert e["val_loss"] != pytest.approx(e["val/total"])
    best = min(epochs, key=lambda e: e["val_loss"])
    assert [e["epoch"] for e in epochs if e["best"]][-1] == best["epoch"]


def test_checkpoint_records_absolute_data_and_feature_paths(data_dir, tmp_path, monkeypatch):
    """The live engine finds the training MVNN and feature cache from any working directory."""
    from pathlib import Path

    from hmavd.checkpoint import read_checkpoint

    monkeypatch.chdir(data_dir.parent)
    run = train(_cfg(Path(data_dir.name), tmp_path, epochs=1), progress=False)
    _, meta = read_checkpoint(run / "best.safetensors", "cpu")
    assert Path(meta["data_dir"]).is_absolute() and Path(meta["data_dir"]) == data_dir.resolve()
    assert Path(meta["features"]["path"]).is_absolute() and Path(meta["features"]["path"]).is_dir()
    assert meta["train_config"]["data_dir"] == data_dir.name  # the config itself is saved as given


class _RecordingOptimizer(torch.optim.SGD):
    """SGD that records the gradients it is handed (what reaches the optimiser after MCDB)."""

    def step(self, closure=None):
        self.seen = [p.grad.detach().clone() for g in self.param_groups for p in g["params"]]
        return super().step(closure)


def _kappa_by_hand(out, tau, gamma):
    """Eq. 10-13 written out: matched softmax mass per modality, ρ against the other one, 1 − tanh."""
    eeg = out["eeg_features"].detach().double()
    c = {}
    for m, key in (("img", "image_features"), ("text", "text_features")):
        sim = torch.exp(eeg @ out[key].detach().double().T / tau)
        c[m] = float((sim.diagonal() / sim.sum(1)).sum())
    rho = {"img": c["img"] / c["text"], "text": c["text"] / c["img"]}
    return {m: (1 - math.tanh(gamma * (r - 1)) if r > 1 else 1.0) for m, r in rho.items()}


def _step_setup(mcdb_apply="gradient", gamma=0.7, temperature="fixed"):
    from hmavd.models import HMAVD, ModelConfig
    from hmavd.train import TrainStep

    cfg = load_config(TrainConfig, "hmavd-63")
    cfg = dataclasses.replace(cfg, mcdb_gamma=gamma, mcdb_apply=mcdb_apply, temperature=temperature)
    torch.manual_seed(0)
    model = HMAVD(ModelConfig(n_chans=4, n_times=80, feature_dim=16, proj_dim=8, img_reduction=4, txt_reduction=4,
                              temperature=temperature))  # fmt: skip
    if temperature == "learnable":  # a learned τ of 0.2, not the initial 0.07
        with torch.no_grad():
            model.log_logit_scale.fill_(math.log(1 / 0.2))
    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(12, 4, 80, generator=g), torch.randn(12, 16, generator=g), torch.randn(12, 16, generator=g))
    return cfg, model, batch, TrainStep


@pytest.mark.parametrize(("temperature", "tau"), [("fixed", 0.07), ("learnable", 0.2)])
def test_train_step_hands_kappa_scaled_gradients_to_the_optimiser(temperature, tau):
    """Eq. 14 in the loop: what reaches the optimiser is κ^(m) x the raw gradient of modality m's
    parameters (κ from Eq. 10-13 by hand, τ = the model's temperature, learned or fixed), EEG unscaled."""
    cfg, model, batch, TrainStep = _step_setup(temperature=temperature)
    ref = copy.deepcopy(model)
    opt = _RecordingOptimizer(model.parameters(), lr=0.0)
    step = TrainStep(cfg, model, opt)
    torch.manual_seed(5)
    logs = step(*batch)
    first = opt.seen
    torch.manual_seed(5)
    step(*batch)  # lr = 0: the same gradients again, not accumulated on the first ones
    # the same forward/backward by hand, without MCDB (same dropout draws)
    ref.train()
    torch.manual_seed(5)
    out = ref(*batch)
    hmavd_loss(out, use_text=True)["total"].backward()
    kappas = _kappa_by_hand(out, tau, cfg.mcdb_gamma)
    assert min(kappas.values()) < 0.9  # a genuinely damped modality in this batch
    for m in ("img", "text"):
        assert logs[f"kappa/{m}"] == pytest.approx(kappas[m], rel=1e-4)
    group_of = {id(p): m for m, ps in ref.modality_parameters().items() for p in ps}
    for p_ref, seen, again in zip(ref.parameters(), first, opt.seen):
        k = kappas.get(group_of[id(p_ref)], 1.0)  # EEG: κ = 1
        assert torch.allclose(seen, k * p_ref.grad, rtol=1e-4, atol=1e-9)
        assert torch.allclose(again, seen, rtol=1e-5, atol=1e-9)


def test_mcdb_apply_update_scales_the_adam_update_by_kappa():
    from hmavd.train import make_optimizer

    cfg, model, batch, TrainStep = _step_setup("update")
    cfg = dataclasses.replace(cfg, use_spr=False)
    twin = copy.deepcopy(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(5)
    logs = TrainStep(cfg, model, make_optimizer(cfg, model, 10))(*batch)
    plain = dataclasses.replace(cfg, use_mcdb=False)
    torch.manual_seed(5)
    TrainStep(plain, twin, make_optimizer(plain, twin, 10))(*batch)  # Adam, no MCDB
    group_of = {id(p): m for m, ps in model.modality_parameters().items() for p in ps}
    damped = [m for m in ("img", "text") if logs[f"kappa/{m}"] < 0.9]
    assert damped
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        k = logs.get(f"kappa/{group_of[id(p)]}", 1.0)
        # float32 rounding of θ (|θ| ≤ ~1) bounds how exactly a 2e-4 update can be read back: ~1e-7
        assert torch.allclose(p - before[name], k * (q - before[name]), rtol=1e-4, atol=3e-7), name


def test_train_hands_the_real_step_count_to_spr(data_dir, tmp_path):
    """σ_t of every logged step is σ_max (1 − t/T) with T = epochs x batches per epoch (Eq. 17)."""
    run = train(_cfg(data_dir, tmp_path, epochs=3, spr_sigma_max=0.01), progress=False)
    steps = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    steps = [s for s in steps if s["type"] == "step"]
    total = len(steps)
    assert total == 3 * 4  # 33 training samples in batches of 8 (the 1-sample tail dropped)
    for s in steps:
        assert s["sigma"] == pytest.approx(0.01 * (1 - (s["step"] - 1) / total)), s["step"]
    state = load_file(str(run / "last.safetensors"))
    assert state  # the run finished and wrote its optimiser state


def test_every_epoch_is_a_fresh_permutation_of_the_training_set(data_dir, tmp_path, monkeypatch):
    import hmavd.train as train_module

    seen = []

    class Recording(train_module.TrainStep):
        def __call__(self, eeg, img, txt):
            seen.append(img.clone())
            return super().__call__(eeg, img, txt)

    monkeypatch.setattr(train_module, "TrainStep", Recording)
    train(_cfg(data_dir, tmp_path, epochs=2), progress=False)
    assert len(seen) == 8  # 2 epochs x 4 batches of 8
    epochs = [torch.cat(seen[:4]), torch.cat(seen[4:])]
    keys = [[tuple(row.tolist()) for row in e] for e in epochs]
    assert all(len(set(k)) == 32 for k in keys)  # 32 distinct samples per epoch (33 minus the dropped tail)
    assert keys[0] != keys[1] and keys[0] != sorted(keys[0])  # shuffled, and differently each epoch


def test_validation_loss_is_the_sample_weighted_mean_over_batches():
    from hmavd.train import validation_loss

    cfg, model, (eeg, img, txt), TrainStep = _step_setup()
    step = TrainStep(cfg, model, torch.optim.SGD(model.parameters(), lr=0.0))
    model.eval()
    with torch.no_grad():
        whole = {k: float(v) for k, v in step.loss_terms(eeg, img, txt)[1].items()}
        first = step.loss_terms(eeg[:8], img[:8], txt[:8])[1]
        rest = step.loss_terms(eeg[8:], img[8:], txt[8:])[1]
    assert validation_loss(step, eeg, img, txt, batch_size=12) == pytest.approx(whole)
    batched = validation_loss(step, eeg, img, txt, batch_size=8)  # batches of 8 and 4
    for k in whole:
        assert batched[k] == pytest.approx((8 * float(first[k]) + 4 * float(rest[k])) / 12), k


def test_train_config_validates_itself_when_built_in_python(tmp_path):
    with pytest.raises(UserError, match="protocol: 'cross' is not one of"):
        TrainConfig(protocol="cross")
    with pytest.raises(UserError, match="batch_size: 1 is too small"):
        dataclasses.replace(TrainConfig(), batch_size=1)
    with pytest.raises(UserError, match="finetune_layers: 'head'"):
        TrainConfig(finetune_layers="head")
    cfg = TrainConfig(finetune=str(tmp_path / "nothing"))  # building reads no file ...
    cfg.validate()
    with pytest.raises(UserError, match="finetune: "):
        cfg.check_paths()  # ... the path is checked when training starts


def test_seeds_end_with_the_results_table_of_the_runs(data_dir, tmp_path, capsys):
    out = tmp_path / "runs"
    args = ["--config", "ubp", "--data", str(data_dir), "--subject", "1", "--seeds", "0,1", "epochs=1",
            "batch_size=8", "device=cpu", f"out_dir={out}", "--no-progress", "channels=all"]  # fmt: skip
    assert train_main(args) == 0
    printed = capsys.readouterr().out
    saved = json.loads((out / "eval" / "ubp" / "results.json").read_text())
    evals = saved["evaluations"]
    assert sorted((e["seed"], e["selection"]) for e in evals) == [(0, "last"), (0, "val-selected"), (1, "last"),
                                                                  (1, "val-selected")]  # fmt: skip
    avg = {r["selection"]: r for r in saved["table"] if r["subject"] == "Avg"}
    assert set(avg) == {"val-selected", "last"} and all(r["n_seeds"] == 2 for r in avg.values())
    last = [100 * e["results"]["image[test-images]"]["top1"] for e in evals if e["selection"] == "last"]
    assert avg["last"]["mean_top1"] == pytest.approx(sum(last) / 2)
    assert avg["last"]["std_top1"] == pytest.approx(abs(last[0] - last[1]) / 2)  # population std of two seeds
    row = next(x for x in printed.splitlines() if x.startswith("| ubp | last | image[test-images] |"))
    assert "±" in row and row.endswith("| not 200-way |")  # UBP's 200-way figure is not put beside 10-way numbers
    assert (out / "eval" / "ubp" / "results.md").read_text() in printed

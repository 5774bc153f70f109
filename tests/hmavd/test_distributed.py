"""DDP helpers: sharding, the differentiable all-gather, and a real 2-process gloo run on CPU."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from hmavd import distributed as hd
from hmavd.errors import UserError

B_GLOBAL = 7  # odd on purpose: shards of 4 and 3 rows exercise the padded gather
C, T, D_IMG, D = 5, 16, 12, 8


class TinyTriModal(nn.Module):
    """EEG encoder + image/text projections into a shared space (LayerNorm: no batch statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.eeg = nn.Sequential(nn.Flatten(), nn.Linear(C * T, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, D))
        self.img = nn.Linear(D_IMG, D, bias=False)
        self.text = nn.Linear(D_IMG, D)
        self.log_scale = nn.Parameter(torch.tensor(np.log(1 / 0.07), dtype=torch.float32))

    def forward(self, eeg, image_features, text_features):
        return {
            "eeg_features": F.normalize(self.eeg(eeg), dim=-1),  # (B, D)
            "image_features": F.normalize(self.img(image_features), dim=-1),  # (B, D)
            "text_features": F.normalize(self.text(text_features), dim=-1),  # (B, D)
            "logit_scale": self.log_scale.exp(),
        }


def tri_modal_loss(out):
    """Mean of the four symmetric CE terms and the image-text cosine loss (Eq. 2-4 shape)."""
    s = out["logit_scale"]
    e, i, t = out["eeg_features"], out["image_features"], out["text_features"]
    target = torch.arange(e.shape[0])
    terms = [
        F.cross_entropy(s * e @ i.T, target),
        F.cross_entropy(s * i @ e.T, target),
        F.cross_entropy(s * e @ t.T, target),
        F.cross_entropy(s * t @ e.T, target),
        1 - F.cosine_similarity(i, t).mean(),
    ]
    return sum(terms) / 5


def make_batch():
    g = torch.Generator().manual_seed(1)
    eeg = torch.randn(B_GLOBAL, C, T, generator=g)  # (B, C, T)
    img = torch.randn(B_GLOBAL, D_IMG, generator=g)  # (B, D_img)
    txt = img + 0.3 * torch.randn(B_GLOBAL, D_IMG, generator=g)  # (B, D_img)
    return eeg, img, txt


def make_model():
    torch.manual_seed(0)
    return TinyTriModal()


def make_hmavd_step(dist_ctx=None):
    """The real training step (HMAVD with text + adapters, hmavd_loss, MCDB, Adam), dropout off."""
    from hmavd.models.hmavd_model import HMAVD, ModelConfig
    from hmavd.train import TrainConfig, TrainStep

    cfg = TrainConfig(encoder="resmlp", use_spr=False, lr=1e-2, mcdb_gamma=0.7, temperature="learnable")
    mc = ModelConfig(encoder="resmlp", n_chans=C, n_times=T, feature_dim=D_IMG * 2, proj_dim=D, dropout=0.0,
                     proj_dropout=0.0, img_reduction=4, txt_reduction=4, temperature="learnable",
                     encoder_kwargs=(("hidden", 32), ("dropout", 0.0)))  # fmt: skip
    torch.manual_seed(0)
    model = HMAVD(mc)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    return model, TrainStep(cfg, model, opt, dist_ctx)


def hmavd_batch():
    g = torch.Generator().manual_seed(2)
    eeg = torch.randn(B_GLOBAL, C, T, generator=g)  # (B, C, T)
    img = torch.randn(B_GLOBAL, 2 * D_IMG, generator=g)  # (B, D_img)
    # make the image modality "dominant" (ρ_img > 1) so MCDB's κ actually scales gradients
    eeg = eeg + 3 * (img[:, :C, None] if C <= 2 * D_IMG else 0)
    return eeg, img, img + 0.5 * torch.randn(B_GLOBAL, 2 * D_IMG, generator=g)


def run_hmavd_steps(step, model, batches, shard=lambda i: i):
    logs = []
    for eeg, img, txt in batches:
        idx = shard(torch.arange(B_GLOBAL))
        lg = step(eeg[idx], img[idx], txt[idx])
        logs.append({k: float(v) for k, v in lg.items()})
    params = {f"param/{n}": p.detach().numpy().copy() for n, p in model.named_parameters()}
    return logs, params


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    ctx = hd.setup(device="cpu")
    try:
        assert ctx.is_distributed and ctx.backend == "gloo" and ctx.world_size == world
        model = make_model()
        ddp = ctx.wrap_model(model)
        eeg, img, txt = make_batch()
        idx = ctx.shard(torch.arange(B_GLOBAL))
        out = ddp(eeg[idx], img[idx], txt[idx])
        out = ctx.gather_outputs(out, n_global=B_GLOBAL)
        loss = tri_modal_loss(out)
        loss.backward()
        grads = {f"grad/{n}": p.grad.detach().numpy() for n, p in model.named_parameters()}
        run_dir = ctx.broadcast_object(out_dir if ctx.is_main else None)
        hm_model, hm_step = make_hmavd_step(ctx)
        batch = hmavd_batch()
        logs, params = run_hmavd_steps(hm_step, hm_model, [batch, batch], shard=ctx.shard)
        np.savez(
            os.path.join(run_dir, f"rank{rank}.npz"),
            loss=loss.detach().numpy(),
            n_local=len(idx),
            mean_rank=ctx.all_reduce_mean(float(rank)),
            **grads,
            **params,
            **{f"log{i}/{k}": v for i, lg in enumerate(logs) for k, v in lg.items()},
        )
        ctx.barrier()
    finally:
        hd.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_matches_single_process(tmp_path):
    model = make_model()
    eeg, img, txt = make_batch()
    loss = tri_modal_loss(model(eeg, img, txt))
    loss.backward()
    ref = {n: p.grad.detach().numpy().copy() for n, p in model.named_parameters()}

    hm_model, hm_step = make_hmavd_step()
    batch = hmavd_batch()
    hm_logs, hm_params = run_hmavd_steps(hm_step, hm_model, [batch, batch])
    assert hm_logs[0]["kappa/img"] < 1 or hm_logs[0]["kappa/text"] < 1  # MCDB is active in this check

    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        res = np.load(tmp_path / f"rank{rank}.npz")
        assert int(res["n_local"]) == (4, 3)[rank]
        assert float(res["mean_rank"]) == pytest.approx(0.5)
        np.testing.assert_allclose(res["loss"], loss.item(), rtol=1e-5, atol=1e-6)
        for name, g in ref.items():
            np.testing.assert_allclose(res[f"grad/{name}"], g, rtol=1e-4, atol=1e-6, err_msg=name)
        # the real training step: loss terms, rho/kappa, per-modality gradient norms and the
        # parameters after two Adam steps equal the single-process run on the same global batch
        for i, lg in enumerate(hm_logs):
            for k, v in lg.items():
                np.testing.assert_allclose(res[f"log{i}/{k}"], v, rtol=1e-4, atol=1e-6, err_msg=f"step {i} {k}")
        for name, p in hm_params.items():
            np.testing.assert_allclose(res[name], p, rtol=1e-4, atol=1e-5, err_msg=name)


def test_local_negatives_loss_differs_from_global():
    """Without gathering, a shard's loss sees fewer negatives: this is why gathering is the default."""
    model = make_model()
    eeg, img, txt = make_batch()
    with torch.no_grad():
        full = tri_modal_loss(model(eeg, img, txt)).item()
        half = tri_modal_loss(model(eeg[:4], img[:4], txt[:4])).item()
    assert abs(full - half) > 1e-3


def test_shard_bounds_cover_batch_contiguously():
    assert hd.shard_bounds(7, 2) == [(0, 4), (4, 7)]
    assert hd.shard_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert hd.shard_bounds(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]
    for n, w in [(1000, 8), (999, 7), (5, 5)]:
        b = hd.shard_bounds(n, w)
        assert b[0][0] == 0 and b[-1][1] == n
        assert all(b[i][1] == b[i + 1][0] for i in range(w - 1))
        sizes = [s - a for a, s in b]
        assert max(sizes) - min(sizes) <= 1


def test_single_process_context_is_identity(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    ctx = hd.setup(device="cpu")
    assert not ctx.is_distributed and ctx.is_main and ctx.world_size == 1
    model = nn.Linear(3, 2)
    assert ctx.wrap_model(model) is model
    idx = torch.arange(10)
    assert torch.equal(ctx.shard(idx), idx)
    x = torch.randn(4, 3, requires_grad=True)
    assert ctx.gather_features(x) is x
    assert ctx.all_reduce_mean(2.5) == 2.5
    assert ctx.broadcast_object("run") == "run"


def test_torchrun_env_and_fan_out():
    assert hd.torchrun_env({}) is None
    assert hd.torchrun_env({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"}) == (1, 3, 1)
    with pytest.raises(UserError, match="RANK"):
        hd.torchrun_env({"RANK": "3", "WORLD_SIZE": "2"})
    with pytest.raises(UserError, match="not integers"):
        hd.torchrun_env({"RANK": "a", "WORLD_SIZE": "2"})
    subjects = list(range(1, 11))
    assert hd.fan_out(subjects, {}) == subjects
    shares = [hd.fan_out(subjects, {"RANK": str(r), "WORLD_SIZE": "3"}) for r in range(3)]
    assert shares[0] == [1, 4, 7, 10] and shares[2] == [3, 6, 9]
    assert sorted(sum(shares, [])) == subjects


# ------------------------------------------- hmavd.train.train() itself: 1 process vs 2 gloo ranks

TRAIN_KW = dict(encoder="resmlp", epochs=2, batch_size=31, n_val=10, lr=1e-3, device="cpu", use_spr=True)


def _no_dropout_build_model(monkeypatch_target=None):
    """``hmavd.train.build_model`` with every Dropout at p=0 (TrainConfig has no dropout key).

    Dropout masks are drawn per rank, so with dropout on a DDP run is equal to one process only in
    distribution; with it off (and LayerNorm only: resmlp) the two must agree to float tolerance.
    """
    import hmavd.train as ht

    original = ht.build_model

    def build(*args, **kwargs):
        model = original(*args, **kwargs)
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0
        return model

    ht.build_model = build
    return original


def _train_worker(rank: int, world: int, port: int, data_dir: str, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    from hmavd.train import TrainConfig, train

    _no_dropout_build_model()
    try:
        run = train(TrainConfig(data_dir=data_dir, out_dir=out_dir, run_name="ddp", **TRAIN_KW), progress=False)
        ctx = hd.setup(device="cpu")  # the group train() created (setup is idempotent)
        assert ctx.is_distributed and ctx.world_size == world
        np.save(os.path.join(out_dir, f"done{rank}.npy"), np.array([rank, len(str(run))]))
    finally:
        hd.cleanup()


def _metric_lines(run_dir):
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_under_two_gloo_ranks_matches_one_process(tmp_path, monkeypatch):
    """The real ``train()`` loop (seeded permutation, sharding, gathered negatives, MCDB, SPR noise,
    validation, rank-0-only writes) under 2 gloo ranks logs the same losses as one process."""
    from hmavd.checkpoint import read_checkpoint
    from hmavd.datasets import write_planted_dataset
    from hmavd.train import TrainConfig, train

    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    data = write_planted_dataset(tmp_path / "data", n_train_concepts=40, n_test_concepts=10, n_times=50, dim=16)
    runs = tmp_path / "runs"
    import hmavd.train as ht

    monkeypatch.setattr(ht, "build_model", ht.build_model)  # restored after the test
    _no_dropout_build_model()
    single = train(TrainConfig(data_dir=str(data), out_dir=str(runs), run_name="single", **TRAIN_KW), progress=False)

    mp.spawn(_train_worker, args=(2, _free_port(), str(data), str(runs)), nprocs=2, join=True)
    assert (runs / "done0.npy").is_file() and (runs / "done1.npy").is_file()
    ref, got = _metric_lines(single), _metric_lines(runs / "ddp")
    assert len(got) == len(ref) == 2 * (1 + 5)  # 150 samples / 31 = 4 full batches + one of 26; per epoch
    steps = [r for r in ref if r["type"] == "step"]
    assert steps[0]["kappa/img"] < 1 or steps[0]["kappa/text"] < 1 or any(s["kappa/text"] < 1 for s in steps)
    for a, b in zip(ref, got):
        assert a["type"] == b["type"] and a["step"] == b["step"]
        for key in ("total", "ce_eeg_img", "ce_eeg_text", "grad_norm/eeg", "grad_norm/img", "grad_norm/text",
                    "kappa/img", "kappa/text", "sigma", "train_loss", "val_loss", "val/total"):  # fmt: skip
            if key in a:
                np.testing.assert_allclose(b[key], a[key], rtol=2e-4, atol=1e-6, err_msg=f"step {a['step']} {key}")
    t_ref, _ = read_checkpoint(single / "last.safetensors", "cpu")
    t_got, _ = read_checkpoint(runs / "ddp" / "last.safetensors", "cpu")
    for name, v in t_ref.items():
        if name.startswith("model/"):  # Adam's g/sqrt(v) turns float noise of a ~0 gradient into a ±lr step,
            diff = np.abs(t_got[name].numpy() - v.numpy())  # so bound the bulk, not the single worst element
            assert np.median(diff) < 1e-6 and np.linalg.norm(diff) < 1e-3 * np.linalg.norm(v.numpy()), name
    assert sorted(p.name for p in runs.iterdir()) == ["ddp", "done0.npy", "done1.npy", "single"]


def test_rank_logging_keeps_info_on_rank_zero_only():
    import logging

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.levelno, record.getMessage()))

    root = logging.getLogger()
    handler = Keep()
    root.addHandler(handler)
    try:
        hd.setup_rank_logging(hd.DistContext(rank=1, world_size=2, backend="gloo"))
        hd.setup_rank_logging(hd.DistContext(rank=1, world_size=2, backend="gloo"))  # idempotent
        assert sum(isinstance(f, hd._RankFilter) for f in handler.filters) == 1
        log = logging.getLogger("hmavd.test")
        log.setLevel(logging.INFO)
        log.info("progress")
        log.warning("disk almost full")
        assert records == [(logging.WARNING, "disk almost full")]
    finally:
        root.removeHandler(handler)


def test_train_cli_fan_out_trains_this_ranks_share_of_the_runs(tmp_path, monkeypatch, capsys):
    """`hmavd-train --fan-out` as rank 1 of 2 under torchrun: only its share, no process group."""
    from hmavd.cli.train import main as train_main
    from hmavd.datasets import write_planted_dataset

    data = write_planted_dataset(tmp_path / "planted", n_train_concepts=6, images_per_concept=2, n_test_concepts=4,
                                 n_subjects=2, n_times=80, dim=16)  # fmt: skip
    out = tmp_path / "runs"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    args = ["--config", "nice", "--data", str(data), "--subject", "all", "--seeds", "0,1", "--fan-out",
            "epochs=1", "batch_size=4", "n_val=2", "device=cpu", f"out_dir={out}", "--no-progress"]  # fmt: skip
    assert train_main(args) == 0
    # jobs in order (sub1 s0, sub1 s1, sub2 s0, sub2 s1); rank 1 of 2 takes the 2nd and the 4th
    assert sorted(p.name for p in out.iterdir()) == ["nice_sub-01_seed1", "nice_sub-02_seed1"]
    assert all((out / n / "best.safetensors").exists() for n in ("nice_sub-01_seed1", "nice_sub-02_seed1"))
    assert capsys.readouterr().out.split() == [str(out / "nice_sub-01_seed1"), str(out / "nice_sub-02_seed1")]
    assert not torch.distributed.is_initialized()

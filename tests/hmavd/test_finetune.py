"""hmavd-train --finetune: starts from the checkpoint, changes only what it says, resumes exactly."""

import dataclasses

import pytest
import torch
from safetensors.torch import load_file

from hmavd.cli.train import main as train_main
from hmavd.config import load_config
from hmavd.datasets import write_planted_dataset
from hmavd.errors import UserError
from hmavd.finetune import trains
from hmavd.train import TrainConfig, train


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    data = write_planted_dataset(
        root / "data", n_train_concepts=12, images_per_concept=3, n_test_concepts=10, n_times=80, dim=16
    )
    cfg = dataclasses.replace(
        load_config(TrainConfig, "hmavd-63"),
        data_dir=str(data),
        out_dir=str(root / "runs"),
        epochs=1,
        batch_size=8,
        spr_sigma_max=1e-3,
        device="cpu",
    )
    return cfg, train(dataclasses.replace(cfg, run_name="start"), progress=False)


def _weights(run, which="last"):
    return {k[6:]: v for k, v in load_file(str(run / f"{which}.safetensors")).items() if k.startswith("model/")}


def test_eeg_finetune_changes_only_the_eeg_side(base):
    cfg, start = base
    run = train(
        dataclasses.replace(cfg, run_name="ft-eeg", finetune=str(start), finetune_layers="eeg", epochs=2),
        progress=False,
    )
    w0, w1 = _weights(start, "best"), _weights(run)
    changed = {k for k in w0 if not torch.equal(w0[k], w1[k])}
    assert changed and all(trains(k, "eeg") for k in changed)
    assert any(k.startswith("encoder.") for k in changed) and any(k.startswith("eeg_projection.") for k in changed)
    assert all(torch.equal(w0[k], w1[k]) for k in w0 if not trains(k, "eeg"))  # image/text side exactly kept


def test_finetune_resume_equals_uninterrupted(base):
    cfg, start = base
    ft = dataclasses.replace(cfg, finetune=str(start), finetune_layers="eeg_projection", epochs=2)
    a = train(dataclasses.replace(ft, run_name="ft-a"), progress=False)

    class Killed(Exception):
        pass

    def kill(epoch, record):
        if epoch == 1:
            raise Killed

    c_cfg = dataclasses.replace(ft, run_name="ft-c")
    with pytest.raises(Killed):
        train(c_cfg, progress=False, on_epoch_end=kill)
    c = train(c_cfg, resume=True, progress=False)
    wa, wc, w0 = _weights(a), _weights(c), _weights(start, "best")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    assert {k for k in w0 if not torch.equal(w0[k], wa[k])} <= {k for k in w0 if k.startswith("eeg_projection.")}


def test_bad_finetune_settings_exit_2(base, tmp_path, capsys):
    cfg, _ = base
    for bad in (["finetune_layers=head"], ["--finetune", str(tmp_path / "nothing")]):
        assert train_main(["--data", cfg.data_dir, "epochs=1", f"out_dir={tmp_path}", "--no-progress", *bad]) == 2
    err = capsys.readouterr().err
    assert "finetune_layers: 'head' is not one of" in err and "finetune: " in err
    with pytest.raises(UserError, match="does not fit this model"):
        other = dataclasses.replace(cfg, run_name="mismatch", finetune=str(base[1]), channels="P7,P3,Pz")
        train(other, progress=False)

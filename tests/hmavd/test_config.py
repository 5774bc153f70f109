"""Config loading: defaults <- YAML <- overrides, unknown keys rejected, round trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest
import yaml

from hmavd.config import available_configs, config_path, load_config, parse_overrides, save_config
from hmavd.errors import UserError, run_command


@dataclass(frozen=True)
class Toy:
    epochs: int = 3
    lr: float = 1e-3
    name: str = "x"
    use_text: bool = True
    window: float | None = None
    seeds: tuple[int, ...] = (0,)


def test_defaults_yaml_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 7\nname: hello\n")
    cfg = load_config(Toy, p, ["lr=0.5", "use_text=false", "seeds=[1,2]", "window=0.25"])
    assert cfg == Toy(epochs=7, lr=0.5, name="hello", use_text=False, window=0.25, seeds=(1, 2))


def test_base_inheritance(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 9\nlr: 0.1\n")
    child = tmp_path / "child.yaml"
    child.write_text(f"base: {tmp_path / 'base.yaml'}\nlr: 0.2\n")
    cfg = load_config(Toy, child)
    assert (cfg.epochs, cfg.lr) == (9, 0.2)


@pytest.mark.parametrize(
    "overrides, needle",
    [
        (["epoch=3"], "unknown config key 'epoch'"),
        (["epochs=abc"], "epochs"),
        (["epochs"], "key=value"),
        (["epochs=1.5"], "epochs"),
        (["use_text=maybe"], "use_text"),
    ],
)
def test_bad_overrides_name_the_key(overrides, needle):
    with pytest.raises(UserError, match=needle):
        load_config(Toy, None, overrides)


def test_unknown_key_in_file_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("epochz: 3\n")
    with pytest.raises(UserError) as e:
        load_config(Toy, p)
    assert "epochz" in str(e.value) and str(p) in str(e.value)


def test_missing_config_lists_choices():
    with pytest.raises(UserError, match="--config"):
        config_path("no-such-config")


def test_save_round_trip(tmp_path):
    cfg = Toy(epochs=2, seeds=(3, 4))
    path = save_config(cfg, tmp_path / "resolved.yaml")
    d = yaml.safe_load(path.read_text())
    assert d.pop("_config_class") == "Toy"
    assert load_config(Toy, None, d) == cfg


def test_parse_overrides_types():
    assert parse_overrides(["a=1", "b=0.5", "c=true", "d=hello", "e="]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": "hello",
        "e": "",
    }
    # YAML 1.1 reads "2e-4" as a string; float fields still accept it
    assert load_config(Toy, None, ["lr=2e-4"]).lr == pytest.approx(2e-4)


def test_run_command_exit_code_2(capsys):
    def body(argv):
        raise UserError("data_dir: '/nope' does not exist; pass an existing folder")

    assert run_command("hmavd-x", body, []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hmavd-x: error: data_dir" in err


def test_packaged_configs_are_yaml_mappings():
    for name in available_configs():
        d = yaml.safe_load(config_path(name).read_text())
        assert isinstance(d, dict), name


def test_saved_config_loads_back_and_other_command_is_refused(tmp_path):
    import dataclasses

    from hmavd.config import save_config
    from hmavd.train import TrainConfig

    cfg = dataclasses.replace(load_config(TrainConfig, "nice"), epochs=3)
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config(TrainConfig, str(path)) == cfg

    @dataclasses.dataclass(frozen=True)
    class OtherConfig:
        epochs: int = 1

    with pytest.raises(UserError, match="saved from a TrainConfig"):
        load_config(OtherConfig, str(path))


NICE_ROWS = ("nice", "nice-sa", "nice-ga", "ablation-base")
HMAVD_ROWS = ("hmavd-63", "hmavd-17", "hmavd-63-sa", "hmavd-63-ga", "ablation-text", "ablation-full", "demo")


def test_nice_rows_train_nice_and_hmavd_rows_keep_their_projections():
    """NICE's Proj_img returns its input: the NICE rows train the EEG encoder + Proj_eeg only
    (1,802,496 parameters at 63 x 250 with 768-d CLIP features); HMAVD rows project every modality (Eq. 1)."""
    import torch

    from hmavd.train import TrainConfig, build_model

    counts = {}
    for name in NICE_ROWS + HMAVD_ROWS:
        cfg = load_config(TrainConfig, name)
        torch.manual_seed(0)
        counts[name] = build_model(cfg, 63, 250, 768).parameter_counts()
        assert cfg.image_projection == (name in HMAVD_ROWS), name
    assert counts["nice"] == counts["ablation-base"] == {"eeg": 1_802_496, "img": 0, "text": 0, "total": 1_802_496}
    assert counts["nice-sa"]["img"] == counts["nice-ga"]["img"] == 0
    assert counts["nice-sa"]["total"] == 1_815_470 and counts["nice-ga"]["total"] == 1_865_746
    assert counts["hmavd-63"] == {"eeg": 1_802_496, "img": 1_330_176, "text": 1_257_264, "total": 4_389_936}
    assert counts["ablation-text"]["img"] == 1_182_720  # projection without the image adapter
    assert load_config(TrainConfig, "nice-sa").sa_variant == "fixed"
    published = load_config(TrainConfig, "nice-sa", ["sa_variant=published"])
    assert build_model(published, 63, 250, 768).encoder.spatial.module.variant == "published"
    with pytest.raises(UserError, match="sa_variant"):
        load_config(TrainConfig, "nice-sa", ["sa_variant=nice"])
    with pytest.raises(UserError, match="mcdb_apply"):
        load_config(TrainConfig, "hmavd-63", ["mcdb_apply=adam"])


def test_measurement_sweeps_are_valid_training_overrides():
    """sweep-sigma and sweep-mcdb-apply: every grid entry resolves to a TrainConfig of the demo row."""
    from hmavd.analysis.common import AnalyzeConfig
    from hmavd.analysis.sweeps import parse_grid_entry
    from hmavd.train import TrainConfig

    expected = {"sweep-sigma": (10, "spr_sigma_max"), "sweep-mcdb-apply": (6, "seed")}
    for name, (n, key) in expected.items():
        cfg = load_config(AnalyzeConfig, name)
        assert len(cfg.sweep_grid) == len(cfg.sweep_labels) == n
        for entry in cfg.sweep_grid:
            ov = parse_grid_entry(entry)
            tc = load_config(
                TrainConfig, cfg.train_config, [*cfg.train_overrides, *(f"{k}={v}" for k, v in ov.items())]
            )
            assert tc.epochs == 20 and key in ov
    sigmas = {
        load_config(TrainConfig, "demo", [e.split(";")[0]]).spr_sigma_max
        for e in load_config(AnalyzeConfig, "sweep-sigma").sweep_grid
    }
    assert sigmas == {0.0, 1e-5, 1e-4, 1e-3, 1e-2}


# --------------------------------------------------------------------------- the config convention


def _command_configs():
    """Every command config of the tree, with one bad field each (built in Python, not from YAML)."""
    from bci.cli_present import PresentConfig
    from bci.cli_replay import ReplayConfig
    from bci.cli_virtual_amp import VirtualAmpConfig
    from bci.quality import QualityConfig
    from bci.virtual_amp import AmpSettings
    from hmavd.analysis.common import AnalyzeConfig
    from hmavd.cli.features import FeaturesConfig
    from hmavd.models.hmavd_model import ModelConfig
    from hmavd.preprocessing.prepare import PrepareConfig
    from hmavd.simulate_config import SimulateConfig

    return [
        (PrepareConfig, "chunk_size", 0),
        (PrepareConfig, "max_reps_test", -3),
        (FeaturesConfig, "batch_size", 0),
        (AnalyzeConfig, "template", "video"),
        (SimulateConfig, "snr", 0.0),
        (SimulateConfig, "noise_ar", 1.5),
        (ModelConfig, "tau", -0.07),
        (ReplayConfig, "replay_speed", 0.0),
        (PresentConfig, "refresh_hz", -60.0),
        (AmpSettings, "sfreq", 20.0),
        (VirtualAmpConfig, "duration_s", -1.0),
        (VirtualAmpConfig, "sfreq", 20.0),  # the inherited amplifier fields are checked too
        (QualityConfig, "window_s", 0.0),
        (QualityConfig, "rail_fraction", 1.5),
    ]


@pytest.mark.parametrize("index", range(14))
def test_every_command_config_validates_on_construction(index):
    import dataclasses

    from hmavd.config import ValidatedConfig

    cls, field, bad = _command_configs()[index]
    assert issubclass(cls, ValidatedConfig)
    good = cls()  # the defaults construct
    with pytest.raises(UserError) as e:
        cls(**{field: bad})
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{field}: {bad!r}" if isinstance(bad, str) else f"{field}: {bad}")
    assert len(msg) > len(f"{field}: {bad}") + 10  # says what to do, not only what is wrong
    with pytest.raises(UserError, match=f"^{field}"):
        dataclasses.replace(good, **{field: bad})  # replace() builds a new one: checked as well
    callable(good.validate) and good.validate()  # validate() stays callable on a good config


def test_command_config_table_is_complete():
    """Every frozen config class in the command modules is in the table above (a new one gets a row)."""
    import importlib
    import inspect

    modules = [
        "hmavd.preprocessing.prepare",
        "hmavd.cli.features",
        "hmavd.analysis.common",
        "hmavd.simulate_config",
        "hmavd.models.hmavd_model",
        "bci.cli_replay",
        "bci.cli_present",
        "bci.cli_virtual_amp",
        "bci.virtual_amp",
        "bci.quality",
    ]
    found = set()
    for name in modules:
        mod = importlib.import_module(name)
        for obj in vars(mod).values():
            if inspect.isclass(obj) and obj.__module__ == name and obj.__name__.endswith(("Config", "Settings")):
                found.add(obj)
    assert found == {cls for cls, _, _ in _command_configs()}


def test_validation_reads_no_file_and_runs_once_per_construction(tmp_path, monkeypatch):
    """Construction never needs a file; files are checked when the command runs (check_inputs / run time)."""
    from hmavd.preprocessing.prepare import PrepareConfig
    from hmavd.simulate_config import SimulateConfig

    missing = str(tmp_path / "nope")
    assert PrepareConfig(raw_dir=missing).raw_dir == missing
    cfg = SimulateConfig(features_from=missing)  # constructs: the file is read by check_inputs
    with pytest.raises(UserError, match="features_from"):
        cfg.check_inputs()
    with pytest.raises(UserError, match="features_from"):
        cfg.validate()  # the whole check, as simulate_dataset runs it before writing
    calls = []
    monkeypatch.setattr(PrepareConfig, "validate", lambda self: calls.append(self))
    load_config(PrepareConfig, None, ["subject=2"])
    assert len(calls) == 2  # the overrides' pre-check and the result, each once: no second validate() call


def test_loader_rejects_unknown_keys_of_every_command_config():
    for cls, _, _ in _command_configs():
        with pytest.raises(UserError, match=f"unknown config key 'bogus_key'.*{cls.__name__}"):
            load_config(cls, None, {"bogus_key": 1})


def test_command_config_from_flags_and_overrides_and_its_printout(tmp_path):
    """The commands' shared path: --config, then the flags given (None = absent), then key=value (wins)."""
    import argparse

    from hmavd.config import config_yaml, load_command_config

    (tmp_path / "c.yaml").write_text("epochs: 7\nname: file\n")
    args = argparse.Namespace(config=str(tmp_path / "c.yaml"), overrides=["lr=0.5"], name="flag", window=None)
    cfg = load_command_config(Toy, args, ("name", "window"))
    assert cfg == Toy(epochs=7, lr=0.5, name="flag")  # window=None was not given: the default stays
    args.overrides = ["name=override"]
    assert load_command_config(Toy, args, ("name",)).name == "override"
    assert yaml.safe_load(config_yaml(cfg)) == {**dataclasses.asdict(cfg), "seeds": [0]}
    assert list(yaml.safe_load(config_yaml(cfg))) == [f.name for f in dataclasses.fields(Toy)]  # field order
    args.bogus = 3
    with pytest.raises(UserError, match="unknown config key 'bogus'"):
        load_command_config(Toy, args, ("bogus",))


def test_every_packaged_config_loads_into_exactly_one_command_config():
    """A renamed or misspelt key in a packaged YAML fails here (unknown keys are refused), not in a user's run."""
    from bci.live_config import LiveConfig
    from hmavd.train import TrainConfig

    classes = {cls for cls, _, _ in _command_configs()} | {TrainConfig, LiveConfig}
    for name in available_configs():
        fits = []
        for cls in classes:
            try:
                load_config(cls, name)
            except UserError:
                continue
            fits.append(cls.__name__)
        assert len(fits) == 1, (name, fits)

"""Settings: defaults < preset < config file < flags, validated with messages that say what was expected."""

from __future__ import annotations

import pytest

from sparta.train.config import ConfigError, RunConfig, resolve
from sparta.train.presets import PRESETS, preset_settings


def test_defaults_are_the_quick_start_run():
    c = RunConfig().validate()
    assert (c.dataset, c.algo, c.activation, c.hidden, c.epsilon, c.compare_dense) == (
        "digits", "set", "allrelu", [1000, 1000, 1000], 20.0, True)


def test_presets_have_the_published_settings():
    f = resolve("set-mlp-fashionmnist")
    assert (f.hidden, f.epsilon, f.zeta, f.lr, f.momentum, f.weight_decay, f.dropout, f.batch_size, f.alpha) == (
        [1000, 1000, 1000], 20.0, 0.3, 0.01, 0.9, 2e-4, 0.3, 128, 0.6)
    c = resolve("set-mlp-cifar10")
    assert (c.hidden, c.alpha, c.epsilon, c.dataset) == ([4000, 1000, 4000], 0.75, 20.0, "cifar10")
    m = resolve("set-mlp-madelon")
    assert (m.hidden, m.init, m.activation, m.loss) == ([400, 100, 400], "xavier_uniform", "relu", "mse")
    for name in PRESETS:
        assert resolve(name).preset == name


def test_layering(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('preset = "set-mlp-fashionmnist"\nepochs = 7\nlr = 0.05\ndensity = 0.1\n'
                    '[data_options]\ntest_fraction = 0.5\n')
    c = resolve(None, toml, {"lr": 0.2})
    assert (c.preset, c.epochs, c.lr, c.density, c.epsilon, c.dropout) == ("set-mlp-fashionmnist", 7, 0.2, 0.1, None, 0.3)
    assert c.data_options == {"test_fraction": 0.5}
    assert resolve("set-mlp-madelon", toml).preset == "set-mlp-madelon"  # an explicit preset wins over the file's


def test_config_roundtrip(tmp_path):
    c = resolve("set-mlp-madelon", overrides={"epochs": 3})
    c.save(tmp_path / "config.json")
    assert RunConfig.load(tmp_path / "config.json") == c


@pytest.mark.parametrize("values,message", [
    ({"epochs": -1}, "epochs must be a positive int, got -1"),
    ({"epochs": 2.5}, "epochs must be a positive int, got 2.5"),
    ({"density": 1.5}, r"density must be a number in \(0, 1\], got 1.5"),
    ({"dropout": 1.0}, r"dropout must be a number in \[0, 1\), got 1.0"),
    ({"lr": 0}, r"lr must be a number in \(0, inf\), got 0"),
    ({"algo": "magic"}, "algo must be one of dense, static, set, rigl, gmp; got 'magic'"),
    ({"hidden": []}, "hidden must be a non-empty list"),
    ({"hidden": [10, 0]}, "hidden sizes must be a positive int, got 0"),
    ({"density": 0.1, "epsilon": 3.0}, "give density or epsilon, not both"),
    ({"zeta": 1.0}, r"zeta must be a number in \[0, 1\), got 1.0"),
    ({"learning_rate": 0.1}, "unknown setting 'learning_rate'"),
])
def test_bad_values(values, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


def test_bad_files_and_presets(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset 'set-mlp-imagenet'; known presets: set-mlp-fashionmnist"):
        preset_settings("set-mlp-imagenet")
    with pytest.raises(ConfigError, match="config file not found"):
        resolve(None, tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve(None, bad)
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 3\nhidden: [8, 8]\n")
    pytest.importorskip("yaml")
    assert resolve(None, y).hidden == [8, 8]

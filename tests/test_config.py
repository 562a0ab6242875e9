"""Config precedence (defaults < recipe < overrides) and the errors a user sees."""
import re

import pytest

from snnkit.config import Config, config_from_dict, recipe_names, resolve_config
from snnkit.errors import ConfigError, SnnkitError


def test_default_recipe_is_digits_with_rate_m():
    cfg = resolve_config()
    assert (cfg.recipe, cfg.data.name, cfg.model.name, cfg.method.name, cfg.method.T) == (
        "digits", "digits", "digits_convnet", "rate_m", 4)
    assert "digits" in recipe_names()


def test_precedence_defaults_then_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("optim:\n  lr: 0.05\n  epochs: 3\nmethod:\n  name: bptt\n  layout: single\n")
    cfg = resolve_config(recipe, ["optim.lr=0.01", "neuron.decay=0.5"])
    assert cfg.recipe == "mine"
    assert cfg.optim.lr == 0.01  # override beats YAML
    assert cfg.optim.epochs == 3  # YAML beats default
    assert cfg.optim.momentum == Config().optim.momentum  # default
    assert cfg.neuron.decay == 0.5
    assert cfg.method.options == {"layout": "single"}


def test_resolved_config_round_trips():
    cfg = resolve_config(None, ["method.name=bptt", "method.layout=single", "run.name=x"])
    assert config_from_dict(cfg.to_dict()) == cfg
    assert cfg.digest() == config_from_dict(cfg.to_dict()).digest()


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=1", "unknown key optim.lrr; valid keys in optim: name, lr, momentum"),
    ("optimiser.lr=1", "unknown section 'optimiser'; valid sections: data, model, neuron, method, optim, run"),
    ("optim.lr=fast", "optim.lr expects float, got 'fast'"),
    ("optim.epochs=2.5", "optim.epochs expects int, got 2.5"),
    ("method.name=magic", "unknown method 'magic'; choose one of: bptt"),
    ("method.layout=diagonal", "unknown key method.layout for method 'rate_m'; valid keys: name, T, grad_scale, beta, divide_grad_by_T"),
    ("neuron.reset=medium", "neuron.reset must be one of ['hard', 'soft', 'subtract_next']"),
    ("run.dtype=float16", "run.dtype must be one of float32, float64, got 'float16'"),
    ("lr", "override 'lr' must look like section.key=value"),
    ("optim=1", "key 'optim' must be section.key"),
])
def test_bad_overrides_name_the_valid_choices(override, message):
    with pytest.raises(SnnkitError, match=re.escape(message)):
        resolve_config(None, [override])


def test_bad_method_option_value():
    with pytest.raises(ConfigError, match="method.layout must be one of multi, single"):
        resolve_config(None, ["method.name=bptt", "method.layout=diagonal"])


def test_missing_and_unknown_recipes(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown recipe 'cifar1'; give a YAML path or one of: .*digits"):
        resolve_config("cifar1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        resolve_config(bad)

"""One config object; one function decides precedence: defaults < YAML recipe < overrides.

Overrides are ``section.key=value`` strings (``--set`` and the CLI's first-class options); values
are parsed as YAML scalars. Unknown keys and ill-typed values raise :class:`ConfigError` naming
the valid choices. The ``method`` section holds ``name``, ``T`` and the chosen method's options.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional

import yaml

from .digest import config_hash
from .errors import ConfigError
from .layout import DEFAULT_OUT_DIR, LATEST_NAME
from .neuron import NeuronParams

DEFAULT_RECIPE = "digits"
AMP_CHOICES = ("none", "bf16", "fp16")
DTYPE_CHOICES = ("float32", "float64")
RESERVED_NAMES = (LATEST_NAME,)  # <out_dir>/latest is the link to the newest run


def require(ok: bool, key: str, rule: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key} must be {rule}, got {value!r}")


@dataclass(frozen=True)
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None  # where the dataset's files are; not used by embedded datasets
    batch_size: int = 64
    workers: int = 0
    val_fraction: float = 0.1  # of the training set, held out for model selection (best.pt)

    def __post_init__(self):
        require(self.batch_size >= 1, "data.batch_size", "at least 1", self.batch_size)
        require(0 < self.val_fraction < 1, "data.val_fraction", "between 0 and 1 (0.1 is 10 %)", self.val_fraction)
        require(self.workers >= 0, "data.workers", "0 or more", self.workers)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "digits_convnet"  # a registered model, or package.module:function, file.py:function, spikingjelly:NAME
    width: float = 1.0  # multiplier on every channel count (snnkit's own models)
    kwargs: dict = field(default_factory=dict)  # keyword arguments of a model of your own

    def __post_init__(self):
        require(self.width > 0, "model.width", "positive", self.width)


@dataclass(frozen=True)
class MethodConfig:
    name: str = "rate_m"
    T: int = 4
    options: dict = field(default_factory=dict)  # the method's own options, given flat in YAML

    def __post_init__(self):
        require(self.T >= 1, "method.T", "at least 1", self.T)


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"  # sgd (momentum) or adamw
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4  # conv/linear weights only; BN parameters and biases get none
    epochs: int = 30
    schedule: str = "cosine"  # cosine to 0, stepped per epoch; or constant

    def __post_init__(self):
        require(self.lr > 0, "optim.lr", "positive", self.lr)
        require(0 <= self.momentum < 1, "optim.momentum", "in [0, 1)", self.momentum)
        require(self.weight_decay >= 0, "optim.weight_decay", "0 or more", self.weight_decay)
        require(self.epochs >= 1, "optim.epochs", "at least 1", self.epochs)


@dataclass(frozen=True)
class RunConfig:
    name: Optional[str] = None  # run directory name; default <recipe>-<method>-<time>
    out_dir: str = DEFAULT_OUT_DIR
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present), cpu, cuda, cuda:N; under torchrun cuda:LOCAL_RANK
    amp: str = "none"  # autocast the model in bf16 or fp16 (with a gradient scaler); none: fp32
    dtype: str = "float32"  # the parameters' and inputs' dtype; float64: gradients to round-off, for checks
    tf32: bool = True  # CUDA: fp32 matmuls and convolutions may use TF32
    deterministic: bool = False  # deterministic kernels, cuDNN benchmark off
    sync_bn: bool = False  # under torchrun, BatchNorm statistics over the global batch
    # per-step methods (rate_s, bptt layout=single, the online methods): before each held-out
    # evaluation, re-estimate BN's running statistics over this many training batches with the
    # evaluated multi-step forward; 0: keep the training estimate. Multi-step methods ignore it.
    bn_recalibration_batches: int = 64

    def __post_init__(self):
        require(self.amp in AMP_CHOICES, "run.amp", f"one of {', '.join(AMP_CHOICES)}", self.amp)
        require(self.dtype in DTYPE_CHOICES, "run.dtype", f"one of {', '.join(DTYPE_CHOICES)}", self.dtype)
        require(self.dtype == "float32" or self.amp == "none", "run.dtype",
                "float32 when run.amp is bf16 or fp16 (autocast lowers float32)", self.dtype)
        require(self.seed >= 0, "run.seed", "0 or more", self.seed)
        require(self.bn_recalibration_batches >= 0,
                "run.bn_recalibration_batches", "a whole number of batches, 0 or more (0: off)",
                self.bn_recalibration_batches)
        require(bool(self.out_dir), "run.out_dir", "a folder", self.out_dir)
        require(self.name is None or (self.name not in RESERVED_NAMES and Path(self.name).name == self.name
                                      and not self.name.startswith(".")),
                "run.name", "a plain folder name (no '/', not starting with '.', not 'latest')", self.name)


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    neuron: NeuronParams = field(default_factory=NeuronParams)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    recipe: str = DEFAULT_RECIPE

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["method"] = {"name": self.method.name, "T": self.method.T, **self.method.options}
        return d

    def digest(self) -> str:
        """A short hash of the resolved config (recorded in checkpoints and ONNX metadata)."""
        return config_hash(self.to_dict())


SECTIONS = {f.name: f.type for f in dataclasses.fields(Config) if f.name != "recipe"}
SECTION_TYPES = typing.get_type_hints(Config)
METHOD_KEYS = ("name", "T")


def recipe_names() -> list[str]:
    return sorted(p.stem for p in resources.files("snnkit.configs").iterdir() if p.name.endswith(".yaml"))


def read_recipe(recipe: str | Path) -> tuple[str, dict]:
    """A recipe is a YAML path or the name of a bundled one; returns (name, its mapping)."""
    path = Path(recipe)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; give a YAML path or one of: "
                              f"{', '.join(recipe_names())}")
        text, name = path.read_text(), path.stem
    else:
        if str(recipe) not in recipe_names():
            raise ConfigError(f"unknown recipe {recipe!r}; give a YAML path or one of: {', '.join(recipe_names())}")
        text, name = resources.files("snnkit.configs").joinpath(f"{recipe}.yaml").read_text(), str(recipe)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{recipe} is not valid YAML ({e.problem}); fix the file and retry") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{recipe} must hold a mapping of sections ({', '.join(SECTIONS)})")
    return name, data


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=0.05")
    return key.strip().split("."), yaml.safe_load(value) if value.strip() else None


def merge(tree: dict, path: list[str], value: Any, source: str) -> None:
    if len(path) != 2:
        raise ConfigError(f"{source}: key {'.'.join(path)!r} must be section.key with a section in "
                          f"{', '.join(SECTIONS)}")
    section, key = path
    if section not in SECTIONS:
        raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(SECTIONS)}")
    tree.setdefault(section, {})[key] = value


def resolve_config(recipe: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults < the recipe's YAML < ``overrides``; returns a validated :class:`Config`."""
    name, data = read_recipe(recipe or DEFAULT_RECIPE)
    tree: dict[str, dict] = {}
    for section, values in data.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{name}: section {section!r} must be a mapping of keys to values")
        for key, value in values.items():
            merge(tree, [section, str(key)], value, name)
    for text in overrides:
        path, value = parse_override(text)
        merge(tree, path, value, "override")
    return build_config(tree, name)


def build_config(tree: dict[str, dict], recipe: str = DEFAULT_RECIPE) -> Config:
    sections = {}
    for section, values in tree.items():
        cls = SECTION_TYPES[section]
        if cls is MethodConfig:
            sections[section] = build_method_config(values)
        else:
            sections[section] = build_section(cls, section, values)
    return Config(recipe=recipe, **sections)


def build_section(cls: type, section: str, values: dict) -> Any:
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key {section}.{unknown[0]}; valid keys in {section}: {', '.join(hints)}")
    checked = {k: check_type(f"{section}.{k}", v, hints[k]) for k, v in values.items()}
    try:
        return cls(**checked)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def build_method_config(values: dict) -> MethodConfig:
    from .methods import METHODS, option_names  # the registry, not the training loop

    base = {k: v for k, v in values.items() if k in METHOD_KEYS}
    cfg = build_section(MethodConfig, "method", base)
    options = {k: v for k, v in values.items() if k not in METHOD_KEYS}
    cls = METHODS.get(cfg.name)
    hints = typing.get_type_hints(cls.Options)
    unknown = sorted(set(options) - set(hints))
    if unknown:
        raise ConfigError(f"unknown key method.{unknown[0]} for method {cfg.name!r}; valid keys: "
                          f"{', '.join([*METHOD_KEYS, *option_names(cfg.name)])}")
    checked = {k: check_type(f"method.{k}", v, hints[k]) for k, v in options.items()}
    try:
        cls.Options(**checked)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return dataclasses.replace(cfg, options=checked)


def check_type(key: str, value: Any, expected: Any) -> Any:
    """Accept ``value`` for a field annotated ``expected`` (int, float, bool, str, Optional[...])."""
    options = typing.get_args(expected) if typing.get_origin(expected) is typing.Union else (expected,)
    if value is None and type(None) in options:
        return None
    for t in options:
        if t is bool and isinstance(value, bool):
            return value
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is float and (number := as_float(value)) is not None:
            require(math.isfinite(number), key, "a finite number", value)
            return number
        if t is str and isinstance(value, str):
            return value
        if t is dict and isinstance(value, dict):
            return value
    names = " or ".join("null" if t is type(None) else t.__name__ for t in options)
    raise ConfigError(f"{key} expects {names}, got {value!r}")


def as_float(value: Any) -> Optional[float]:
    """A number, or a string that reads as one: YAML 1.1 (PyYAML) reads ``1e-3`` as a string."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def config_from_dict(d: dict) -> Config:
    """Rebuild a resolved config (as saved by :meth:`Config.to_dict`)."""
    d = dict(d)
    recipe = d.pop("recipe", DEFAULT_RECIPE)
    return build_config(d, recipe)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)

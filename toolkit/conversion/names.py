"""``model.name`` for a model of your own: a function returning an ``nn.Module``, named as

- ``spikingjelly:NAME`` — a builder of SpikingJelly's model zoo (``spiking_resnet``, ``sew_resnet``,
  ``spiking_vgg``, ``parametric_lif_net``, ``ms_resnet``), e.g. ``spikingjelly:sew_resnet18``;
- ``package.module:function`` — imported from the Python path;
- ``path/to/file.py:function`` — the file loaded as a module.

``model.kwargs`` are the function's keyword arguments. For the zoo, ``spiking_neuron`` may name a
neuron (``LIFNode``) or be a mapping ``{type: LIFNode, tau: 2.0, ...}`` whose other keys go to every
neuron, and ``surrogate_function`` (there or at the top level) names ``Sigmoid`` or ``ATan``, or is
``{name: ATan, alpha: 2.0}``. The returned model is converted with :func:`snnkit.conversion.convert`.

Importing a module runs its code. A checkpoint or a run's config is data, so snnkit imports the
module a ``package.module:`` or ``file.py:`` name points at only when the user names it too
(:func:`snnkit.models.naming`, the CLI's ``--model``); the zoo's names run only SpikingJelly's code.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..errors import ConfigError

ZOO = "spikingjelly"
ZOO_MODULES = ("spiking_resnet", "sew_resnet", "spiking_vgg", "parametric_lif_net", "ms_resnet")
ZOO_NEURONS = ("LIFNode", "IFNode", "ParametricLIFNode")
ZOO_SURROGATES = ("Sigmoid", "ATan")


def is_external(name: str) -> bool:
    """Whether ``name`` names a model outside snnkit's registry."""
    return ":" in name


def is_user_code(name: str) -> bool:
    """Whether building ``name`` imports a module the user chose (not the zoo)."""
    return is_external(name) and name.partition(":")[0] != ZOO


def zoo_builder(fn: str) -> Callable[..., nn.Module]:
    for module_name in ZOO_MODULES:
        module = importlib.import_module(f"spikingjelly.activation_based.model.{module_name}")
        obj = vars(module).get(fn)
        if callable(obj) and not fn.startswith("_") and getattr(obj, "__module__", None) == module.__name__:
            return obj
    raise ConfigError(f"{ZOO}:{fn} is not in SpikingJelly's model zoo; give a builder of "
                      f"{', '.join(ZOO_MODULES)} (e.g. {ZOO}:sew_resnet18)")


def import_file(path: Path):
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give a Python file as path/to/file.py:function")
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(f"snnkit_user_model_{path.stem}_{digest}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def user_function(name: str) -> Callable[..., nn.Module]:
    where, _, fn = name.rpartition(":")
    if not where or not fn:
        raise ConfigError(f"model.name {name!r} must look like package.module:function, path/to/file.py:function "
                          f"or {ZOO}:sew_resnet18")
    try:
        module = import_file(Path(where)) if where.endswith(".py") else importlib.import_module(where)
    except ConfigError:
        raise
    except Exception as e:  # its own import failed: a missing package, an error in its code
        raise ConfigError(f"cannot import {where} for model {name} ({type(e).__name__}: {' '.join(str(e).split())}); "
                          "install it or run where it can be imported") from None
    obj = getattr(module, fn, None)
    if not callable(obj):
        raise ConfigError(f"{where} has no function {fn}; model.name must name a function returning an nn.Module")
    return obj


def split(value: Any, key: str) -> tuple[Any, dict[str, Any]]:
    """``"Name"`` or ``{key: Name, **params}`` -> (Name, params)."""
    if not isinstance(value, dict):
        return value, {}
    return value.get(key), {k: v for k, v in value.items() if k != key}


def zoo_surrogate(value: Any):
    from spikingjelly.activation_based import surrogate

    name, params = split(value, "name")
    if name not in ZOO_SURROGATES:
        raise ConfigError(f"surrogate_function {value!r} must be one of {', '.join(ZOO_SURROGATES)} or "
                          "{name: ATan, alpha: 2.0}")
    return getattr(surrogate, name)(**params)


def zoo_neuron(value: Any):
    from spikingjelly.activation_based import neuron

    kind, params = split(value, "type")
    if kind not in ZOO_NEURONS:
        raise ConfigError(f"spiking_neuron {value!r} must be one of {', '.join(ZOO_NEURONS)} or a mapping "
                          "{type: LIFNode, tau: 2.0, ...}")
    if "surrogate_function" in params:
        params["surrogate_function"] = zoo_surrogate(params["surrogate_function"])
    if "tau" in params:
        params["tau"] = float(params["tau"])  # SpikingJelly asserts a float
    return functools.partial(getattr(neuron, kind), **params)


def zoo_kwargs(fn: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    out = dict(kwargs)
    if "spiking_neuron" not in out:
        raise ConfigError(f"{ZOO}:{fn} needs its neuron: set model.kwargs.spiking_neuron to one of "
                          f"{', '.join(ZOO_NEURONS)} or {{type: LIFNode, tau: 2.0, ...}}")
    out["spiking_neuron"] = zoo_neuron(out["spiking_neuron"])
    if "surrogate_function" in out:
        out["surrogate_function"] = zoo_surrogate(out["surrogate_function"])
    return out


def build_user_model(name: str, kwargs: dict[str, Any]) -> nn.Module:
    """The ``nn.Module`` that ``name`` (see the module docstring) builds with ``kwargs``."""
    where, _, fn = name.rpartition(":")
    builder, args = (zoo_builder(fn), zoo_kwargs(fn, kwargs)) if where == ZOO else (user_function(name), dict(kwargs))
    try:
        inspect.signature(builder).bind(**args)
    except TypeError as e:
        raise ConfigError(f"model.kwargs do not fit {name} ({e}); give the keyword arguments it takes") from None
    except ValueError:  # no signature to read (a builtin): let the call say
        pass
    try:
        model = builder(**args)
    except (TypeError, ValueError, AssertionError) as e:
        raise ConfigError(f"{name} failed on model.kwargs ({type(e).__name__}: {' '.join(str(e).split())}); "
                          "check model.kwargs") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{name} returned a {type(model).__name__}, not an nn.Module")
    return model

"""``snnkit list [recipes|models|methods|datasets]``: the names the registries hold."""
from __future__ import annotations

import importlib
from typing import Annotated, Optional

import typer

from snnkit.registry import Registry

from .common import fail, one_of, say


# Each kind's registry, imported only when listed (datasets load torchvision): module, attribute.
SOURCES = {"recipes": ("snnkit.config", "recipe_names"), "models": ("snnkit.models", "MODELS"),
           "methods": ("snnkit.methods", "METHODS"), "datasets": ("snnkit.data", "DATASETS")}


def registered(kind: str) -> list[str]:
    """The names of ``kind``, read from its registry (recipes: the bundled YAML files)."""
    module, attribute = SOURCES[kind]
    source = getattr(importlib.import_module(module), attribute)
    return source.names() if isinstance(source, Registry) else source()


def list_command(
    kind: Annotated[Optional[str], typer.Argument(metavar=one_of(SOURCES),
                                                  help="What to list (default: all four).")] = None,
) -> None:
    """List the bundled recipes, registered models, training methods and datasets.

    Given a kind, one name per line (for scripts); without, one line per kind."""
    if kind is not None and kind not in SOURCES:
        raise fail(f"cannot list {kind!r}; choose one of: {', '.join(SOURCES)}")
    if kind is not None:
        for name in registered(kind):
            say(name)
        return
    for k in SOURCES:
        say(f"{k}: {', '.join(registered(k))}")

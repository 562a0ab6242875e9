"""``snnkit train [CONFIG] [options]``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.config import AMP_CHOICES, DEFAULT_RECIPE, recipe_names, resolve_config
from snnkit.methods import METHODS

from .common import one_of, say, user_errors

DEVICES = ("auto", "cpu", "cuda", "cuda:N")


def train(
    config: Annotated[Optional[str], typer.Argument(
        help=f"A YAML recipe path or a bundled recipe: {', '.join(recipe_names())} (default: {DEFAULT_RECIPE}).")]
    = None,
    method: Annotated[Optional[str], typer.Option(
        metavar="METHOD", help=f"Training method: {', '.join(METHODS.names())}.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Number of epochs.")] = None,
    T: Annotated[Optional[int], typer.Option("--T", "-T", help="Time steps per sample.")] = None,
    device: Annotated[Optional[str], typer.Option(
        metavar=one_of(DEVICES), help="Where to train (auto: CUDA when present).")] = None,
    amp: Annotated[Optional[str], typer.Option(
        metavar=one_of(AMP_CHOICES), help="Mixed precision on the model.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run directory name under run.out_dir.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any config key: --set section.key=value (repeatable), e.g. model.name or data.name "
                      "(`snnkit list models`, `snnkit list datasets`).")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run in this directory from its last checkpoint.")] = None,
    model: Annotated[Optional[str], typer.Option(
        "--model", help="With --resume: import this model of your own (package.module:function or "
                        "file.py:function) that the run names. Importing runs that code: naming it is your own "
                        "act, and a run's files alone never import anything.")] = None,
) -> None:
    """Train a spiking network. Precedence: defaults < recipe YAML < --set and the options above.
    Under ``torchrun --nproc_per_node=N``, data.batch_size is the global batch over the N processes."""
    from snnkit.errors import ConfigError
    from snnkit.models import naming
    from snnkit.training import resume as resume_run, train as train_run
    from snnkit.training.distributed import is_main_process

    with user_errors(lower="data.batch_size or method.T"):
        if model is not None and resume is None:
            raise ConfigError(f"--model is for --resume; to train {model}, give --set model.name={model}")
        if resume is not None:
            with naming(model):
                result = resume_run(resume)
        else:
            flags = {"method.name": method, "optim.epochs": epochs, "method.T": T, "run.device": device,
                     "run.amp": amp, "run.seed": seed, "run.name": name}
            # Strings quoted, so that --name 007 stays the string "007" (YAML would read a number).
            overrides = [*(set_ or []), *(f"{k}={json.dumps(v) if isinstance(v, str) else v}"
                                          for k, v in flags.items() if v is not None)]
            result = train_run(resolve_config(config, overrides))
    if is_main_process():
        done = "already finished; nothing changed: " if result.already_finished else ""
        say(f"{done}final test accuracy {result.final_acc:.2%}; best.pt (epoch {result.best_epoch}, selected on "
            f"val acc {result.best_val_acc:.2%}) test accuracy {result.best_acc:.2%}; {result.seconds:.1f}s; "
            f"run in {result.run_dir}")

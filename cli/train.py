"""``snnkit train [CONFIG] [options]``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from snnkit.config import resolve_config

from .common import console, user_errors


def train(
    config: Annotated[Optional[str], typer.Argument(
        help="A YAML recipe path or the name of a bundled recipe (default: digits).")] = None,
    method: Annotated[Optional[str], typer.Option(help="Training method, e.g. rate_m, rate_s, bptt.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Number of epochs.")] = None,
    T: Annotated[Optional[int], typer.Option("--T", "-T", help="Time steps per sample.")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    amp: Annotated[Optional[str], typer.Option(help="Mixed precision on the model: none, bf16 or fp16.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed.")] = None,
    name: Annotated[Optional[str], typer.Option(help="Run directory name under run.out_dir.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option(
        "--set", help="Override any config key: --set section.key=value (repeatable).")] = None,
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

    with user_errors():
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
        console.print(f"{done}final test accuracy {result.final_acc:.2%}, best {result.best_acc:.2%} "
                      f"(epoch {result.best_epoch}), {result.seconds:.1f}s; run in {result.run_dir}",
                      markup=False, highlight=False, soft_wrap=True)

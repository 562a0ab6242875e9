"""A run from start to end: ``train`` claims a new run directory, ``resume`` reopens one; whatever
stops a run early leaves it resumable or removes it (see :mod:`.rundir`), and says which."""
from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

import yaml

from ..checkpoint import CHECKPOINT_NAME, CONFIG_NAME, load_checkpoint
from ..config import Config, config_from_dict, dump_yaml
from ..data import DataBundle
from ..errors import CheckpointError, ConfigError, DivergedError, SnnkitError, out_of_memory
from ..files import atomic_write_text
from ..models import require_named
from .distributed import process_group
from .progress import EpochProgress
from .rundir import RunDir, claim, reopen
from .trainer import RunResult, Trainer

log = logging.getLogger("snnkit.train")


def default_name(cfg: Config) -> str:
    return f"{cfg.recipe}-{cfg.method.name}-{time.strftime('%Y%m%d-%H%M%S')}"


@contextmanager
def stopping_cleanly(trainer: Trainer, run: RunDir) -> Iterator[None]:
    """Whatever ends the run releases its lock. Whatever stops it early removes it if it has no
    checkpoint yet (``runs/latest`` never pointed at it) and, when a user can act on the cause, says
    in the same sentence what is kept."""
    try:
        yield
    except BaseException as e:
        if not (run.path / CHECKPOINT_NAME).exists():
            run.discard()
            state = f"{run.path} had no checkpoint yet and was removed"
        elif trainer.saved_epoch == 0:
            state = f"{run.path} was left as it was"
        elif isinstance(e, DivergedError):
            state = f"{run.path} keeps its last good checkpoint (epoch {trainer.saved_epoch})"
        else:
            state = (f"{run.path} keeps the checkpoint of epoch {trainer.saved_epoch}: continue with "
                     f"`snnkit train --resume {run.path}`")
        if isinstance(e, (SnnkitError, KeyboardInterrupt)):
            raise type(e)(f"{e}; {state}" if str(e) else state) from None
        if out_of_memory(e):
            cause = str(e).strip().splitlines()[0]
            raise SnnkitError(f"out of memory in epoch {trainer.epoch + 1} ({cause}); lower data.batch_size "
                              f"or method.T; {state}") from None
        raise
    finally:
        run.release()


def train(cfg: Config, progress: Optional[EpochProgress] = None,
          data: Optional[DataBundle] = None) -> RunResult:
    """Train ``cfg`` in a new run directory (``<out_dir>/<name>``, see :mod:`.rundir`), on ``data`` if
    given, else on the dataset ``cfg.data`` names. Under torchrun, every process calls this."""
    with process_group(cfg.run.device) as world:
        trainer = Trainer(cfg, None, data, world)  # every start-up error comes before any file
        run = world.on_main(lambda: claim(cfg.run.out_dir, cfg.run.name, default_name(cfg)))
        trainer.run_dir = run.path
        with stopping_cleanly(trainer, run):
            if world.is_main:
                atomic_write_text(run.path / CONFIG_NAME, dump_yaml(cfg))
            log.info("run %s: %s on %s with %s, T=%d, %d epochs, device %s, %d process(es)", run.path,
                     cfg.model.name, cfg.data.name, cfg.method.name, cfg.method.T, cfg.optim.epochs,
                     trainer.device, world.size)
            return execute(trainer, progress)


def read_run_config(run_dir: Path) -> Config:
    """The resolved config a run was started with (its ``config.yaml``)."""
    try:
        return config_from_dict(yaml.safe_load((run_dir / CONFIG_NAME).read_text()))
    except (OSError, yaml.YAMLError, AttributeError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{run_dir / CONFIG_NAME} is damaged ({e}); start a new run instead") from None


def finished_result(run_dir: Path, ckpt: dict, cfg: Config) -> Optional[RunResult]:
    """The recorded result of a run that has trained all its epochs, or None."""
    if ckpt["train_state"].get("epoch", 0) < cfg.optim.epochs:
        return None
    try:
        r = json.loads((run_dir / "results.json").read_text())
        return RunResult(run_dir, r["test_acc_final"], r["test_acc_best"], r["best_epoch"], r["seconds"],
                         r["best_val_acc"], already_finished=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # stopped before writing results.json: resuming writes it


def resume(run_dir: str | Path, progress: Optional[EpochProgress] = None,
           data: Optional[DataBundle] = None) -> RunResult:
    """Continue the run in ``run_dir`` from its last checkpoint, with the config it was started with
    (on as many processes as now launched: the global batch, and so the result, is unchanged). A run
    that has finished is left as it is; one that stopped before its first checkpoint (its process
    was killed) starts again from its ``config.yaml``."""
    path = Path(run_dir)
    folder = path.parent if path.is_file() else path
    restart = folder.is_dir() and not (folder / CHECKPOINT_NAME).exists() and (folder / CONFIG_NAME).is_file()
    ckpt = None if restart else load_checkpoint(path)
    cfg = read_run_config(folder) if ckpt is None else config_from_dict(ckpt["config"])
    require_named(cfg.model.name, f"the run {folder}")
    done = None if ckpt is None else finished_result(folder, ckpt, cfg)
    if done is not None:
        return done
    with process_group(cfg.run.device) as world:
        trainer = Trainer(cfg, folder, data, world)
        run = world.on_main(lambda: reopen(folder))
        with stopping_cleanly(trainer, run):
            if ckpt is None:
                if world.is_main:
                    run.clear(keep=(CONFIG_NAME,))
            else:
                trainer.restore(ckpt)
            log.info("resuming %s at epoch %d/%d", folder, trainer.epoch, cfg.optim.epochs)
            return execute(trainer, progress)


def execute(trainer: Trainer, progress: Optional[EpochProgress]) -> RunResult:
    progress = progress or EpochProgress(enabled=trainer.world.is_main)
    with progress.running():
        return trainer.fit(progress)

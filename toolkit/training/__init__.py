"""Training: the loop, optimisers, progress, run directories."""
from .runs import resume, train
from .trainer import RunResult, Trainer, evaluate

__all__ = ["RunResult", "Trainer", "evaluate", "resume", "train"]

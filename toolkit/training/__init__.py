"""Training: the loop, optimisers, progress."""
from .trainer import RunResult, Trainer, evaluate, resume, train

__all__ = ["RunResult", "Trainer", "evaluate", "resume", "train"]

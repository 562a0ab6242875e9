"""Progress and metrics, kept outside the loop body: ``progress.track(loader)`` wraps the iterable."""
from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class Meter:
    """Running means of loss, accuracy and firing rate over an epoch, weighted by batch size."""

    def __init__(self):
        self.n = 0
        self.loss = self.correct = self.rate = 0.0
        self.start = time.perf_counter()
        self.steps = 0

    def update(self, loss: float, logits: torch.Tensor, y: torch.Tensor, firing_rate: float) -> None:
        b = y.shape[0]
        self.n += b
        self.steps += 1
        self.loss += loss * b
        self.rate += firing_rate * b
        self.correct += float((logits.argmax(1) == y).sum())

    def reduce(self, all_reduce_sum: Callable[[list[float]], list[float]]) -> "Meter":
        """Replace the sums by their totals over all ranks (iterations/s stays this rank's)."""
        sums = all_reduce_sum([self.n, self.loss, self.correct, self.rate])
        self.n, self.loss, self.correct, self.rate = sums
        return self

    def summary(self) -> dict:
        n = max(self.n, 1)
        seconds = time.perf_counter() - self.start
        return {"loss": self.loss / n, "acc": self.correct / n, "firing_rate": self.rate / n,
                "seconds": seconds, "it_per_s": self.steps / max(seconds, 1e-9)}


class EpochProgress:
    """One rich progress bar over the batches of the current epoch, showing the training loss,
    accuracy, firing rate and iterations/s; each epoch restarts it. Disabled (silently) off rank 0."""

    def __init__(self, enabled: bool = True, console: Console | None = None):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("train loss {task.fields[loss]:.4f} acc {task.fields[acc]:.2%} "
                       "fr {task.fields[firing_rate]:.3f} {task.fields[it_per_s]:.1f} it/s"),
            TimeRemainingColumn(), console=console, disable=not enabled, transient=True)
        self.task = None

    @contextmanager
    def running(self) -> Iterator["EpochProgress"]:
        with self.progress:
            yield self

    def track(self, loader: Iterable, meter: Meter, description: str) -> Iterator:
        fields = dict(total=len(loader), description=description, loss=0.0, acc=0.0, firing_rate=0.0, it_per_s=0.0)
        if self.task is None:
            self.task = self.progress.add_task(**fields)
        else:
            self.progress.reset(self.task, **fields)
        for batch in loader:
            yield batch
            self.progress.update(self.task, advance=1, **meter.summary())

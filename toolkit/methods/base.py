"""The interface every training method implements, and the method registry.

A method owns one training iteration: forward, backward and when the optimiser steps. The trainer
hands it a batch and a ``step`` callable and reads back a :class:`StepOutput`; it never asks which
method it holds. A method that steps the optimiser more than once per batch (OTTT_O) simply calls
``step`` more than once.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable

import torch

from ..registry import Registry
from ..spiking import SpikingNet


@dataclass(frozen=True)
class StepOutput:
    loss: float  # the loss value of the batch (not scaled by any gradient option)
    logits: torch.Tensor  # [B, classes], time-averaged, detached
    firing_rate: float  # mean over all neurons, steps and samples of the spiking forward


@dataclass(frozen=True)
class RunShape:
    """What a run will feed its method, known before the first step."""
    sample_shape: tuple[int, ...]  # one input sample, without T and batch
    batch_sizes: tuple[int, ...]  # the distinct per-process batch sizes of an epoch
    samples: int  # per process, over every epoch of the run
    device_type: str


@dataclass(frozen=True)
class NoOptions:
    pass


class Method:
    """Base class: subclasses set ``Options`` (a frozen dataclass) and implement ``train_step``."""

    Options: type = NoOptions
    # The training forward normalises with one step's batch statistics per call (T running updates
    # of BN per iteration, where evaluation pools T·B), so its gradients are those of BPTT's single
    # layout (bench/grad_agreement.py compares them so; the trainer recalibrates BN for every method).
    per_step_statistics: bool = False

    def __init__(self, T: int, options: Any = None):
        if T < 1:
            raise ValueError(f"method.T must be at least 1, got {T}")
        self.T = T
        self.options = options if options is not None else self.Options()

    def check(self, net: SpikingNet) -> None:
        """Called once before training: raise :class:`~snnkit.errors.ConfigError` if this method
        cannot train ``net`` (e.g. a layer it does not support), so the run fails at start-up."""

    def plan(self, net: SpikingNet, run: "RunShape") -> dict[str, Any]:
        """Decisions taken once before training from what does not change between runs (shapes,
        T, device, the samples to come; never a clock). The trainer records them in the checkpoint
        and results.json and hands them to :meth:`adopt`, on resume the recorded ones."""
        return {}

    def adopt(self, plan: dict[str, Any]) -> None:
        """Follow ``plan``, as :meth:`plan` returned it (perhaps in an earlier process)."""

    def train_step(self, net: SpikingNet, x_seq: torch.Tensor, y: torch.Tensor,
                   step: Callable[[], None]) -> StepOutput:
        """Run one iteration on ``x_seq`` ``[T, B, ...]``; call ``step()`` after each backward that
        should update the parameters (it steps the optimiser and zeroes the gradients)."""
        raise NotImplementedError


METHODS: Registry[type[Method]] = Registry("method")
register_method = METHODS.register


def option_names(name: str) -> list[str]:
    return [f.name for f in fields(METHODS.get(name).Options)]


def build_method(name: str, T: int, options: dict[str, Any] | None = None) -> Method:
    cls = METHODS.get(name)
    valid = option_names(name)
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise ValueError(f"method {name!r} has no option {', '.join(unknown)}; "
                         f"its options are: {', '.join(valid) or 'none'}")
    return cls(T, cls.Options(**(options or {})))

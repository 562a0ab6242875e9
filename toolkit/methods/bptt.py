"""Backpropagation through time: the baseline (methods.md)."""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..spiking import firing_rate
from .base import Method, StepOutput, register_method

LAYOUTS = ("multi", "single")


@dataclass(frozen=True)
class BPTTOptions:
    layout: str = "multi"  # multi: stateless layers on [T·B, ...]; single: a loop over t

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"method.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")


@register_method("bptt")
class BPTT(Method):
    """Unroll all T steps with autograd; cross-entropy on the time-averaged logits."""

    Options = BPTTOptions

    def train_step(self, net, x_seq, y, step):
        run = net.run_multistep if self.options.layout == "multi" else net.run_singlestep
        logits_seq, modes = run(x_seq)
        logits = logits_seq.mean(0)
        loss = F.cross_entropy(logits, y)
        loss.backward()
        step()
        return StepOutput(loss.item(), logits.detach(), firing_rate(modes))

"""Backpropagation through time: the baseline (docs/spec/methods.md)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..spiking import firing_rate
from .base import Method, StepOutput, register_method
from .causal import ScalingOptions, causal_scaling
from .losses import MEAN, check_loss, sequence_loss

LAYOUTS = ("multi", "single")


@dataclass(frozen=True)
class BPTTOptions(ScalingOptions):
    layout: str = "multi"  # multi: stateless layers on [T·B, ...]; single: a loop over t
    loss: str = MEAN  # mean: CE on the time-averaged logits; or a per-step loss: tet, ce_mse
    loss_weight: Optional[float] = None  # the per-step loss's weight; None: its default

    def __post_init__(self):
        super().__post_init__()
        if self.layout not in LAYOUTS:
            raise ValueError(f"method.layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        check_loss(self.loss, weight=self.loss_weight)
        if self.loss == MEAN and self.loss_weight is not None:
            raise ValueError("method.loss_weight applies to a per-step loss; set method.loss=tet or ce_mse")


@register_method("bptt")
class BPTT(Method):
    """Unroll all T steps with autograd; the loss on the time-averaged logits (or per step)."""

    Options = BPTTOptions

    @property
    def per_step_statistics(self) -> bool:
        return self.options.layout == "single"

    def train_step(self, net, x_seq, y, step):
        o = self.options
        run = net.run_multistep if o.layout == "multi" else net.run_singlestep
        with causal_scaling(net.body, self.T, o) as scale:
            logits_seq, modes = run(x_seq)
            loss = sequence_loss(logits_seq, y, o.loss, o.loss_weight)
            loss.backward()
            scale()
        step()
        return StepOutput(loss.item(), logits_seq.detach().mean(0), firing_rate(modes))

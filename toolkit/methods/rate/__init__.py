"""Rate-based backpropagation, rate_M and rate_S (Yu et al., NeurIPS 2024), as the paper's
Algorithm 1; the contract is docs/spec/rate_backprop.md, the section numbers below are its own.

    for each batch (x_seq [T, B, ...], y):
        spike pass, no autograd (§2.1), RateBackprop.spike_pass:
            every LIF layer runs T steps from v = 0            modes.MultiStepSpikePass (rate_M) /
                                                               modes.SingleStepSpikePass (rate_S)
            and keeps r = mean_t s_t and                       eligibility (the reference),
                      g = mean_t σ'(u_t − V_th)·ρ_t            fast (eager), triton_lif (CUDA)
            every BN keeps its input's mean and variance       batchnorm.record_batchnorm
        rate pass, autograd on, batch B (§2.2), RateBackprop.rate_pass:
            input the time average of x_seq
            every BN: value from the spike-pass statistics,    batchnorm.straight_through_batchnorm
                      gradient from the batch statistics
            every LIF layer returns r with Jacobian diag(g)    modes.RatePass
        loss = CE(logits, y) (§2.3); backward; optimiser step  RateBackprop.train_step

Autograd holds one rate pass at batch B, so training memory does not grow with T. Everything the
method needs lives in this package; it reaches the LIF layers only through the modes of
:func:`snnkit.spiking.neuron_mode`, and nothing outside training imports it (deploy does not).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from ...spiking import firing_rate, neuron_mode, spiking_layers
from ..base import Method, RunShape, StepOutput, register_method
from ..causal import ScalingOptions, causal_scaling
from .batchnorm import BNStats, record_batchnorm, straight_through_batchnorm
from .fast import COMPILE_CHOICES, MultistepRecorder, compile_pays_off, cpp_compiler_present
from .modes import MultiStepSpikePass, RatePass, SingleStepSpikePass


@dataclass(frozen=True)
class RateOptions(ScalingOptions):
    # Off: the gradient of the loss BPTT minimises (its classifier gradient exactly), so one lr and
    # weight decay mean the same for every method. On: × 1/T as in the reference code (the loss
    # value is unchanged); with SGD that is lr/T and weight decay ×T, the paper's rate_M runs.
    divide_grad_by_T: bool = False
    # Compile rate_M's spike pass on CPU (fast.MultistepRecorder): "auto" decides before training
    # whether the run is long enough to repay it (fast.compile_pays_off), "on" always, "off"
    # never. CUDA runs the Triton kernel.
    compile: str = "auto"

    def __post_init__(self):
        super().__post_init__()
        if self.compile not in COMPILE_CHOICES:
            raise ValueError(f"method.compile must be one of {', '.join(COMPILE_CHOICES)}, got {self.compile!r}")


@dataclass
class SpikePass:
    logits_seq: torch.Tensor  # [T, B, classes] of the real spiking network
    modes: list  # per spiking layer, holding r and g
    bn_stats: BNStats  # per BN layer, the statistics of every input it normalised


class RateBackprop(Method):
    Options = RateOptions
    multistep: bool  # the spike pass's layout: rate_M all steps at once, rate_S one step per call

    def __init__(self, T, options=None):
        super().__init__(T, options)
        # keeps its compiled shapes across steps; the trainer adopts the plan, "auto" eager until then
        self.recorder = MultistepRecorder("on" if self.options.compile == "on" else "off")

    def plan(self, net, run: RunShape) -> dict:
        choice = self.options.compile
        if choice == "auto" and self.multistep:
            neurons = neurons_per_sample(net, run.sample_shape)
            shapes = len(spiking_layers(net.body)) * len(run.batch_sizes)
            choice = "on" if compile_pays_off(neurons * self.T * run.samples, shapes, run.device_type,
                                              cpp_compiler_present()) else "off"
        return {"compile": "off" if choice == "auto" else choice}

    def adopt(self, plan: dict) -> None:
        self.recorder = MultistepRecorder(plan.get("compile", "off"))

    def train_step(self, net, x_seq, y, step):
        spikes = self.spike_pass(net, x_seq)
        with causal_scaling(net.body, 1, self.options) as scale:
            logits = self.rate_pass(net, x_seq, spikes)
            loss = F.cross_entropy(logits, y)
            (loss / self.T if self.options.divide_grad_by_T else loss).backward()
            scale()
        step()
        return StepOutput(loss.item(), spikes.logits_seq.mean(0), firing_rate(spikes.modes))

    @torch.no_grad()
    def spike_pass(self, net, x_seq) -> SpikePass:
        with record_batchnorm(net.body) as bn_stats:
            if self.multistep:
                mode = partial(MultiStepSpikePass, recorder=self.recorder)
                logits_seq, modes = net.run_multistep(x_seq, mode)
            else:
                logits_seq, modes = net.run_singlestep(x_seq, SingleStepSpikePass)
        return SpikePass(logits_seq, modes, bn_stats)

    def rate_pass(self, net, x_seq, spikes: SpikePass) -> torch.Tensor:
        """Logits [B, classes] of the ANN on time-averaged quantities, with autograd."""
        body = net.body
        recorded = {layer: mode.recorded() for layer, mode in zip(spiking_layers(body), spikes.modes)}
        with straight_through_batchnorm(spikes.bn_stats), \
                neuron_mode(body, lambda layer: RatePass(*recorded[layer])):
            return body(x_seq.mean(0))  # the time-averaged input [B, ...]


@torch.no_grad()
def neurons_per_sample(net, sample_shape: tuple[int, ...]) -> int:
    """LIF neurons one sample drives, from one step at batch 1 in eval mode (no state changes)."""
    training, weight = net.training, next(net.parameters())
    _, modes = net.eval().run_multistep(weight.new_zeros(1, 1, *sample_shape))
    net.train(training)
    return sum(mode.neurons_per_sample for mode in modes)


@register_method("rate_m")
class RateM(RateBackprop):
    """Multi-step spike pass: stateless layers on [T·B], BN statistics shared over T·B."""

    multistep = True


@register_method("rate_s")
class RateS(RateBackprop):
    """Single-step spike pass: T calls with batch B, per-step BN statistics; peak memory flat in T."""

    multistep = False
    per_step_statistics = True

"""The LIF layer and the scoped modes that drive it.

A model is a plain ``nn.Module`` *body* (Conv/BN/Linear/pooling and :class:`LIF`) acting on a flat
batch ``[N, ...]``. How a LIF layer treats its input is set for the length of a ``with`` block by
:func:`neuron_mode`, which installs one mode object per layer and removes it on exit: neuron state
lives in the mode, so it starts at zero in every block and can never leak between batches, or
between training and evaluation. :class:`SpikingNet` is the user-facing wrapper on ``[T, B, ...]``.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator, NamedTuple, Optional

import torch
from torch import nn

from . import fast
from .fast import FastSpikePass
from .neuron import NeuronParams, lif_multistep, lif_step
from .surrogate import heaviside


class LIF(nn.Module):
    """A layer of LIF neurons; its behaviour comes from the mode installed by :func:`neuron_mode`."""

    def __init__(self, neuron: NeuronParams):
        super().__init__()
        self.neuron = neuron
        self.surrogate = neuron.make_surrogate()
        self.mode: Optional[Mode] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode is None:
            raise RuntimeError(
                "a LIF layer ran outside neuron_mode(); call the SpikingNet, not its body"
            )
        # The membrane integrates in at least fp32: under autocast a bf16/fp16 current would
        # otherwise round the potential before it meets the threshold.
        return self.mode(self, x.to(torch.promote_types(x.dtype, torch.float32)))

    def extra_repr(self) -> str:
        p = self.neuron
        return (f"decay={p.decay}, v_threshold={p.v_threshold}, reset={p.reset}, "
                f"detach_reset={p.detach_reset}, surrogate={self.surrogate}")


class Mode:
    """Per-layer behaviour for one ``with neuron_mode(...)`` block; counts spikes per sample."""

    def __init__(self):
        self.spike_counts: Optional[torch.Tensor] = None  # [B], summed over neurons and steps
        self.neurons_per_sample = 0
        self.steps = 0

    def count(self, s: torch.Tensor, steps: int) -> None:
        """``s`` is ``[steps, B, ...]``."""
        per_sample = s.detach().flatten(2).sum(dim=(0, 2))
        self.spike_counts = per_sample if self.spike_counts is None else self.spike_counts + per_sample
        self.neurons_per_sample = s[0, 0].numel()
        self.steps += steps

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, g) of a recording spike pass."""
        raise RuntimeError(f"{type(self).__name__} did not record rates; pass record=True")


class MultiStep(Mode):
    """Input ``[T·B, ...]`` holding all T steps (time-major); the loop over T runs inside.

    With autograd on, the surrogate carries the gradient; where SpikingJelly's fused multi-step
    LIF applies it runs the loop, otherwise the reference loop does. With ``record`` (no autograd)
    it keeps the rate r and eligibility g of docs/spec/rate_backprop.md §2.1, computed by ``recorder``
    (:data:`snnkit.fast.multistep_record` unless given).
    """

    def __init__(self, T: int, record: bool = False, recorder: Optional[fast.Record] = None):
        super().__init__()
        self.T, self.record, self.recorder = T, record, recorder
        self.rate: Optional[torch.Tensor] = None
        self.eligibility: Optional[torch.Tensor] = None

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unflatten(0, (self.T, -1))  # [T·B, ...] -> [T, B, ...]
        if self.record:
            record = self.recorder or fast.multistep_record
            s_seq, self.rate, self.eligibility = record(x_seq, lif.neuron, lif.surrogate)
        elif torch.is_grad_enabled():
            s_seq = surrogate_multistep(x_seq, lif)
        else:
            s_seq = lif_multistep(x_seq, lif.neuron)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.rate is None:
            return super().recorded()
        return self.rate, self.eligibility


class SingleStep(Mode):
    """One step per call with batch ``[B, ...]``; the potential persists across calls."""

    def __init__(self, record: bool = False):
        super().__init__()
        self.v: torch.Tensor | float = 0.0
        self.recorder: Optional[FastSpikePass] = None
        self.record = record

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        if self.record:  # the spike pass (no autograd): the fast pass keeps the potential
            if self.recorder is None:
                self.recorder = FastSpikePass(lif.neuron, lif.surrogate)
            s = self.recorder.step(x)
        else:
            spike_fn = lif.surrogate.spike if torch.is_grad_enabled() else heaviside
            s, self.v, _ = lif_step(self.v, x, lif.neuron, spike_fn)
        self.count(s.unsqueeze(0), 1)
        return s

    def recorded(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.recorder is None:
            return super().recorded()
        return self.recorder.result()


class _RateValue(torch.autograd.Function):
    """``r + g⊙c − stopgrad(g⊙c)`` (docs/spec/rate_backprop.md §2.2) without its cost: the value is r itself
    (autograd hands out a view, no copy) and backward multiplies by g, the only tensor saved."""

    @staticmethod
    def forward(ctx, c: torch.Tensor, rate: torch.Tensor, eligibility: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(eligibility)
        return rate

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (eligibility,) = ctx.saved_tensors
        return grad * eligibility, None, None


class RatePass(Mode):
    """The rate pass: value r from the spike pass, Jacobian diag(g) with respect to the current."""

    def __init__(self, rate: torch.Tensor, eligibility: torch.Tensor):
        super().__init__()
        self.rate, self.eligibility = rate, eligibility

    def __call__(self, lif: LIF, c: torch.Tensor) -> torch.Tensor:
        if c.shape != self.rate.shape:
            raise RuntimeError(f"rate pass got {tuple(c.shape)}, spike pass saw {tuple(self.rate.shape)}")
        return _RateValue.apply(c, self.rate, self.eligibility)


def spikingjelly_applies(x_seq: torch.Tensor, p: NeuronParams) -> bool:
    """SpikingJelly's fused LIF serves BPTT on CUDA for the sigmoid surrogate and 0 < λ < 1 (1 < τ < ∞).
    On CPU its loop measured slower than the reference loop, so the reference runs there."""
    return x_seq.is_cuda and p.surrogate == "sigmoid" and 0 < p.decay < 1


def spikingjelly_multistep(x_seq: torch.Tensor, p: NeuronParams) -> torch.Tensor:
    """SpikingJelly 2.x's multi-step LIF in this toolkit's convention (tau = 1/(1 − λ))."""
    from spikingjelly.activation_based import surrogate as sj_surrogate
    from spikingjelly.activation_based.functional.neuron import lif_multi_step

    spikes, _, _ = lif_multi_step(
        x_seq, torch.zeros_like(x_seq[0], dtype=torch.float32), 1.0 / (1.0 - p.decay),
        False, p.v_threshold, None if p.reset == "soft" else p.v_reset,
        sj_surrogate.Sigmoid(alpha=p.alpha), p.detach_reset,
    )
    return spikes


def surrogate_multistep(x_seq: torch.Tensor, lif: LIF) -> torch.Tensor:
    if spikingjelly_applies(x_seq, lif.neuron):
        return spikingjelly_multistep(x_seq, lif.neuron)
    return lif_multistep(x_seq, lif.neuron, lif.surrogate.spike)


def spiking_layers(module: nn.Module) -> list[LIF]:
    """The LIF layers of ``module`` in registration order (the order of spike-count columns)."""
    return [m for m in module.modules() if isinstance(m, LIF)]


@contextmanager
def neuron_mode(module: nn.Module, make: Callable[[LIF], Mode]) -> Iterator[list[Mode]]:
    """Install ``make(layer)`` on every LIF layer of ``module`` for the block; yields the modes."""
    layers = spiking_layers(module)
    if any(layer.mode is not None for layer in layers):
        raise RuntimeError("neuron_mode blocks on the same layers cannot be nested")
    modes = [make(layer) for layer in layers]
    for layer, mode in zip(layers, modes):
        layer.mode = mode
    try:
        yield modes
    finally:
        for layer in layers:
            layer.mode = None


def spike_counts(modes: list[Mode]) -> torch.Tensor:
    """``[B, L]``: spikes per sample in each layer, over all neurons and steps."""
    return torch.stack([m.spike_counts for m in modes], dim=1)


def firing_rate(modes: list[Mode]) -> float:
    """Mean firing rate over every neuron, step and sample of the block."""
    spikes = sum(float(m.spike_counts.sum()) for m in modes)
    slots = sum(m.neurons_per_sample * m.steps * m.spike_counts.numel() for m in modes)
    return spikes / max(slots, 1)


class SpikeOutput(NamedTuple):
    logits_seq: torch.Tensor  # [T, B, classes]
    spike_counts: torch.Tensor  # [B, L]

    @property
    def logits(self) -> torch.Tensor:
        """Time-averaged logits ``[B, classes]``."""
        return self.logits_seq.mean(0)


class SpikingNet(nn.Module):
    """Wraps a flat body; ``forward`` takes ``[T, B, ...]`` and runs the multi-step layout."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x_seq: torch.Tensor) -> SpikeOutput:
        logits_seq, modes = self.run_multistep(x_seq)
        return SpikeOutput(logits_seq, spike_counts(modes))

    def run_multistep(self, x_seq: torch.Tensor, record: bool = False, recorder: Optional[fast.Record] = None
                      ) -> tuple[torch.Tensor, list[Mode]]:
        """Stateless layers on all T·B samples at once; returns ([T, B, classes], the layers' modes).
        With ``record``, each LIF layer's r and g come from ``recorder`` (see :class:`MultiStep`)."""
        T = x_seq.shape[0]
        with neuron_mode(self.body, lambda _: MultiStep(T, record, recorder)) as modes:
            y = self.body(x_seq.flatten(0, 1))  # [T, B, ...] -> [T·B, ...]
        return y.unflatten(0, (T, -1)), modes

    def run_singlestep(self, x_seq: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, list[Mode]]:
        """A loop over t with batch B per call; returns ([T, B, classes], the layers' modes)."""
        with neuron_mode(self.body, lambda _: SingleStep(record)) as modes:
            y = torch.stack([self.body(x) for x in x_seq])
        return y, modes

    def layer_names(self) -> list[str]:
        names = {m: n for n, m in self.body.named_modules()}
        return [names[layer] for layer in spiking_layers(self.body)]

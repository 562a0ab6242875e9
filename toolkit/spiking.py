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
    """Per-layer behaviour for one ``with neuron_mode(...)`` block; counts spikes per sample.

    A method that needs its own neuron behaviour (the rate method's spike and rate passes, SAF's
    accumulated neuron, OTTT's detached step) subclasses a mode; the LIF layer knows none of them."""

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


class MultiStep(Mode):
    """Input ``[T·B, ...]`` holding all T steps (time-major); the loop over T runs inside.

    With autograd on, the surrogate carries the gradient; where SpikingJelly's fused multi-step
    LIF applies it runs the loop, otherwise the reference loop does. Subclasses change
    :meth:`run`, the loop itself.
    """

    def __init__(self, T: int):
        super().__init__()
        self.T = T

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        x_seq = x.unflatten(0, (self.T, -1))  # [T·B, ...] -> [T, B, ...]
        s_seq = self.run(lif, x_seq)
        self.count(s_seq, self.T)
        return s_seq.flatten(0, 1)

    def run(self, lif: LIF, x_seq: torch.Tensor) -> torch.Tensor:
        """The spikes ``[T, B, ...]`` of the layer on the currents ``x_seq``."""
        if torch.is_grad_enabled():
            return surrogate_multistep(x_seq, lif)
        return lif_multistep(x_seq, lif.neuron)


class SingleStep(Mode):
    """One step per call with batch ``[B, ...]``; the potential persists across calls. Subclasses
    change :meth:`step`, one step of the layer."""

    def __init__(self):
        super().__init__()
        self.v: torch.Tensor | float = 0.0

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        s = self.step(lif, x)
        self.count(s.unsqueeze(0), 1)
        return s

    def step(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        """The spikes of one step on current ``x``, advancing the potential."""
        spike_fn = lif.surrogate.spike if torch.is_grad_enabled() else heaviside
        s, self.v, _ = lif_step(self.v, x, lif.neuron, spike_fn)
        return s


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

    def run_multistep(self, x_seq: torch.Tensor, mode: Callable[[int], MultiStep] = MultiStep
                      ) -> tuple[torch.Tensor, list[Mode]]:
        """Stateless layers on all T·B samples at once; returns ([T, B, classes], the layers' modes).
        Each LIF layer runs ``mode(T)`` (a method's own :class:`MultiStep`, e.g. a spike pass)."""
        T = x_seq.shape[0]
        with neuron_mode(self.body, lambda _: mode(T)) as modes:
            y = self.body(x_seq.flatten(0, 1))  # [T, B, ...] -> [T·B, ...]
        return y.unflatten(0, (T, -1)), modes

    def run_singlestep(self, x_seq: torch.Tensor, mode: Callable[[], SingleStep] = SingleStep
                       ) -> tuple[torch.Tensor, list[Mode]]:
        """A loop over t with batch B per call; returns ([T, B, classes], the layers' modes).
        Each LIF layer runs ``mode()``."""
        with neuron_mode(self.body, lambda _: mode()) as modes:
            y = torch.stack([self.body(x) for x in x_seq])
        return y, modes

    def layer_names(self) -> list[str]:
        names = {m: n for n, m in self.body.named_modules()}
        return [names[layer] for layer in spiking_layers(self.body)]

"""Parity that explains every differing spike: a graph's per-step membranes and spikes against the
PyTorch twin's, each with a float32 rounding bound derived from the layer's own input magnitudes.

The twin's step graph (:class:`~snnkit.deploy.graph.TimeUnrolled`) is run on ``Bound``s: the
reference value, and two bounds on how far the same float32 computation on the graph's side can
be from it. *rounding*: a dot product of n terms (n = fan-in, +1 for the bias or the division of a
mean) computed in any order, with or without FMA, is within γ_n = n·u/(1 − n·u) of exact times
Σ|w|·|x| + |b| (u = 2⁻²⁴), so two such computations differ by at most 2·γ_{n+1}·(|W|∗|x| + |b|),
computed per neuron as the same op with |W| on |x|; it also carries the input's own bound through
|W|. *cascade*: spikes that already differed (upstream, or this layer's own earlier spikes through
its state) enter as their exact difference |Δs| and go through |W| the same way. The LIF charge
u_t = λ·v_{t−1} + x_t adds 2·γ₂·(λ|v| + |x|), the soft reset 2·u·|v|; subtract_next's charge
(− V_sub·s_{t−1}) adds 2·γ₃·(λ|v| + |x| + V_sub·s_{t−1}) and V_sub where the previous spikes differ.

Verdict at each (layer, step, neuron): a membrane differing by more than its bound is
*unexplained*; a spike that differs is explained when |u_ref − V_th| is within the bound (a
*rounding* flip when the cascade part is 0, else a *cascade*), and unexplained otherwise. The
logits are checked the same way, and the graph's spike counts against its own per-step spikes.
The gate is zero unexplained differences, whatever the number of samples.
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from snnkit.neuron import NeuronParams, lif_step
from snnkit.spiking import LIF

from .graph import TimeUnrolled, tile_steps

UNIT_ROUNDOFF = 2.0 ** -24  # float32


PROBABLE = 6.0  # λ in λ·√n·u; each rounding error a bounded independent variable: P(exceed) ≤ 2·exp(−λ²/2)


def gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def sum_error(n: int) -> float:
    """|computed − exact| / Σ|terms| for a float32 sum of n terms in any order, with or without FMA:
    the worst case γ_n, or the probabilistic λ·√n·u (Higham & Mary 2019) where that is smaller."""
    return min(gamma(n), PROBABLE * n ** 0.5 * UNIT_ROUNDOFF)


@dataclass(frozen=True)
class Bound:
    """A reference value and bounds on |reference − graph| from rounding and from earlier flips."""

    value: torch.Tensor
    rounding: torch.Tensor
    cascade: torch.Tensor

    @classmethod
    def exact(cls, value: torch.Tensor) -> "Bound":
        return cls(value, torch.zeros_like(value), torch.zeros_like(value))

    def magnitude(self) -> torch.Tensor:
        """A bound on |value| on either side."""
        return self.value.abs() + self.rounding + self.cascade

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Bound":
        return Bound(fn(self.value), fn(self.rounding), fn(self.cascade))


def linear_op(value: torch.Tensor, x: Bound, absolute: Callable[[torch.Tensor], torch.Tensor], terms: int,
              bias: Optional[torch.Tensor] = None) -> Bound:
    """A linear map with ``terms`` products per output; ``absolute`` is the map with |W| and no bias."""
    rounding, cascade, magnitude = absolute(torch.cat([x.rounding, x.cascade, x.magnitude()])).chunk(3)
    if bias is not None:
        magnitude = magnitude + bias.abs().view(-1, *(1,) * (value.dim() - 2))
    return Bound(value, rounding + sum_error(terms + 1) * magnitude, cascade)


def conv2d(m: nn.Conv2d, x: Bound) -> Bound:
    if m.padding_mode != "zeros":
        raise NotImplementedError(f"parity has no rounding bound for padding_mode={m.padding_mode!r}")
    terms = m.in_channels // m.groups * m.weight[0, 0].numel()
    return linear_op(m(x.value), x, lambda t: F.conv2d(t, m.weight.abs(), None, m.stride, m.padding,
                                                       m.dilation, m.groups), terms, m.bias)


def linear(m: nn.Linear, x: Bound) -> Bound:
    return linear_op(m(x.value), x, lambda t: F.linear(t, m.weight.abs()), m.in_features, m.bias)


def avg_pool(m: nn.AvgPool2d, x: Bound) -> Bound:
    kernel = m.kernel_size if isinstance(m.kernel_size, tuple) else (m.kernel_size,) * 2
    return linear_op(m(x.value), x, m, kernel[0] * kernel[1])


def adaptive_avg_pool(m: nn.AdaptiveAvgPool2d, x: Bound) -> Bound:
    return linear_op(m(x.value), x, m, x.value[0, 0].numel())  # no window exceeds the whole map


def add(a: Bound, b: Bound) -> Bound:
    value = a.value + b.value
    return Bound(value, a.rounding + b.rounding + 2 * UNIT_ROUNDOFF * (a.magnitude() + b.magnitude()),
                 a.cascade + b.cascade)


def exact(m: nn.Module, x: Bound) -> Bound:
    """Layers that move values without arithmetic; max pooling is 1-Lipschitz per window, so the
    largest bound in a window bounds its output."""
    return x.map(m)


MODULES: dict[type, Callable[[nn.Module, Bound], Bound]] = {
    nn.Conv2d: conv2d, nn.Linear: linear, nn.AvgPool2d: avg_pool, nn.AdaptiveAvgPool2d: adaptive_avg_pool,
    nn.MaxPool2d: exact, nn.Flatten: exact, nn.Identity: exact, nn.Dropout: exact,
}
FUNCTIONS: dict[Callable, Callable[..., Bound]] = {
    operator.add: add, tile_steps: lambda x, T: x.map(lambda t: tile_steps(t, T)),
}


@dataclass(frozen=True)
class Finding:
    """Where a difference was first seen, with its size and the bound it was held to."""

    what: str  # "spike", "membrane", "logits", "spike counts", "steps" or "weights"
    layer: str
    step: Optional[int]
    order: int  # position of the layer in the network (logits last)
    difference: float
    bound: float

    def describe(self) -> str:
        if self.what == "steps":
            return f"the graph runs {self.difference:g} steps in {self.layer} but claims T = {self.bound:g}"
        if self.what == "weights":
            return f"weights {self.layer} hold {self.difference:g} non-finite values"
        where = self.layer if self.step is None else f"{self.layer} at step {self.step}"
        return f"{self.what} of {where}: |Δ| {self.difference:.3g} against a bound of {self.bound:.3g}"


def earlier(a: Optional[Finding], b: Optional[Finding]) -> Optional[Finding]:
    if a is None or b is None:
        return a or b
    return min(a, b, key=lambda f: (f.order, -1 if f.step is None else f.step))


@dataclass
class Verdict:
    """Counts over every compared spike; ``passed`` when nothing is unexplained."""

    spikes_compared: int = 0
    differing_spikes: int = 0  # explained or not
    rounding_flips: int = 0
    cascade_flips: int = 0
    unexplained: int = 0
    first_explained: Optional[Finding] = None
    first_unexplained: Optional[Finding] = None

    @property
    def passed(self) -> bool:
        return self.unexplained == 0

    @property
    def explained(self) -> int:
        return self.rounding_flips + self.cascade_flips

    @property
    def identical(self) -> float:
        """The fraction of (neuron, step, sample) spikes that are the same on both sides."""
        return 1 - self.differing_spikes / self.spikes_compared if self.spikes_compared else 1.0

    def merge(self, other: "Verdict") -> "Verdict":
        return Verdict(self.spikes_compared + other.spikes_compared, self.differing_spikes + other.differing_spikes,
                       self.rounding_flips + other.rounding_flips, self.cascade_flips + other.cascade_flips,
                       self.unexplained + other.unexplained,
                       earlier(self.first_explained, other.first_explained),
                       earlier(self.first_unexplained, other.first_unexplained))

    def unexplained_at(self, what: str, layer: str, step: Optional[int], order: int, bad: torch.Tensor,
                       difference: torch.Tensor, bound: torch.Tensor) -> None:
        """Count the positions where ``bad``; the first seen is the worst one of that place."""
        n = int(bad.sum())
        if n:
            self.unexplained += n
            worst = int(torch.nan_to_num(difference - bound, nan=torch.inf).masked_fill(~bad, -torch.inf).argmax())
            self.first_unexplained = earlier(self.first_unexplained, Finding(
                what, layer, step, order, float(difference.flatten()[worst]), float(bound.flatten()[worst])))


def nonfinite_weights(weights: dict[str, np.ndarray]) -> Verdict:
    """A NaN or infinite weight is a defect even where it meets only padding; one finding per tensor."""
    bad = {name: int((~np.isfinite(w)).sum()) for name, w in weights.items()}
    findings = [Finding("weights", name, None, -1, n, 0.0) for name, n in bad.items() if n]
    return Verdict(unexplained=sum(bad.values()), first_unexplained=findings[0] if findings else None)


@dataclass(frozen=True)
class Observed:
    """What a graph computed for one batch: its outputs and, per LIF layer, the membrane before reset
    and the spikes at every step (``[steps, B, ...]``)."""

    logits: torch.Tensor  # [B, classes]
    spike_counts: torch.Tensor  # [B, L]
    membranes: dict[str, torch.Tensor]
    spikes: dict[str, torch.Tensor]
    step_logits: Optional[torch.Tensor] = None  # [T, B, classes]: a streaming graph's logits at each step


@dataclass
class Reference:
    """The twin's own outputs on the batch, and the verdict on the graph."""

    logits: torch.Tensor
    spike_counts: torch.Tensor
    verdict: Verdict = field(default_factory=Verdict)


class BoundInterpreter(fx.Interpreter):
    """Runs the twin's step graph on :class:`Bound`s and judges each LIF layer against ``observed``."""

    def __init__(self, twin: TimeUnrolled, observed: Observed):
        super().__init__(twin.step_graph)
        self.twin, self.observed = twin, observed
        self.verdict = Verdict()
        self.counts: dict[str, torch.Tensor] = {}  # the twin's spikes per sample, per layer

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if isinstance(m, LIF):
            return self.lif(target, m, args[0])
        if type(m) not in MODULES:
            raise NotImplementedError(f"parity has no rounding bound for {type(m).__name__}; add one to "
                                      "MODULES in deploy/parity.py")
        return MODULES[type(m)](m, args[0])

    def call_function(self, target, args, kwargs):
        if target not in FUNCTIONS:
            raise NotImplementedError(f"parity has no rounding bound for {target}; add one to FUNCTIONS "
                                      "in deploy/parity.py")
        return FUNCTIONS[target](*args, **kwargs)

    def call_method(self, target, args, kwargs):
        raise NotImplementedError(f"parity has no rounding bound for Tensor.{target}; use a module")

    def lif(self, name: str, lif: LIF, x: Bound) -> Bound:
        p, T, order = lif.neuron, self.twin.T, len(self.counts)
        if lif in self.twin.constant_fed:
            x = x.map(lambda t: tile_steps(t, T))
        x_seq = x.map(lambda t: t.unflatten(0, (T, -1)))  # [T·B, ...] -> [T, B, ...]
        u_seen, s_seen = self.observed.membranes[name], self.observed.spikes[name]
        v = Bound.exact(torch.zeros_like(x_seq.value[0]))
        spikes, flips = [], []
        for t in range(T):
            x_t = x_seq.map(lambda q: q[t])
            s, v_next, u_value = lif_step(v.value, x_t.value, p)
            before = (spikes[-1], flips[-1]) if t else (torch.zeros_like(s), torch.zeros_like(s))
            u = charge_bound(p, v, x_t, u_value, *before)
            flip = self.judge(name, t, order, u, s, u_seen[t], s_seen[t], p.v_threshold)
            v = reset_bound(p, u, s, v_next, flip)
            spikes.append(s)
            flips.append(flip)
        self.verdict.spikes_compared += s_seen.numel()
        s_seq = torch.stack(spikes)
        self.counts[name] = s_seq.flatten(2).sum((0, 2))
        self.check_counts(name, order, s_seen)
        return Bound(s_seq.flatten(0, 1), torch.zeros_like(s_seq.flatten(0, 1)), torch.stack(flips).flatten(0, 1))

    def judge(self, name: str, t: int, order: int, u: Bound, s: torch.Tensor, u_seen: torch.Tensor,
              s_seen: torch.Tensor, v_threshold: float) -> torch.Tensor:
        """Classify one step of a layer; returns |Δs| (1 where the spikes differ)."""
        bound = u.rounding + u.cascade
        du = (u.value - u_seen).abs()
        self.verdict.unexplained_at("membrane", name, t, order, ~(du <= bound), du, bound)
        flip = s != s_seen
        self.verdict.differing_spikes += int(flip.sum())
        margin = (u.value - v_threshold).abs()
        near = margin <= bound
        self.verdict.unexplained_at("spike", name, t, order, flip & ~near, margin, bound)
        explained = flip & near
        n, cascade = int(explained.sum()), int((explained & (u.cascade > 0)).sum())
        if n:
            self.verdict.cascade_flips += cascade
            self.verdict.rounding_flips += n - cascade
            self.verdict.first_explained = earlier(self.verdict.first_explained,
                                                   Finding("spike", name, t, order, 0.0, 0.0))
        return flip.to(s.dtype)

    def check_counts(self, name: str, order: int, s_seen: torch.Tensor) -> None:
        """The graph's ``spike_counts`` output must be the sum of its own per-step spikes."""
        counted = self.observed.spike_counts[:, self.twin.layer_names.index(name)].double()
        summed = s_seen.flatten(2).sum((0, 2)).double()
        self.verdict.unexplained_at("spike counts", name, None, order, counted != summed, (counted - summed).abs(),
                                    torch.zeros_like(summed))


def charge_bound(p: NeuronParams, v: Bound, x: Bound, u: torch.Tensor, fired: torch.Tensor,
                 flipped: torch.Tensor) -> Bound:
    """u_t = λ·v_{t−1} + x_t (two terms), and for subtract_next − V_sub·s_{t−1} (three; ``fired`` is
    the reference's s_{t−1}, ``flipped`` where the graph's differed, and subtracted the other amount)."""
    rounding = p.decay * v.rounding + x.rounding
    cascade = p.decay * v.cascade + x.cascade
    if p.reset != "subtract_next":
        return Bound(u, rounding + 2 * gamma(2) * (p.decay * v.magnitude() + x.magnitude()), cascade)
    terms = p.decay * v.magnitude() + x.magnitude() + p.subtracted * fired
    return Bound(u, rounding + 2 * gamma(3) * terms, cascade + p.subtracted * flipped)


def reset_bound(p: NeuronParams, u: Bound, s: torch.Tensor, v_next: torch.Tensor, flip: torch.Tensor) -> Bound:
    """The state after the reset: the soft reset rounds once and moves by V_th where the spikes
    differ; the hard reset is exact where both sides agree, v_reset against u where they do not;
    subtract_next keeps u (its next charge subtracts)."""
    bound = u.rounding + u.cascade
    if p.reset == "subtract_next":
        return u
    if p.reset == "soft":
        return Bound(v_next, u.rounding + 2 * UNIT_ROUNDOFF * (v_next.abs() + bound + p.v_threshold * flip),
                     u.cascade + p.v_threshold * flip)
    keep = (1 - s) * (1 - flip)
    return Bound(v_next, keep * u.rounding, keep * u.cascade + flip * ((u.value - p.v_reset).abs() + bound))


def steps_mismatch(twin: TimeUnrolled, observed: Observed) -> Optional[Finding]:
    for order, name in enumerate(twin.layer_names):
        steps = observed.spikes[name].shape[0]
        if steps != twin.T or observed.membranes[name].shape[0] != twin.T:
            return Finding("steps", name, None, order, float(steps), float(twin.T))
    return None


@torch.no_grad()
def verify(twin: TimeUnrolled, x: torch.Tensor, observed: Observed) -> Reference:
    """Judge ``observed`` (a graph's run on ``x``, in the graph's input layout) against ``twin``."""
    structure = steps_mismatch(twin, observed)
    if structure is not None:
        logits, counts = twin(x)[:2]
        verdict = Verdict(unexplained=1, first_unexplained=structure)
        return Reference(logits, counts, verdict)
    exact = copy.deepcopy(twin).double()  # the float32 weights, summed (almost) exactly
    run = BoundInterpreter(exact, observed)
    y = run.run(Bound.exact((x if twin.kind == "static" else x.flatten(0, 1)).double()))  # [T·B, K]
    y = y.map(lambda t: t.unflatten(0, (twin.T, -1)))  # [T, B, K]
    logits = y.value.mean(0).float()
    bound = (y.rounding + y.cascade).mean(0) + 2 * gamma(twin.T + 1) * y.magnitude().mean(0)
    diff = (logits - observed.logits).abs()
    run.verdict.unexplained_at("logits", "logits", None, len(twin.layer_names), ~(diff <= bound), diff, bound)
    counts = torch.stack([run.counts[name] for name in twin.layer_names], 1).to(torch.int64)
    return Reference(logits, counts, run.verdict)


"""The fast spike pass: the rate methods' no-grad LIF loop with r and g accumulated in place.

It computes exactly what :func:`.eligibility.lif_multistep_record` computes (the reference, kept as
the pure-function path and tested against this one): the same spikes bit for bit, the same rate r,
and the eligibility g = (1/T) Σ_t σ'(u_t − V_th)·ρ_t up to float rounding. It is faster because
each step works in a few preallocated buffers (no temporaries), computes u − V_th once for both the
spike and the surrogate, folds α and a scalar ρ_t into one scaled accumulation, and keeps ρ_t a
Python float where it is the same for every neuron (soft or subtract_next reset with the reset
detached: ρ_t = 1 + λ + … + λ^{t−1}, docs/spec/rate_backprop.md §2.1).

rate_M's spike pass goes through a :class:`MultistepRecorder` (the method owns one), which picks the fused form of the
same loop where there is one: the Triton kernel of :mod:`.triton_lif` on CUDA, and on CPU
the reference loop compiled by inductor into one loop over the T steps per shape (its spikes, r
and g are the reference's; compiling pays off only on long runs, see :func:`compile_pays_off`).
"""
from __future__ import annotations

import importlib.util
import logging
import shutil
from typing import Callable, Optional

import torch

from ...neuron import NeuronParams
from ...surrogate import Sigmoid, Surrogate
from .eligibility import RateSums, lif_multistep_record

log = logging.getLogger(__name__)


class FastSpikePass(RateSums):
    """One LIF layer's spike pass, one step per :meth:`step` call, state starting at v = 0;
    ``rho`` stays a float while it is the same for every neuron."""

    def _start(self, x: torch.Tensor) -> None:
        self.v = torch.zeros_like(x)
        self.d = torch.empty_like(x)  # u_t − V_th
        self.sg = torch.empty_like(x)  # σ'(u_t − V_th) / scale
        self.tmp = torch.empty_like(x)
        self.fired = torch.zeros_like(x)  # s_{t−1}, which subtract_next takes from the charge
        self.spike_sum = torch.zeros_like(x)
        self.elig_sum = torch.zeros_like(x)

    def _surrogate_grad(self) -> float:
        """Write σ'(d) / scale into ``self.sg`` and return the scale (α for the sigmoid)."""
        if not isinstance(self.surrogate, Sigmoid):
            self.sg.copy_(self.surrogate.grad(self.d))
            return 1.0
        alpha = self.surrogate.alpha
        sig = torch.mul(self.d, alpha, out=self.sg).sigmoid_()
        sig.mul_(torch.neg(sig, out=self.tmp).add_(1.0))  # sig·(1 − sig)
        return alpha

    @torch.no_grad()
    def step(self, x: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Advance one step on input current ``x``; returns the spikes (written into ``out``)."""
        p = self.p
        if self.steps == 0:
            self._start(x)
        u = self.v.mul_(p.decay).add_(x)  # charge in place: v now holds u_t
        if p.reset == "subtract_next":
            u.sub_(self.fired, alpha=p.subtracted)
        torch.sub(u, p.v_threshold, out=self.d)
        s = torch.ge(self.d, 0.0, out=out if out is not None else torch.empty_like(x))
        self.spike_sum.add_(s)
        scale = self._surrogate_grad()
        if isinstance(self.rho, float):
            self.elig_sum.add_(self.sg, alpha=scale * self.rho)
        else:
            self.elig_sum.addcmul_(self.sg, self.rho, value=scale)
        self._advance_rho(u, s, scale)
        if p.reset == "soft":
            u.sub_(s, alpha=p.v_threshold)
        elif p.reset == "hard":
            u.masked_fill_(s.bool(), p.v_reset)
        else:
            self.fired.copy_(s)
        self.steps += 1
        return s

    def _advance_rho(self, u: torch.Tensor, s: torch.Tensor, scale: float) -> None:
        """ρ_{t+1} = 1 + κ_t·ρ_t with κ_t of docs/spec/rate_backprop.md §2.1; ``self.sg``·scale is σ'."""
        p = self.p
        if p.reset in ("soft", "subtract_next") and p.detach_reset:
            self.rho = 1.0 + p.decay * self.rho
            return
        if p.reset == "subtract_next":  # κ = λ − V_sub·σ'
            kappa = torch.mul(self.sg, -p.subtracted * scale, out=self.tmp).add_(p.decay)
        elif p.reset == "soft":  # κ = λ·(1 − V_th·σ')
            kappa = torch.mul(self.sg, -p.v_threshold * scale, out=self.tmp).add_(1.0).mul_(p.decay)
        elif p.detach_reset:  # κ = λ·(1 − s)
            kappa = torch.neg(s, out=self.tmp).add_(1.0).mul_(p.decay)
        else:  # κ = λ·[(1 − s) + (v_reset − u)·σ']
            kappa = torch.neg(u, out=self.tmp).add_(p.v_reset).mul_(self.sg).mul_(scale)
            kappa.add_(torch.rsub(s, 1.0)).mul_(p.decay)
        if isinstance(self.rho, float):
            self.rho = kappa.mul(self.rho).add_(1.0)
        else:
            self.rho.mul_(kappa).add_(1.0)


@torch.no_grad()
def fast_multistep_record(
    x_seq: torch.Tensor, p: NeuronParams, surrogate: Surrogate
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-in for :func:`~.eligibility.lif_multistep_record`: (spikes [T, ...], r, g)."""
    spass = FastSpikePass(p, surrogate)
    spikes = torch.empty_like(x_seq)
    for t in range(x_seq.shape[0]):
        spass.step(x_seq[t], out=spikes[t])
    return (spikes, *spass.result())


COMPILE_CHOICES = ("auto", "on", "off")
# What "auto" rests on, measured on the 2-core build machine (docs/benchmarks.md, "The fused spike pass"): the
# eager pass costs about 1.3 ns per neuron and step (digits net, batch 64, T = 4: 2.8 ms for 2.1 M
# neuron-steps; resnet18 width 0.25, batch 16, T = 8: 23 ms for 17.8 M), the compiled loop saves
# about 45 % of it, and compiling costs 5-28 s per shape cold (0.5-7 s from inductor's disk cache).
EAGER_SECONDS_PER_NEURON_STEP = 1.3e-9
COMPILED_SAVES = 0.45
COMPILE_SECONDS_PER_SHAPE = 28.0  # the worst cold compile: "auto" compiles only when that is repaid


def compile_pays_off(neuron_steps: int, shapes: int, device_type: str, compiler: bool) -> bool:
    """The "auto" rule, decided once before training from what does not change between runs: on
    CPU with a C++ compiler, compile when the eager time the whole run's spike passes would save
    (``neuron_steps``: LIF neurons × T × samples × epochs) exceeds the cold compile of every
    input shape (``shapes``: LIF layers × distinct batch sizes). CUDA runs the Triton kernel."""
    if device_type != "cpu" or not compiler:
        return False
    saved = COMPILED_SAVES * EAGER_SECONDS_PER_NEURON_STEP * neuron_steps
    return saved > COMPILE_SECONDS_PER_SHAPE * shapes


def cpp_compiler_present() -> bool:
    """Inductor's CPU code needs a C++ compiler on the PATH."""
    return any(shutil.which(name) for name in ("g++", "c++", "clang++"))


Record = Callable[[torch.Tensor, NeuronParams, Surrogate], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


class MultistepRecorder:
    """Records one LIF layer's rate_M spike pass (all T steps per call) by the fastest exact path:
    the Triton kernel (:mod:`.triton_lif`) on CUDA where it applies; otherwise, with
    ``compile="on"``, the reference loop compiled by inductor into one fused loop per input shape;
    otherwise the eager fast pass. Every path gives the reference's spikes and r bit for bit.
    ``compile`` is "on" or "off", decided before training ("auto" is resolved by
    :func:`compile_pays_off`); nothing here depends on how long a call took."""

    def __init__(self, compile: str = "off"):
        if compile not in ("on", "off"):
            raise ValueError(f"the recorder compiles 'on' or 'off', got {compile!r}; resolve 'auto' first")
        self.compile = compile
        self.compiled: dict[tuple, Record] = {}

    def __call__(self, x_seq: torch.Tensor, p: NeuronParams, surrogate: Surrogate):
        if triton_applies(x_seq, surrogate):
            from .triton_lif import triton_multistep_record

            return triton_multistep_record(x_seq, p, surrogate)
        key = (tuple(x_seq.shape), x_seq.dtype, x_seq.device, p, type(surrogate), surrogate.alpha)
        if key not in self.compiled and self.compile == "on":
            log.info("compiling the spike pass for LIF input %s", list(x_seq.shape))
            self.compiled[key] = torch.compile(lif_multistep_record, dynamic=False, fullgraph=True)
        if key in self.compiled:
            try:
                with torch._dynamo.config.patch(recompile_limit=64):  # one cache entry per shape
                    return self.compiled[key](x_seq, p, surrogate)
            except Exception as err:  # e.g. no C++ compiler: stay exact, eagerly
                log.warning("compiling the spike pass failed, so it runs eagerly: %s", err)
                self.compile, self.compiled = "off", {}
        return fast_multistep_record(x_seq, p, surrogate)


def triton_applies(x_seq: torch.Tensor, surrogate: Surrogate) -> bool:
    """The Triton kernel serves this layer: fp32 currents on CUDA (its scalars are fp32, as torch's
    are for an fp32 tensor), the sigmoid surrogate, and Triton installed (CUDA builds of torch)."""
    return (x_seq.is_cuda and x_seq.dtype == torch.float32 and isinstance(surrogate, Sigmoid)
            and importlib.util.find_spec("triton") is not None)


"""How far a spike pass's eligibility g may be from exact: a first-order rounding bound per neuron,
derived from the layer's own trajectory, for judging the fast, compiled and Triton passes.

Every pass computes the membrane by the same correctly rounded IEEE operations (u = λ·v + x as a
product and a sum, no fused multiply-add; the reset exact or one rounding), so u, the spikes and
r = mean(s) are the same bit for bit on every path and every CPU: they are compared exactly. The
eligibility g = (1/T)·Σ_t σ'(u_t − V_th)·ρ_t goes through a library sigmoid, another order of
products and sums, and ρ as a Python double or a tensor, so it is judged against the value computed
in float64 from the same membranes, with u = 2⁻²⁴ for float32 (2⁻⁵³ for float64):

- σ'(d) = α·σ(1 − σ), σ = 1/(1 + e^{−z}), z = α·fl(d): exp within (8 + |z|)·u of exact (libm, a
  SIMD exp or a GPU exp2 within 4 ulp, with z·log₂e rounded), then a sum and a division within 2 ulp,
  and z itself off by 2·u·|z|, so |Δσ| ≤ σ·((1 − σ)·(8 + 3|z|)·u + 5u), and
  |Δσ'| ≤ α·(|Δσ|·(1 + |Δσ|) + 3u·σ(1 − σ)) (1 − σ, the product and ×α each round once);
- ρ_{t+1} = 1 + κ_t·ρ_t with κ = λ·(a + b·σ'): |Δκ| ≤ λ·|b|·|Δσ'| + 5u·λ·(|a| + B·σ') (B bounds |b|
  and its float32 inputs; the five roundings: b, b·σ', the sum, ×λ and λ itself); subtract_next's
  κ = λ − b·σ' in the same way, |Δκ| ≤ b·|Δσ'| + 5u·(λ + b·σ'); and
  |Δρ_{t+1}| ≤ |κ|·|Δρ_t| + |Δκ|·ρ_t + u·(|κ|·ρ_t + 1 + |κ|·ρ_t);
- the T products (each with a scale rounded first) and sums: γ_{T+2}·Σ_t σ'_t·ρ_t, and the
  division by T: u·|g|.
Each term uses the magnitudes plus their own bounds, so the neglected second-order terms are covered.
"""
from __future__ import annotations

import torch

from snnkit.neuron import NeuronParams, lif_step
from snnkit.surrogate import Surrogate


def unit_roundoff(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps / 2


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def sigmoid_error(d: torch.Tensor, alpha: float, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(σ'(d), a bound on a float pass's |Δσ'|) for the sigmoid surrogate, in float64."""
    z = alpha * d
    sig = torch.sigmoid(z)
    dsig = sig * ((1 - sig) * (8 + 3 * z.abs()) * u + 5 * u)
    return alpha * sig * (1 - sig), alpha * (dsig * (1 + dsig) + 3 * u * sig * (1 - sig))


def triangle_error(d: torch.Tensor, alpha: float, u: float) -> tuple[torch.Tensor, torch.Tensor]:
    """α·max(1 − |d|, 0): d, 1 − |d| and the product each round once (the clamp is 1-Lipschitz)."""
    return alpha * (1 - d.abs()).clamp_min(0), alpha * u * (d.abs() + 2 * (1 - d.abs()).abs())


SURROGATE_ERRORS = {"sigmoid": sigmoid_error, "triangle": triangle_error}


def kappa_with_bound(p: NeuronParams, u: torch.Tensor, s: torch.Tensor, sg: torch.Tensor, dsg: torch.Tensor,
                     u_r: float) -> tuple[torch.Tensor, torch.Tensor]:
    """κ_t = ∂u_{t+1}/∂u_t and the bound on a float pass's |Δκ|: λ·(a + b·σ') for the soft and hard
    resets, λ − b·σ' for subtract_next (b = V_sub attached, 0 detached), with B ≥ |b| and its inputs
    and the five roundings (b, b·σ', the sum, ×λ or the scale, λ itself)."""
    if p.reset == "subtract_next":
        b = 0.0 if p.detach_reset else p.subtracted
        return p.decay - b * sg, b * dsg + 5 * u_r * (p.decay + b * (sg + dsg))
    a = torch.ones_like(u) if p.reset == "soft" else 1 - s
    if p.detach_reset:
        b = B = torch.zeros_like(u)
    elif p.reset == "soft":
        b, B = torch.full_like(u, -p.v_threshold), torch.full_like(u, p.v_threshold)
    else:
        b, B = p.v_reset - u, abs(p.v_reset) + u.abs()
    return p.decay * (a + b * sg), p.decay * (b.abs() * dsg + 5 * u_r * (a.abs() + B * (sg + dsg)))


@torch.no_grad()
def reference_with_bound(x_seq: torch.Tensor, p: NeuronParams, surrogate: Surrogate):
    """(spikes, r, g, bound): spikes and r from the membranes in ``x_seq``'s dtype (what every pass
    computes), g in float64 from those membranes, and the bound on any pass's |g − that|."""
    u_r, T = unit_roundoff(x_seq.dtype), x_seq.shape[0]
    errors = SURROGATE_ERRORS[surrogate.name]
    v = torch.zeros_like(x_seq[0])
    rho, drho = torch.ones_like(v, dtype=torch.float64), torch.zeros_like(v, dtype=torch.float64)
    spikes, elig, elig_err, elig_abs = [], 0.0, 0.0, 0.0
    for x in x_seq:
        s, v, u = lif_step(v, x, p)
        spikes.append(s)
        u64, s64 = u.double(), s.double()
        sg, dsg = errors(u64 - p.v_threshold, surrogate.alpha, u_r)
        elig = elig + sg * rho
        elig_err = elig_err + dsg * (rho + drho) + (sg + dsg) * drho
        elig_abs = elig_abs + (sg + dsg) * (rho + drho)
        kappa, dkappa = kappa_with_bound(p, u64, s64, sg, dsg, u_r)
        kr = (kappa.abs() + dkappa) * (rho + drho)
        rho, drho = 1 + kappa * rho, kappa.abs() * drho + dkappa * rho + u_r * (2 * kr + 1)
    g = elig / T
    bound = (elig_err + gamma(T + 2, u_r) * elig_abs) / T + u_r * (g.abs() + elig_err / T)
    s_seq = torch.stack(spikes)
    return s_seq, s_seq.sum(0) / T, g, bound


def assert_rate_and_eligibility(r: torch.Tensor, g: torch.Tensor, x_seq: torch.Tensor, p: NeuronParams,
                                surrogate: Surrogate) -> torch.Tensor:
    """r exactly the reference's, g within the bound of its float64 value (twice the bound for a
    float64 pass, whose reference is itself float64); returns the reference spikes."""
    s_ref, r_ref, g64, bound = reference_with_bound(x_seq, p, surrogate)
    assert torch.equal(r, r_ref)
    if x_seq.dtype == torch.float64:
        bound = 2 * bound
    diff = (g.double() - g64).abs()
    worst = int((diff - bound).argmax())
    assert bool((diff <= bound).all()), (f"g off by {float(diff.flatten()[worst]):.3g} against a rounding bound "
                                         f"of {float(bound.flatten()[worst]):.3g}")
    return s_ref


def assert_spike_pass(out, x_seq: torch.Tensor, p: NeuronParams, surrogate: Surrogate) -> None:
    """A pass's (spikes, r, g): the spikes too are exactly the reference's."""
    s, r, g = out
    assert torch.equal(s, assert_rate_and_eligibility(r, g, x_seq, p, surrogate))

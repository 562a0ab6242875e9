"""The rate_M spike pass of one LIF layer as one Triton kernel: all T steps in one launch.

Each program owns BLOCK neurons and keeps their potential, spike and eligibility sums and ρ_t in
registers (fp32); it reads the T input currents once and writes the T spikes once, then r and g. It
computes what :func:`.eligibility.lif_multistep_record` computes (docs/spec/rate_backprop.md §2.1), for
every reset mode and detach setting with the sigmoid surrogate: u_t = λ·v_{t−1} + x_t (then
− V_sub·s_{t−1} for subtract_next) rounded as the reference rounds it (no fused multiply-add), so the
spikes and r are the reference's bit for bit and g equals it up to the rounding of the sigmoid.

On CPU tensors the kernel runs under ``TRITON_INTERPRET=1`` (set before ``triton`` is imported):
that is how the tests check it without a GPU.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ...neuron import NeuronParams
from ...surrogate import Sigmoid

BLOCK = 1024
RESET_CODES = {"soft": 0, "hard": 1, "subtract_next": 2}  # the kernel's RESET


@triton.jit(do_not_specialize=["T"])
def _lif_record_kernel(x_ptr, s_ptr, r_ptr, g_ptr, n, T,
                       decay, v_th, v_reset, v_sub, alpha,
                       RESET: tl.constexpr, DETACH: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x0 = tl.load(x_ptr + offs, mask=mask, other=0.0)
    v = tl.zeros_like(x0)
    s_sum = tl.zeros_like(x0)
    e_sum = tl.zeros_like(x0)
    rho = tl.zeros_like(x0) + 1.0
    s = tl.zeros_like(x0)
    for t in range(T):
        x = tl.load(x_ptr + t * n + offs, mask=mask, other=0.0)
        u = decay * v + x
        if RESET == 2:
            u = u - v_sub * s  # the previous step's spike, after the decay
        d = u - v_th
        s = tl.where(d >= 0.0, 1.0, 0.0).to(x.dtype)
        sig = tl.sigmoid(alpha * d)
        sg = alpha * sig * (1.0 - sig)  # σ'(u − V_th)
        s_sum += s
        e_sum += sg * rho
        if RESET == 0:
            if DETACH:
                kappa = tl.zeros_like(x) + decay
            else:
                kappa = decay * (1.0 - v_th * sg)
            v = u - v_th * s
        elif RESET == 1:
            if DETACH:
                kappa = decay * (1.0 - s)
            else:
                kappa = decay * ((1.0 - s) + (v_reset - u) * sg)
            v = tl.where(s > 0.0, v_reset, u).to(x.dtype)
        else:
            if DETACH:
                kappa = tl.zeros_like(x) + decay
            else:
                kappa = decay - v_sub * sg
            v = u
        rho = 1.0 + kappa * rho
        tl.store(s_ptr + t * n + offs, s, mask=mask)
    steps = T.to(tl.float32)
    tl.store(r_ptr + offs, tl.math.div_rn(s_sum, steps), mask=mask)  # IEEE division, as torch's
    tl.store(g_ptr + offs, tl.math.div_rn(e_sum, steps), mask=mask)


def _dense_steps(x_seq: torch.Tensor) -> torch.Tensor:
    """``x_seq`` with each step one dense block of memory, the steps one after another (a
    channels_last activation qualifies as it is); a copy only where that does not hold."""
    step = x_seq[0]
    if x_seq.stride(0) == step.numel() and (step.is_contiguous() or (
            step.dim() == 4 and step.is_contiguous(memory_format=torch.channels_last))):
        return x_seq
    return x_seq.contiguous()


def triton_multistep_record(x_seq: torch.Tensor, p: NeuronParams, surrogate: Sigmoid
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Drop-in for :func:`~.eligibility.lif_multistep_record` with the sigmoid surrogate and fp32
    currents (:func:`.fast.triton_applies`): (spikes [T, ...] laid out as ``x_seq``, r, g)."""
    x_seq = _dense_steps(x_seq)
    spikes = torch.empty_like(x_seq)
    r, g = torch.empty_like(x_seq[0]), torch.empty_like(x_seq[0])
    n = r.numel()
    _lif_record_kernel[(triton.cdiv(n, BLOCK),)](
        x_seq, spikes, r, g, n, x_seq.shape[0],
        p.decay, p.v_threshold, p.v_reset, p.subtracted, surrogate.alpha,
        RESET=RESET_CODES[p.reset], DETACH=p.detach_reset, BLOCK=BLOCK,
        enable_fp_fusion=False,  # u = λ·v + x rounded twice, as the reference does
    )
    return spikes, r, g

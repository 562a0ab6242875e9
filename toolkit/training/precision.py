"""Mixed precision and the CUDA speed settings of a run (``run.amp``, ``run.tf32``, ``run.deterministic``).

Autocast covers the model body and nothing else: methods call ``net.body`` directly, so for the
length of a ``with precision.applied(net)`` block the body's forward runs under ``torch.autocast``
and returns fp32, and each method's loss and backward run
outside autocast, as PyTorch recommends. The block installs a mode on the body
(:func:`snnkit.spiking.layer_modes`, the pattern of the neuron modes) and removes it on exit; its
parameters, buffers and ``state_dict`` keys are those of the plain network, and a copy or pickle
taken inside the block is the plain network (it runs in fp32). LIF layers integrate their membrane in fp32 whatever the
dtype of their input current (``snnkit.spiking.LIF``), so a threshold is never compared in bf16.

fp16 needs loss scaling, and the loss is computed inside each method. The scale is applied instead
to the gradient arriving at the body's output; every method's loss reaches the parameters only
through the body's outputs, so this scales every parameter gradient exactly as scaling the loss
would. The trainer's ``step()`` then unscales, skips steps with inf/NaN and updates the scale.

TF32 policy (CUDA): with ``run.tf32`` (the default) fp32 matmuls and cuDNN convolutions may use
TF32, about 1e-3 relative error in the input currents, far less than bf16's; set it false for
full fp32, e.g. to compare spike trains bit for bit. ``run.deterministic`` turns cuDNN benchmark
off and asks PyTorch for deterministic kernels (warning where none exists); otherwise cuDNN
benchmark picks the fastest convolution for each shape.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..config import RunConfig
from ..spiking import SpikingNet, layer_modes, plain_forward

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def configure_backends(run: RunConfig, device: torch.device) -> None:
    """Global PyTorch switches for this process: determinism everywhere, the rest on CUDA only."""
    if run.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's deterministic mode
    torch.use_deterministic_algorithms(run.deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not run.deterministic
        torch.backends.cudnn.deterministic = run.deterministic
        # The allow_tf32 switches, not fp32_precision: code that reads either API keeps working
        # (reading allow_tf32 raises once fp32_precision has been set).
        torch.backends.cuda.matmul.allow_tf32 = run.tf32
        torch.backends.cudnn.allow_tf32 = run.tf32


class Precision:
    """The run's autocast dtype and, for fp16, its gradient scaler."""

    def __init__(self, amp: str, device: torch.device):
        self.dtype = AMP_DTYPES[amp]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    @contextmanager
    def applied(self, net: SpikingNet) -> Iterator[None]:
        """Run ``net.body`` under autocast for the block, returning fp32 (and scaling its gradient for fp16)."""
        if self.dtype is None:
            yield
            return
        with layer_modes({net.body: self.autocast}):
            yield

    def autocast(self, body: nn.Module, *args) -> torch.Tensor:
        """The body's mode: its own forward under autocast, the output in fp32 (for fp16, its
        gradient scaled)."""
        with torch.autocast(self.device_type, dtype=self.dtype):
            out = plain_forward(body, *args)
        out = out.float()
        if self.scaler is not None and out.requires_grad:
            out.register_hook(self.scaler.scale)
        return out

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

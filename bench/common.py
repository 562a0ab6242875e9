"""Shared pieces of the benchmarks: meters, the floor, the memopt baseline, the LIF layers' inputs.

Nothing here is imported by the library; the scripts in ``bench/`` run it through the public API.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from snnkit import spiking
from snnkit.config import Config, resolve_config
from snnkit.methods import Method, StepOutput
from snnkit.spiking import LIF, Mode, MultiStep, neuron_mode
from snnkit.surrogate import heaviside


# --- memory -------------------------------------------------------------------------------------
class _Held:
    """What autograd keeps in place of a saved tensor while the meter is on."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


class SavedTensorMeter:
    """Bytes autograd holds for backward, each storage counted once, and their peak.

    A storage enters the count when the first tensor on it is saved and leaves when autograd frees
    the last one (the graph node that held it is released), so per-step backward methods show
    their true peak. Saved parameters (weights) are included.
    """

    def __init__(self):
        self.live: dict[tuple, list[int]] = {}  # storage -> [bytes, saved tensors on it]
        self.current = self.peak = 0

    def _pack(self, t: torch.Tensor) -> _Held:
        storage = t.untyped_storage()
        key = (t.device, storage.data_ptr())
        entry = self.live.get(key)
        if entry is None:
            entry = self.live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        held = _Held(t)
        weakref.finalize(held, self._release, key)
        return held

    def _release(self, key: tuple) -> None:
        entry = self.live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    @contextmanager
    def measuring(self) -> Iterator["SavedTensorMeter"]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda held: held.tensor):
            yield self


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- time ---------------------------------------------------------------------------------------
def median_seconds(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> float:
    """Median wall time of ``iters`` calls of ``fn`` after ``warmup`` calls."""
    return interleaved_medians({"": fn}, warmup, iters, device)[""]


def interleaved_medians(fns: dict[str, Callable[[], object]], warmup: int, iters: int,
                        device: torch.device) -> dict[str, float]:
    """Median wall time of each of ``fns``, called in turn in every round, so that a change in the
    machine's load hits them all alike."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(iters):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


# --- the floor: the network as an ANN ------------------------------------------------------------
class Activation(Mode):
    """A LIF layer as a stateless ANN activation: Heaviside, with the surrogate under autograd."""

    def __call__(self, lif: LIF, x: torch.Tensor) -> torch.Tensor:
        shifted = x - lif.neuron.v_threshold
        return lif.surrogate.spike(shifted) if torch.is_grad_enabled() else heaviside(shifted)


class Floor(Method):
    """The cost rate training cannot go below: T no-grad forward steps (one call on ``[T·B]``)
    plus one forward/backward at batch B of the same network."""

    def train_step(self, net, x_seq, y, step):
        with torch.no_grad(), neuron_mode(net.body, lambda _: Activation()):
            net.body(x_seq.flatten(0, 1))  # [T, B, ...] -> [T·B, ...]
        with neuron_mode(net.body, lambda _: Activation()):
            logits = net.body(x_seq.mean(0))
        loss = F.cross_entropy(logits, y)
        loss.backward()
        step()
        return StepOutput(loss.item(), logits.detach(), 0.0)


# --- SpikingJelly memopt: BPTT with gradient checkpointing ---------------------------------------
def segments(body: nn.Module) -> list[list[nn.Module]]:
    """The body's modules in order (nested Sequentials flattened), cut after each part holding a
    LIF layer: each segment is one checkpointed region."""
    cut, out = [], []
    for m in flat_modules(body):
        cut.append(m)
        if any(isinstance(x, LIF) for x in m.modules()):
            out.append(cut)
            cut = []
    return out + ([cut] if cut else [])


def flat_modules(m: nn.Module) -> list[nn.Module]:
    return [x for c in m for x in flat_modules(c)] if isinstance(m, nn.Sequential) else [m]


class Memopt(Method):
    """Multi-step BPTT with every segment of the body wrapped by SpikingJelly's
    ``memopt.checkpoint_module``: exact BPTT gradients, activations recomputed in backward.
    Backward runs inside the neuron-mode block, since recomputation runs the LIF layers again."""

    def __init__(self, T: int, net: spiking.SpikingNet):
        from spikingjelly.activation_based.memopt import checkpoint_module

        super().__init__(T)
        self.body = nn.Sequential(*[checkpoint_module(nn.Sequential(*seg)) for seg in segments(net.body)])

    def train_step(self, net, x_seq, y, step):
        T, body = x_seq.shape[0], self.body
        with neuron_mode(net.body, lambda _: MultiStep(T)):
            logits = body(x_seq.flatten(0, 1)).unflatten(0, (T, -1)).mean(0)
            loss = F.cross_entropy(logits, y)
            loss.backward()
        step()
        return StepOutput(loss.item(), logits.detach(), 0.0)


@torch.no_grad()
def lif_inputs(net: spiking.SpikingNet, x_seq: torch.Tensor) -> list[tuple[LIF, torch.Tensor]]:
    """Each LIF layer with the ``[T, B, ...]`` current it receives in the multi-step spike pass."""
    seen = []
    hooks = [lif.register_forward_pre_hook(
        lambda lif, args: seen.append((lif, args[0].unflatten(0, (x_seq.shape[0], -1)).clone())))
        for lif in spiking.spiking_layers(net.body)]
    try:
        net.run_multistep(x_seq)
    finally:
        for h in hooks:
            h.remove()
    return seen


# --- configs ------------------------------------------------------------------------------------
def labelled_config(recipe: str, label: str, *fixed: str, shared: tuple[str, ...] = ()) -> Config:
    """The config of a bench row ``METHOD[@section.key=value...]`` on ``recipe``: ``shared`` (the
    user's settings for every row), the method, the row's own overrides, then ``fixed`` (what the
    bench itself sets for every row)."""
    method, *overrides = label.split("@")
    return resolve_config(recipe, [*shared, f"method.name={method}", *overrides, *fixed])


# --- output -------------------------------------------------------------------------------------
def machine() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": sys.version.split()[0], "torch": torch.__version__}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name()
    return info


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=2) + "\n")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)

"""A SpikingJelly zoo model trained three ways: memory and time per iteration, same run, same batch.

    python bench/convert_cost.py                      # sew_resnet18 at CIFAR 32×32, batch 8, T = 4 and 8
    python bench/convert_cost.py --models sew_resnet18,spiking_resnet18 --batch 4 --T 4

Rows, on the very same zoo model (SpikingJelly's LIFNode, τ = 2, detached hard reset, its default
sigmoid surrogate) and the same input batch:

- ``rate_m``: the model converted with ``snnkit.convert`` and trained with snnkit's rate_m
  (``--compile`` on or off; off by default: compiling costs minutes on a small CPU);
- ``sj_bptt``: the user's own SpikingJelly BPTT: multi-step mode (its fastest: the neuron loops over T
  inside one call, ``functional.lif_multi_step``; SpikingJelly 2.0 has no ``backend`` argument and
  runs its PyTorch kernel on CPU), ``functional.reset_net`` after each step;
- ``sj_memopt``: the same BPTT after SpikingJelly 2.0's ``memopt.optimize_memory(level=1,
  checkpoint_budget="memory")``, which checkpoints every residual block (recomputed in backward,
  binary inputs compressed); its levels 2 to 4 search splits by measuring CUDA memory and need CUDA.

Per (model, T), each row runs alone in a fresh process for its memory: the bytes autograd saves
for backward at the peak of one iteration (counted per storage, bench/common.py's meter; it cannot
see what memopt's checkpointed blocks save again in backward) and the process's peak RSS (which
sees everything; both load-independent). Then one process holds all three for time: the median
per iteration of ``--iters`` rounds in which the rows take turns (a change in the machine's load
hits them all alike). Ratios are to SpikingJelly's BPTT at the same T. Writes
``<out>/convert_cost.{json,md}``.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (SavedTensorMeter, interleaved_medians, machine, markdown_table, peak_rss_bytes,  # noqa: E402
                    write_atomic, write_json)

import snnkit  # noqa: E402
from snnkit.methods import build_method  # noqa: E402

log = logging.getLogger("bench.convert_cost")
MIB = 2 ** 20


def zoo(name: str) -> tuple[nn.Module, type]:
    """The zoo model at 10 classes, and its residual block type (memopt's checkpoint targets)."""
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet

    lif = partial(neuron.LIFNode, tau=2.0, detach_reset=True)
    models = {"sew_resnet18": (partial(sew_resnet.sew_resnet18, cnf="ADD"), sew_resnet.BasicBlock),
              "spiking_resnet18": (spiking_resnet.spiking_resnet18, spiking_resnet.BasicBlock)}
    make, block = models[name]
    return make(spiking_neuron=lif, num_classes=10), block


class SpikingJellyStep:
    """One training iteration of SpikingJelly's own multi-step BPTT on ``model``."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer):
        from spikingjelly.activation_based import functional

        functional.set_step_mode(model, "m")
        self.model, self.optimizer, self.reset = model, optimizer, functional.reset_net

    def __call__(self, x_seq: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(self.model(x_seq).mean(0), y)  # [T, B, K] -> [B, K]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.reset(self.model)


def sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def rate_m_row(original: nn.Module, block: type, T: int, x_seq: torch.Tensor, compile_rate: str) -> Callable:
    net = snnkit.convert(original)
    method, optimizer = build_method("rate_m", T, {"compile": compile_rate}), sgd(net)

    def step():
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return lambda y: method.train_step(net, x_seq, y, step)


def sj_bptt_row(original: nn.Module, block: type, T: int, x_seq: torch.Tensor, compile_rate: str) -> Callable:
    model = copy.deepcopy(original)
    step = SpikingJellyStep(model, sgd(model))
    return lambda y: step(x_seq, y)


def sj_memopt_row(original: nn.Module, block: type, T: int, x_seq: torch.Tensor, compile_rate: str) -> Callable:
    from spikingjelly.activation_based import memopt

    model = copy.deepcopy(original)
    step = SpikingJellyStep(model, sgd(model))
    memopt.optimize_memory(model, (block,), lambda m: m(x_seq), level=1, checkpoint_budget="memory")
    step.reset(model)
    return lambda y: step(x_seq, y)


ROW_BUILDERS = {"rate_m": rate_m_row, "sj_bptt": sj_bptt_row, "sj_memopt": sj_memopt_row}
ROWS = tuple(ROW_BUILDERS)


def contenders(name: str, T: int, x_seq: torch.Tensor, compile_rate: str, rows: tuple[str, ...]
               ) -> dict[str, Callable]:
    """Each of ``rows``' training iteration (a function of the labels), all from the same initial weights."""
    torch.manual_seed(0)
    original, block = zoo(name)
    return {row: ROW_BUILDERS[row](original, block, T, x_seq, compile_rate) for row in rows}


def inputs(T: int, side: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(batch, 3, side, side)
    return x.expand(T, *x.shape), torch.randint(0, 10, (batch,))  # direct encoding: [T, B, C, H, W]


def memory(name: str, T: int, side: int, batch: int, compile_rate: str, row: str) -> dict:
    """One row alone in this process: the bytes saved for backward at the peak of an iteration (the
    meter cannot see inside memopt's checkpointed blocks, which save in backward) and the process's
    peak RSS, which sees everything."""
    x_seq, y = inputs(T, side, batch)
    step = contenders(name, T, x_seq, compile_rate, (row,))[row]
    step(y)  # lazy initialisation (and compiling) out of the way
    meter = SavedTensorMeter()
    with meter.measuring():
        step(y)
    return {"saved_bytes": meter.peak, "peak_rss_bytes": peak_rss_bytes()}


def timing(name: str, T: int, side: int, batch: int, compile_rate: str, iters: int) -> dict:
    """Every row in this process, the median time per iteration of rounds in which they take turns."""
    x_seq, y = inputs(T, side, batch)
    rows = contenders(name, T, x_seq, compile_rate, ROWS)
    return interleaved_medians({row: partial(step, y) for row, step in rows.items()}, 1, iters, torch.device("cpu"))


def run_child(kind: str, args: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps({"kind": kind, **args})],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        log.warning("%s T=%d %s did not run: %s", args["name"], args["T"], args.get("row", kind), reason)
        return {"error": reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(setting: dict, iters: int) -> dict:
    """One (model, T): each row's memory in a fresh process, then their times in one."""
    rows = {row: run_child("memory", {**setting, "row": row}) for row in ROWS}
    seconds = run_child("time", {**setting, "iters": iters})
    for row, m in rows.items():
        if "error" not in m:
            m.update({"seconds": seconds[row]} if "error" not in seconds else {"error": seconds["error"]})
    return rows


def table(results: list[dict]) -> str:
    body = []
    for r in results:
        base = r["rows"]["sj_bptt"]
        for row, m in r["rows"].items():
            if "error" in m or "error" in base:
                body.append([r["model"], r["T"], row, f"did not run: {m.get('error', base.get('error'))[:80]}",
                             "", "", "", "", ""])
                continue
            body.append([r["model"], r["T"], row, f"{m['saved_bytes'] / MIB:.1f}",
                         f"{m['saved_bytes'] / base['saved_bytes']:.2f}", f"{m['peak_rss_bytes'] / MIB:.0f}",
                         f"{m['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}", f"{m['seconds'] * 1e3:.0f}",
                         f"{m['seconds'] / base['seconds']:.2f}"])
    return markdown_table(["model", "T", "row", "saved for backward (MiB)", "× sj_bptt", "peak RSS (MiB)",
                           "× sj_bptt", "time/iter (ms)", "× sj_bptt"], body)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="sew_resnet18", help="comma-separated: sew_resnet18, spiking_resnet18")
    parser.add_argument("--T", default="4,8", help="comma-separated time steps")
    parser.add_argument("--side", type=int, default=32, help="image side (CIFAR: 32)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5, help="timed rounds (each row once per round)")
    parser.add_argument("--compile", default="off", choices=("on", "off"), help="rate_m's method.compile")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child = json.loads(args.child)
        print(json.dumps({"memory": memory, "time": timing}[child.pop("kind")](**child)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    results = []
    for name in args.models.split(","):
        for T in (int(t) for t in args.T.split(",")):
            setting = {"name": name, "T": T, "side": args.side, "batch": args.batch, "compile_rate": args.compile}
            results.append({"model": name, "T": T, "rows": measure(setting, args.iters)})
            log.info("%s T=%d %.0fs", name, T, time.perf_counter() - start)
    command = "python bench/convert_cost.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    report = {"command": command, "machine": info, "side": args.side, "batch": args.batch, "iters": args.iters,
              "compile": args.compile, "seconds": time.perf_counter() - start, "results": results}
    md = (f"`{command}` on {info['processor']}, {info['cpus']} CPUs, torch {torch.__version__}; "
          f"{args.side}×{args.side} input, batch {args.batch}, median of {args.iters} interleaved rounds\n\n"
          + table(results))
    write_json(args.out / "convert_cost.json", report)
    write_atomic(args.out / "convert_cost.md", md + "\n")
    print(md)


if __name__ == "__main__":
    main()

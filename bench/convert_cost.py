"""A SpikingJelly zoo model trained three ways: memory and time per iteration, same run, same batch.

    python bench/convert_cost.py                      # sew_resnet18 at CIFAR 32×32, batch 8, T = 4 and 8
    python bench/convert_cost.py --models sew_resnet18,spiking_resnet18 --batch 4 --T 4

Rows, on the very same zoo model (SpikingJelly's LIFNode, τ = 2, detached hard reset, its default
sigmoid surrogate) and the same input batch:

- ``rate_m``: the model converted with ``snnkit.convert`` and trained with snnkit's rate_m
  (``--compile`` on or off; off by default: compiling costs minutes on a small CPU);
- ``sj_bptt``: the user's own SpikingJelly BPTT: multi-step mode, the ``torch`` backend (SpikingJelly's
  fastest on CPU; ``cupy`` and ``triton`` are CUDA backends), ``functional.reset_net`` after each step;
- ``sj_memopt``: the same BPTT after SpikingJelly 2.0's ``memopt.optimize_memory(level=1,
  checkpoint_budget="memory")``, which checkpoints every residual block (recomputed in backward,
  binary inputs compressed); its levels 2 to 4 search splits by measuring CUDA memory and need CUDA.

Per (model, T), one fresh process holds all three: the bytes autograd saves for backward at the
peak of one iteration (counted per storage, bench/common.py's meter; load-independent), then the
median time per iteration of ``--iters`` rounds in which the rows take turns (a change in the
machine's load hits them all alike), with each row's ratio to SpikingJelly's BPTT. Writes
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
from common import SavedTensorMeter, interleaved_medians, machine, markdown_table, write_atomic, write_json  # noqa: E402

import snnkit  # noqa: E402
from snnkit.methods import build_method  # noqa: E402

log = logging.getLogger("bench.convert_cost")
ROWS = ("rate_m", "sj_bptt", "sj_memopt")
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
        functional.set_backend(model, "torch")
        self.model, self.optimizer, self.reset = model, optimizer, functional.reset_net

    def __call__(self, x_seq: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(self.model(x_seq).mean(0), y)  # [T, B, K] -> [B, K]
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.reset(self.model)


def contenders(name: str, T: int, x_seq: torch.Tensor, compile_rate: str) -> dict[str, Callable]:
    """Each row's iteration, all from the same initial weights."""
    from spikingjelly.activation_based import memopt

    torch.manual_seed(0)
    original, block = zoo(name)
    net = snnkit.convert(original)
    rate_m = build_method("rate_m", T, {"compile": compile_rate})
    rate_opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)

    def rate_step():
        rate_opt.step()
        rate_opt.zero_grad(set_to_none=True)

    bptt_model, memopt_model = copy.deepcopy(original), copy.deepcopy(original)
    bptt = SpikingJellyStep(bptt_model, torch.optim.SGD(bptt_model.parameters(), lr=1e-3, momentum=0.9))
    checkpointed = SpikingJellyStep(memopt_model, torch.optim.SGD(memopt_model.parameters(), lr=1e-3, momentum=0.9))
    memopt.optimize_memory(memopt_model, (block,), lambda m: m(x_seq), level=1, checkpoint_budget="memory")
    checkpointed.reset(memopt_model)
    return {"rate_m": lambda y: rate_m.train_step(net, x_seq, y, rate_step),
            "sj_bptt": lambda y: bptt(x_seq, y), "sj_memopt": lambda y: checkpointed(x_seq, y)}


def measure(name: str, T: int, side: int, batch: int, iters: int, compile_rate: str) -> dict:
    torch.manual_seed(1)
    x = torch.rand(batch, 3, side, side)
    x_seq, y = x.expand(T, *x.shape), torch.randint(0, 10, (batch,))  # direct encoding: [T, B, C, H, W]
    rows = contenders(name, T, x_seq, compile_rate)
    saved = {}
    for row, step in rows.items():
        step(y)  # lazy initialisation (and compiling) out of the way
        meter = SavedTensorMeter()
        with meter.measuring():
            step(y)
        saved[row] = meter.peak
    seconds = interleaved_medians({row: partial(step, y) for row, step in rows.items()}, 1, iters,
                                  torch.device("cpu"))
    return {row: {"saved_bytes": saved[row], "seconds": seconds[row]} for row in rows}


def run_child(args: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(args)], capture_output=True, text=True)
    if proc.returncode != 0:
        reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        log.warning("%s T=%d did not run: %s", args["name"], args["T"], reason)
        return {"error": reason}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(results: list[dict]) -> str:
    body = []
    for r in results:
        if "error" in r:
            body.append([r["model"], r["T"], f"did not run: {r['error'][:80]}", "", "", "", ""])
            continue
        base = r["rows"]["sj_bptt"]
        for row, m in r["rows"].items():
            body.append([r["model"], r["T"], row, f"{m['saved_bytes'] / MIB:.1f}",
                         f"{m['saved_bytes'] / base['saved_bytes']:.2f}", f"{m['seconds'] * 1e3:.0f}",
                         f"{m['seconds'] / base['seconds']:.2f}"])
    return markdown_table(["model", "T", "row", "saved for backward (MiB)", "× sj_bptt", "time/iter (ms)",
                           "× sj_bptt"], body)


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
        print(json.dumps(measure(**json.loads(args.child))))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    results = []
    for name in args.models.split(","):
        for T in (int(t) for t in args.T.split(",")):
            setting = {"name": name, "T": T, "side": args.side, "batch": args.batch, "iters": args.iters,
                       "compile_rate": args.compile}
            child = run_child(setting)
            results.append({"model": name, "T": T, **({"error": child["error"]} if "error" in child
                                                     else {"rows": child})})
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

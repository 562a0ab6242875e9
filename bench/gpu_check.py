"""Everything snnkit claims about CUDA, checked in one command on one GPU:

    python bench/gpu_check.py            # about 5 minutes on one H100/H200; stops without CUDA

1. the CUDA-marked tests (``pytest -m cuda``: the Triton spike pass against the reference, AMP);
2. training throughput (images/s) and peak memory (``torch.cuda.max_memory_allocated``) of bptt,
   rate_m and rate_s at T = 1, 4, 8 on CIFAR-shaped resnet18 (full width) at batch 128, bf16
   autocast, channels_last: 9 configurations of 3 warm-up and 10 timed iterations each;
3. the rate_M spike pass at T = 4 and 8, same model and batch: the Triton kernel against the eager
   (unfused) pass and the pure-function reference;
4. with two or more GPUs, one epoch of a 2-process ``torchrun`` run of the digits recipe (rate_m).

Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``. By design each step is bounded
(pytest and torchrun get 240 s each; the measurements are about 2 minutes at these sizes).
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, write_atomic, write_json  # noqa: E402
from train_cost import MIB, Setting, fmt, measure  # noqa: E402

log = logging.getLogger("bench.gpu_check")
ROOT = Path(__file__).resolve().parents[1]
METHODS = [("bptt", {"layout": "multi"}), ("rate_m", {}), ("rate_s", {})]
STEP_LIMIT_SECONDS = 240


def last_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[-1]


def cuda_tests() -> dict:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True, timeout=STEP_LIMIT_SECONDS)
    return {"passed": proc.returncode == 0, "summary": last_line(proc.stdout),
            "output_tail": proc.stdout[-4000:] if proc.returncode else ""}


def training(base: Setting, Ts: list[int]) -> list[dict]:
    rows = []
    for T in Ts:
        for method, options in METHODS:
            s = Setting(**{**asdict(base), "T": T, "row": method, "method": method, "options": options})
            out = measure(s)
            rows.append({**asdict(s), **out, "images_per_second": s.batch / out["seconds"]})
            log.info("%s T=%d: %.0f images/s, %s MiB peak", method, T, rows[-1]["images_per_second"],
                     fmt(out["cuda_max_allocated_bytes"], MIB, 0))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    return rows


def spike_pass(base: Setting, Ts: list[int]) -> list[dict]:
    rows = []
    for T in Ts:
        s = Setting(**{**asdict(base), "T": T, "row": "spike_pass", "method": "spike_pass",
                       "amp": "none", "channels_last": False})
        rows.append({**asdict(s), **measure(s)})
        log.info("spike pass T=%d: Triton %.2fx the eager pass", T, rows[-1]["speedup_over_eager"])
    return rows


def torchrun_step() -> dict:
    if torch.cuda.device_count() < 2:
        return {"ran": False, "reason": f"{torch.cuda.device_count()} GPU visible; needs 2"}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",  # torchrun
               "-m", "snnkit.cli", "train", "--method", "rate_m", "--epochs", "1", "--amp", "bf16",
               "--set", "run.sync_bn=true", "--set", f"run.out_dir={out}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=STEP_LIMIT_SECONDS)
    return {"ran": True, "command": " ".join(cmd[1:-2]), "passed": proc.returncode == 0,
            "summary": last_line(proc.stdout if proc.returncode == 0 else proc.stderr)}


def report(result: dict) -> str:
    md = [f"`python bench/gpu_check.py` on {result['machine'].get('cuda_device')}, torch {torch.__version__}, "
          f"{result['seconds']:.0f} s", "",
          f"CUDA tests: {'passed' if result['tests']['passed'] else 'FAILED'} ({result['tests']['summary']})", ""]
    md.append(markdown_table(
        ["method", "T", "images/s", "peak CUDA memory (MiB)", "saved for backward (MiB)", "time/iter (ms)"],
        [[r["row"], r["T"], f"{r['images_per_second']:.0f}", fmt(r["cuda_max_allocated_bytes"], MIB, 0),
          fmt(r["saved_bytes"], MIB, 1), fmt(r["seconds"], 1e-3)] for r in result["training"]]))
    md += ["", "rate_M spike pass (no autograd), median ms: reference, eager (unfused), Triton:", ""]
    md.append(markdown_table(
        ["T", "network: reference", "eager", "Triton", "× eager", "LIF layers: reference", "eager", "Triton", "× eager"],
        [[r["T"], *(fmt(r[f"{k}_seconds"], 1e-3, 2) for k in ("reference", "eager", "fused")),
          fmt(r["speedup_over_eager"], digits=2),
          *(fmt(r[f"lif_{k}_seconds"], 1e-3, 2) for k in ("reference", "eager", "fused")),
          fmt(r["lif_speedup_over_eager"], digits=2)] for r in result["spike_pass"]]))
    run = result["torchrun"]
    md += ["", f"torchrun, 2 processes: {run['summary'] if run['ran'] else 'not run: ' + run['reason']}"]
    return "\n".join(md) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit("gpu_check needs a CUDA device and torch.cuda.is_available() is False; run it on a GPU machine")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    start = time.perf_counter()
    base = Setting("resnet18", 1.0, 128, 1, "", "", warmup=3, iters=10, device="cuda", amp="bf16",
                   channels_last=True)
    result = {"machine": machine()}
    result["tests"] = cuda_tests()
    log.info("CUDA tests: %s", result["tests"]["summary"])
    result["training"] = training(base, [1, 4, 8])
    result["spike_pass"] = spike_pass(base, [4, 8])
    result["torchrun"] = torchrun_step()
    result["seconds"] = time.perf_counter() - start
    md = report(result)
    write_json(args.out / "gpu_check.json", result)
    write_atomic(args.out / "gpu_check.md", md)
    print(md)
    if not result["tests"]["passed"] or (result["torchrun"]["ran"] and not result["torchrun"]["passed"]):
        sys.exit("gpu_check: a check failed; see gpu_check.md")


if __name__ == "__main__":
    main()

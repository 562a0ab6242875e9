"""onnxruntime vs PyTorch eager inference latency on CPU, measured in the same run.

    python bench/onnx_latency.py [--threads 1] [--repeats 20] [--out bench/results/onnx_latency.json]

For each model (the digits conv net, and resnet18 on CIFAR-shaped 3×32×32 input; random weights,
since latency does not depend on them) and batch size (1 and 64): the median wall time of one
forward of the exported graph in onnxruntime and of the checkpoint's SpikingNet in PyTorch eager
(no_grad, eval), both with the same thread count. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from snnkit.checkpoint import atomic_save, make_checkpoint
from snnkit.data import encode
from snnkit.deploy.export import export_checkpoint
from snnkit.files import atomic_write
from snnkit.deploy.runtime import load_onnx
from snnkit.models import ModelSpec, build_model

CASES = {"digits_convnet": (1, 8, 8), "resnet18": (3, 32, 32)}
T = 4


def median_ms(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def bench_model(name: str, shape: tuple[int, ...], batches: list[int], repeats: int, threads: int, tmp: Path) -> list[dict]:
    spec = ModelSpec(name, 10, shape[0])
    net = build_model(spec).eval()
    data = {"name": "digits", "input_shape": list(shape), "class_names": [str(i) for i in range(10)],
            "kind": "static", "normalization": {}}
    atomic_save(make_checkpoint(net, spec, T, data, {}), tmp / name / "checkpoint.pt")
    exported = export_checkpoint(tmp / name)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    model = load_onnx(exported.path, ["CPUExecutionProvider"], options)
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape)
        x_np = x.numpy()
        with torch.no_grad():
            eager = median_ms(lambda: net(encode(x, T, "static")), repeats)
        onnx_ms = median_ms(lambda: model.run(x_np), repeats)
        rows.append({"model": name, "input": list(shape), "T": T, "batch": batch, "torch_eager_ms": eager,
                     "onnxruntime_ms": onnx_ms, "speedup": eager / onnx_ms})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--out", type=Path, default=Path("bench/results/onnx_latency.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for m in args.models for r in bench_model(m, CASES[m], args.batches, args.repeats,
                                                              args.threads, Path(tmp))]
    env = {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": args.threads,
           "repeats": args.repeats, "cpu": platform.processor() or platform.machine()}
    atomic_write(args.out, json.dumps({"env": env, "results": rows}, indent=2).encode())
    table = Table(title=f"CPU latency, median of {args.repeats}, {args.threads} thread(s), T = {T}")
    for col in ("model", "batch", "PyTorch eager ms", "onnxruntime ms", "speed-up"):
        table.add_column(col, justify="left" if col == "model" else "right")
    for r in rows:
        table.add_row(r["model"], str(r["batch"]), f"{r['torch_eager_ms']:.2f}", f"{r['onnxruntime_ms']:.2f}",
                      f"{r['speedup']:.2f}×")
    console = Console()
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

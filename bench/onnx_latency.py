"""onnxruntime vs PyTorch eager inference latency on CPU: one step of the network and the whole sequence.

    python bench/onnx_latency.py [--threads 1] [--repeats 20] [--batches 1 64]
    python bench/onnx_latency.py --checkpoint runs/latest [--checkpoint OTHER_RUN ...]

Without ``--checkpoint``: the digits conv net and resnet18 on CIFAR-shaped 3×32×32 input, random
weights (latency does not depend on them), T = 4. With it: each trained model at its own T and
input. For each model and batch size, the median wall time, with the same thread count, of

- the whole sequence: one call of the exported T-step graph in onnxruntime, and T steps of the
  checkpoint's SpikingNet in PyTorch eager (no_grad, eval);
- one step of the network: the same weights exported at T = 1, and one step in PyTorch eager;

and the ratio sequence / (T × step), which is below 1 where the graph or the layout gains from
running the steps together. Writes JSON and prints a markdown table.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, median_seconds, write_json  # noqa: E402

from snnkit.checkpoint import atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint  # noqa: E402
from snnkit.deploy.export import export_checkpoint  # noqa: E402
from snnkit.deploy.runtime import load_onnx  # noqa: E402
from snnkit.models import ModelSpec, build_model  # noqa: E402

CASES = {"digits_convnet": (1, 8, 8), "resnet18": (3, 32, 32)}
T = 4
CPU = torch.device("cpu")


def random_checkpoint(name: str, shape: tuple[int, ...], out: Path) -> Path:
    spec = ModelSpec(name, 10, shape[0])
    data = {"name": "random", "input_shape": list(shape), "class_names": [str(i) for i in range(10)],
            "kind": "static", "normalization": {}}
    atomic_save(make_checkpoint(build_model(spec), spec, T, data, {}), out / "checkpoint.pt")
    return out / "checkpoint.pt"


def one_step_graph(ckpt: dict, out: Path) -> Path:
    """The checkpoint's weights exported at T = 1: one step of the network from rest."""
    atomic_save({**ckpt, "T": 1}, out / "checkpoint.pt")
    return export_checkpoint(out / "checkpoint.pt").path


def bench_checkpoint(path: Path, batches: list[int], repeats: int, threads: int, tmp: Path) -> list[dict]:
    ckpt = load_checkpoint(path)
    net, steps = model_from_checkpoint(ckpt), int(ckpt["T"])
    kind, shape = ckpt["data"]["kind"], tuple(ckpt["data"]["input_shape"])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    graphs = {steps: load_onnx(export_checkpoint(path, tmp / "sequence.onnx").path, ["CPUExecutionProvider"], options),
              1: load_onnx(one_step_graph(ckpt, tmp / "step"), ["CPUExecutionProvider"], options)}
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape)
        row = {"model": ckpt["model"]["name"], "checkpoint": str(path), "input": list(shape), "T": steps,
               "batch": batch}
        for label, t in (("sequence", steps), ("step", 1)):
            x_seq = x.unsqueeze(0).expand(t, *x.shape) if kind == "static" else torch.randn(t, batch, *shape)
            x_np = (x if kind == "static" else x_seq).numpy()
            with torch.no_grad():
                row[f"torch_{label}_ms"] = 1e3 * median_seconds(lambda: net(x_seq), 3, repeats, CPU)
            row[f"onnx_{label}_ms"] = 1e3 * median_seconds(lambda: graphs[t].run(x_np), 3, repeats, CPU)
        row["onnx_sequence_over_T_steps"] = row["onnx_sequence_ms"] / (steps * row["onnx_step_ms"])
        row["speedup_sequence"] = row["torch_sequence_ms"] / row["onnx_sequence_ms"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    header = ["model", "T", "batch", "PyTorch step (ms)", "PyTorch sequence (ms)", "onnxruntime step (ms)",
              "onnxruntime sequence (ms)", "sequence / (T × step)", "speed-up, sequence"]
    return markdown_table(header, [[r["model"], r["T"], r["batch"], f"{r['torch_step_ms']:.2f}",
                                    f"{r['torch_sequence_ms']:.2f}", f"{r['onnx_step_ms']:.2f}",
                                    f"{r['onnx_sequence_ms']:.2f}", f"{r['onnx_sequence_over_T_steps']:.2f}",
                                    f"{r['speedup_sequence']:.2f}×"] for r in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="a trained run directory or checkpoint (repeatable); default: random-weight models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--models", nargs="+", default=list(CASES), choices=list(CASES),
                        help="random-weight models, when no --checkpoint is given")
    parser.add_argument("--out", type=Path, default=Path("bench/results/onnx_latency.json"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(args.checkpoint or args.models):
            work = Path(tmp) / str(i)
            path = name if args.checkpoint else random_checkpoint(name, CASES[name], work)
            rows += bench_checkpoint(path, args.batches, args.repeats, args.threads, work)
    env = {**machine(), "onnxruntime": ort.__version__, "threads": args.threads, "repeats": args.repeats}
    write_json(args.out, {"env": env, "results": rows})
    print(f"CPU latency, median of {args.repeats}, {args.threads} thread(s)\n\n{table(rows)}\n\nwrote {args.out}")


if __name__ == "__main__":
    main()

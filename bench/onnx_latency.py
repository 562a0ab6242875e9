"""onnxruntime vs PyTorch eager inference latency on CPU: one step of the network and the whole
sequence, and the edge forms (int8 against float32, the streaming graph per step and for T steps).

    python bench/onnx_latency.py [--threads 1] [--repeats 20] [--batches 1 64]
    python bench/onnx_latency.py --checkpoint runs/latest [--checkpoint OTHER_RUN ...] [--data-root DIR]

Without ``--checkpoint``: the digits conv net and resnet18 on CIFAR-shaped 3×32×32 input, random
weights (latency does not depend on them; the int8 graph is calibrated on random samples), T = 4.
With it: each trained model at its own T and input (the int8 graph calibrated on its training
data, under ``--data-root`` for datasets with files). For each model and batch size, the median
wall time, with the same thread count, of

- the whole sequence: one call of the exported T-step graph in onnxruntime, and T steps of the
  checkpoint's SpikingNet in PyTorch eager (no_grad, eval);
- one step of the network: the same weights exported at T = 1, and one step in PyTorch eager;
- the int8 graph (``export --quantize int8``), one call for the whole sequence;
- the streaming graph (``export --streaming``): one call (one step, the states given), and the T
  calls of a sequence with the states carried from call to call, as a deployment runs it;

and the ratio sequence / (T × step), which is below 1 where the graph or the layout gains from
running the steps together. The contenders are interleaved, one call of each in every round, so
that a change in the machine's load hits them all alike; the sessions' threads do not spin after a
call (``session.intra_op.allow_spinning`` 0), so that one session's idle threads do not take the
cores from the next contender.
Writes JSON and prints two markdown tables.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Optional

import onnxruntime as ort
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine, markdown_table, write_json  # noqa: E402

from snnkit.checkpoint import atomic_save, load_checkpoint, make_checkpoint, model_from_checkpoint  # noqa: E402
from snnkit.data import DATASETS, DataBundle, register_dataset  # noqa: E402
from snnkit.deploy.export import export_checkpoint  # noqa: E402
from snnkit.deploy.runtime import OUTPUTS, load_onnx  # noqa: E402
from snnkit.models import ModelSpec, build_model  # noqa: E402

CASES = {"digits_convnet": (1, 8, 8), "resnet18": (3, 32, 32)}
T = 4
CPU = torch.device("cpu")


def random_samples(shape: tuple[int, ...]):
    """A dataset of random samples, which the int8 graph of a random-weight model calibrates on."""
    def load(root=None) -> DataBundle:
        data = TensorDataset(torch.randn(256, *shape, generator=torch.Generator().manual_seed(0)),
                             torch.zeros(256, dtype=torch.long))
        return DataBundle(data, data, shape, [str(i) for i in range(10)])
    return load


def random_checkpoint(name: str, shape: tuple[int, ...], out: Path) -> Path:
    if f"random_{name}" not in DATASETS:
        register_dataset(f"random_{name}")(random_samples(shape))
    spec = ModelSpec(name, 10, shape[0])
    data = {"name": f"random_{name}", "input_shape": list(shape), "class_names": [str(i) for i in range(10)],
            "kind": "static", "normalization": {}}
    atomic_save(make_checkpoint(build_model(spec), spec, T, data, {}), out / "checkpoint.pt")
    return out / "checkpoint.pt"


def one_step_graph(ckpt: dict, out: Path) -> Path:
    """The checkpoint's weights exported at T = 1: one step of the network from rest."""
    atomic_save({**ckpt, "T": 1}, out / "checkpoint.pt")
    return export_checkpoint(out / "checkpoint.pt").path


def bench_checkpoint(path: Path, batches: list[int], repeats: int, threads: int, tmp: Path,
                     data_root: Optional[str] = None) -> list[dict]:
    ckpt = load_checkpoint(path)
    net, steps = model_from_checkpoint(ckpt), int(ckpt["T"])
    kind, shape = ckpt["data"]["kind"], tuple(ckpt["data"]["input_shape"])
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads leave the cores
    files = {"sequence": export_checkpoint(path, tmp / "sequence.onnx").path, "step": one_step_graph(ckpt, tmp / "step"),
             "int8": export_checkpoint(path, tmp / "int8.onnx", form="int8", data_root=data_root).path,
             "streaming": export_checkpoint(path, tmp / "streaming.onnx", form="streaming").path}
    graphs = {form: load_onnx(file, ["CPUExecutionProvider"], options) for form, file in files.items()}
    streaming = graphs["streaming"]
    rows = []
    for batch in batches:
        x = torch.randn(batch, *shape)
        row = {"model": ckpt["model"]["name"], "checkpoint": str(path), "input": list(shape), "T": steps,
               "batch": batch, "int8_size_ratio": files["int8"].stat().st_size / files["sequence"].stat().st_size}
        x_seq, feeds = {}, {}
        for label, t in (("sequence", steps), ("step", 1)):
            x_seq[label] = x.unsqueeze(0).expand(t, *x.shape) if kind == "static" else torch.randn(t, batch, *shape)
            feeds[label] = (x if kind == "static" else x_seq[label]).numpy()
        one_call = {**streaming.feed(x_seq["step"][0].numpy()), **streaming.initial_states(batch)}
        calls = {"torch_step_ms": lambda: net(x_seq["step"]), "torch_sequence_ms": lambda: net(x_seq["sequence"]),
                 "onnx_step_ms": lambda: graphs["step"].run(feeds["step"]),
                 "onnx_sequence_ms": lambda: graphs["sequence"].run(feeds["sequence"]),
                 "int8_sequence_ms": lambda: graphs["int8"].run(feeds["sequence"]),
                 "streaming_step_ms": lambda: streaming.session.run(OUTPUTS, one_call),
                 "streaming_sequence_ms": lambda: streaming.run(feeds["sequence"])}
        with torch.no_grad():
            row.update({key: 1e3 * s for key, s in interleaved_medians(calls, 3, repeats, CPU).items()})
        row["onnx_sequence_over_T_steps"] = row["onnx_sequence_ms"] / (steps * row["onnx_step_ms"])
        row["speedup_sequence"] = row["torch_sequence_ms"] / row["onnx_sequence_ms"]
        row["int8_speedup"] = row["onnx_sequence_ms"] / row["int8_sequence_ms"]
        row["streaming_over_sequence"] = row["streaming_sequence_ms"] / row["onnx_sequence_ms"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    header = ["model", "T", "batch", "PyTorch step (ms)", "PyTorch sequence (ms)", "onnxruntime step (ms)",
              "onnxruntime sequence (ms)", "sequence / (T × step)", "speed-up, sequence"]
    return markdown_table(header, [[r["model"], r["T"], r["batch"], f"{r['torch_step_ms']:.2f}",
                                    f"{r['torch_sequence_ms']:.2f}", f"{r['onnx_step_ms']:.2f}",
                                    f"{r['onnx_sequence_ms']:.2f}", f"{r['onnx_sequence_over_T_steps']:.2f}",
                                    f"{r['speedup_sequence']:.2f}×"] for r in rows])


def edge_table(rows: list[dict]) -> str:
    header = ["model", "T", "batch", "float32 sequence (ms)", "int8 sequence (ms)", "int8 speed-up", "int8 file size",
              "streaming, one call (ms)", "streaming, T calls (ms)", "T calls / sequence"]
    return markdown_table(header, [[r["model"], r["T"], r["batch"], f"{r['onnx_sequence_ms']:.2f}",
                                    f"{r['int8_sequence_ms']:.2f}", f"{r['int8_speedup']:.2f}×",
                                    f"{r['int8_size_ratio']:.2f}×", f"{r['streaming_step_ms']:.2f}",
                                    f"{r['streaming_sequence_ms']:.2f}", f"{r['streaming_over_sequence']:.2f}"]
                                   for r in rows])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, action="append",
                        help="a trained run directory or checkpoint (repeatable); default: random-weight models")
    parser.add_argument("--data-root", help="where a --checkpoint's training data is (the int8 calibration)")
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
            rows += bench_checkpoint(path, args.batches, args.repeats, args.threads, work, args.data_root)
    env = {**machine(), "onnxruntime": ort.__version__, "threads": args.threads, "repeats": args.repeats}
    write_json(args.out, {"env": env, "results": rows})
    print(f"CPU latency, median of {args.repeats}, {args.threads} thread(s)\n\n{table(rows)}\n\n"
          f"Edge forms (onnxruntime)\n\n{edge_table(rows)}\n\nwrote {args.out}")


if __name__ == "__main__":
    main()

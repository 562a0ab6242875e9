"""Export and parity on every registered model: exporter time, node counts, the parity verdict.

    python bench/deploy_check.py [--T 4] [--width 1.0] [--samples 32] [--exporters torchscript dynamo]
                                 [--models resnet18 ...] [--out bench/results/deploy_check.json]

For each model (random weights with non-trivial BatchNorm statistics, as the tests build them:
``tests/deploy_helpers.make_realistic``; CIFAR-shaped 3×32×32 input, digits 1×8×8, vggsnn 2×48×48)
and exporter: the export time, the node count of the raw export and after onnxslim, and the
parity verdict of the simplified graph in onnxruntime (ORT_ENABLE_ALL and ORT_DISABLE_ALL) on
``--samples`` random inputs: explained (rounding, cascade) and unexplained differences, and the SNN/ANN
energy (fp32, 45 nm) of the graph's own spikes under snnkit's counting rules, as the graph runs (its
``computed_once`` layers once per sample) and with every analog layer at every step. The dynamo
exporter needs ``pip install onnxscript``. Writes JSON and prints a table.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort
import torch
from rich.console import Console
from rich.table import Table

from snnkit.deploy.costs import topology
from snnkit.deploy.efficiency import efficiency_report
from snnkit.deploy.evaluate import check_graph
from snnkit.deploy.writer import simplified, trace
from snnkit.deploy.graph import deployable
from snnkit.deploy.runtime import OUTPUTS, load_onnx
from snnkit.files import atomic_write
from snnkit.models import MODELS, ModelSpec, build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from deploy_helpers import make_realistic  # noqa: E402

SHAPES = {"digits_convnet": (1, 8, 8), "vggsnn": (2, 48, 48)}
LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def check_model(name: str, T: int, width: float, samples: int, exporters: list[str], tmp: Path) -> list[dict]:
    shape = SHAPES.get(name, (3, 32, 32))
    torch.manual_seed(0)
    net = make_realistic(build_model(ModelSpec(name, 10, shape[0], width=width)))
    graph = deployable(net, T, "static", probes=True)
    x = torch.randn(samples, *shape, generator=torch.Generator().manual_seed(1))
    topo = topology(net, shape)
    rows = []
    for exporter in exporters:
        start = time.perf_counter()
        with torch.no_grad():
            raw = trace(graph, (x[:2],), 18, {"input": 0}, OUTPUTS + graph.probe_names(), dynamo=exporter == "dynamo")
        exported = time.perf_counter()
        model = simplified(raw, OUTPUTS)
        slimmed = time.perf_counter()
        path = tmp / f"{name}-{exporter}.onnx"
        onnx.save(model, path)
        row = {"model": name, "exporter": exporter, "T": T, "width": width, "input": list(shape),
               "export_s": exported - start, "simplify_s": slimmed - exported,
               "nodes_raw": len(raw.graph.node), "nodes": len(model.graph.node)}
        for level, opt in LEVELS.items():
            options = ort.SessionOptions()
            options.graph_optimization_level = opt
            runtime = load_onnx(path, ["CPUExecutionProvider"], options)
            checked = check_graph(runtime, graph, [(x, torch.zeros(samples, dtype=torch.long))],
                                  sum(topo.neurons), topo)
            twin, got, verdict = checked.twin, checked.graph, checked.verdict
            row[level] = {"passed": verdict.passed, "rounding_flips": verdict.rounding_flips,
                          "cascade_flips": verdict.cascade_flips, "unexplained": verdict.unexplained,
                          "first_explained": None if verdict.first_explained is None
                          else f"{verdict.first_explained.layer}@{verdict.first_explained.step}",
                          "prediction_agreement": float((twin.logits.argmax(1) == got.logits.argmax(1)).mean())}
            if level == "all":
                row["computed_once"] = list(graph.computed_once)
                row["snn_over_ann"], row["snn_over_ann_every_step"] = (
                    efficiency_report(topo, checked.tally, once)["energy"]["fp32"]["snn_over_ann"]
                    for once in (graph.computed_once, ()))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--exporters", nargs="+", default=["torchscript"], choices=["torchscript", "dynamo"])
    parser.add_argument("--models", nargs="+", default=MODELS.names(), choices=MODELS.names())
    parser.add_argument("--out", type=Path, default=Path("bench/results/deploy_check.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [r for m in args.models for r in check_model(m, args.T, args.width, args.samples, args.exporters,
                                                              Path(tmp))]
    env = {"torch": torch.__version__, "onnxruntime": ort.__version__, "threads": torch.get_num_threads()}
    atomic_write(args.out, json.dumps({"env": env, "results": rows}, indent=2).encode())
    table = Table(title=f"export and parity, T = {args.T}, width {args.width}, {args.samples} samples; "
                        "parity: explained (rounding + cascade) / unexplained differences; SNN/ANN fp32 energy as the "
                        "graph runs (every analog layer at every step)")
    for col in ("model", "exporter", "export s", "nodes raw", "nodes", "ORT all", "ORT none", "SNN/ANN energy"):
        table.add_column(col, justify="left" if col in ("model", "exporter") else "right")
    for r in rows:
        verdicts = [f"{'PASS' if v['passed'] else 'FAIL'} {v['rounding_flips']}+{v['cascade_flips']} / "
                    f"{v['unexplained']}" for v in (r["all"], r["none"])]
        table.add_row(r["model"], r["exporter"], f"{r['export_s'] + r['simplify_s']:.1f}", str(r["nodes_raw"]),
                      str(r["nodes"]), *verdicts, f"{r['snn_over_ann']:.3f} ({r['snn_over_ann_every_step']:.3f})")
    console = Console()
    console.print(table)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

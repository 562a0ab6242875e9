"""Rendering an :class:`~snnkit.deploy.evaluate.EvalResult`: rich tables, a JSON file, a PNG chart."""
from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from .evaluate import Agreement, EvalResult, Parity
from snnkit.files import atomic_write


def parity_table(p: Parity) -> Table:
    v, o = p.verdict, p.outputs
    table = Table(title=f"ONNX parity at T = {p.T}: {'PASS' if p.passed else 'FAIL'} "
                        "(every differing spike explained by float32 rounding or an earlier difference)",
                  title_justify="left")
    for col in ("check", "measured"):
        table.add_column(col)
    table.add_row("spikes compared (neurons × steps × samples)", f"{v.spikes_compared:,}")
    first = v.first_explained
    table.add_row("explained differences", f"{v.explained:,} ({v.rounding_flips:,} rounding, {v.cascade_flips:,} cascade)"
                  + (f", first in {first.layer} at step {first.step}" if first else ""))
    table.add_row("unexplained differences", f"{v.unexplained:,}"
                  + (f", first: {v.first_unexplained.describe()}" if v.first_unexplained else ""))
    table.add_row("prediction agreement", f"{o.prediction_agreement:.2%}")
    table.add_row("logits max |Δ|", f"{o.logits_max_abs_diff:.3g}")
    table.add_row("accuracy PyTorch (folded twin) / ONNX", f"{o.accuracy_a:.2%} / {o.accuracy_b:.2%}")
    return table


def folding_line(f: Agreement) -> str:
    return (f"BN folding alone (checkpoint model vs the folded PyTorch twin, float32): {f.spike_count_identity:.2%} "
            f"identical spike counts, max |Δlogits| {f.logits_max_abs_diff:.3g}, accuracy {f.accuracy_a:.2%} / "
            f"{f.accuracy_b:.2%}")


def efficiency_table(report: dict) -> Table:
    table = Table(title=f"Spike efficiency per sample (T = {report['T']}, {report['samples']} samples)",
                  title_justify="left")
    for col, justify in (("layer", "left"), ("fed by", "left"), ("firing rate", "right"),
                         ("spikes", "right"), ("ops", "right"), ("ANN MACs", "right")):
        table.add_column(col, justify=justify)
    for r in report["spiking_layers"]:
        table.add_row(r["name"] + " (LIF)", "", f"{r['firing_rate']:.3f}", f"{r['spikes_per_sample']:,.0f}", "", "")
    for r in report["synaptic_layers"]:
        table.add_row(r["name"], r["source"], "", "", f"{r['ops_per_sample']:,.0f} {r['op']}", f"{r['ann_macs']:,}")
    table.add_section()
    table.add_row("total", "", f"{report['firing_rate']:.3f}", f"{report['spikes_per_sample']:,.0f}",
                  f"{report['sops_per_sample']:,.0f} AC + {report['analog_macs_per_sample']:,.0f} MAC",
                  f"{report['ann_macs_per_sample']:,}")
    return table


def energy_lines(report: dict) -> list[str]:
    lines = [f"energy per sample, {p}: SNN {e['snn_pj'] / 1e6:.4g} µJ vs ANN {e['ann_pj'] / 1e6:.4g} µJ "
             f"(SNN/ANN {e['snn_over_ann']:.3f})" for p, e in report["energy"].items()]
    return lines + [f"assumption: {a}" for a in report["assumptions"]]


def result_dict(result: EvalResult) -> dict:
    return {"checkpoint": str(result.checkpoint), "dataset": result.dataset, "T": result.T,
            "accuracy": result.accuracy, "providers": result.providers,
            "parity": None if result.parity is None else {**asdict(result.parity), "passed": result.parity.passed},
            "bn_folding": None if result.folding is None else asdict(result.folding),
            "efficiency": result.report}


def bars(ax, names: list[str], values: list[float], color) -> None:
    """Horizontal bars, first layer on top; names as tick labels (never parsed as numbers)."""
    ax.barh(range(len(names)), values, color=color)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()


def chart_png(report: dict) -> bytes:
    """Firing rate per spiking layer and operations per synaptic layer, side by side."""
    spiking, synaptic = report["spiking_layers"], report["synaptic_layers"]
    fig = Figure(figsize=(11, 0.9 + 0.28 * max(len(spiking), len(synaptic))), layout="constrained")
    FigureCanvasAgg(fig)
    rate_ax, ops_ax = fig.subplots(1, 2)
    bars(rate_ax, [r["name"] for r in spiking], [r["firing_rate"] for r in spiking], "tab:blue")
    rate_ax.set(xlabel="firing rate (spikes / neuron / step)", title="spiking layers")
    colors = ["tab:orange" if r["op"] == "AC" else "tab:gray" for r in synaptic]
    bars(ops_ax, [r["name"] for r in synaptic], [r["ops_per_sample"] for r in synaptic], colors)
    ops_ax.set(xlabel="operations per sample (orange: spike ACs, grey: analog MACs)",
               title="synaptic layers", xscale="log")
    fig.suptitle(f"T = {report['T']}, mean firing rate {report['firing_rate']:.3f}, "
                 f"{report['sops_per_sample']:,.0f} SOPs per sample")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_report(result: EvalResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``efficiency.json`` and ``efficiency.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    js = atomic_write(out_dir / "efficiency.json", json.dumps(result_dict(result), indent=2).encode())
    png = atomic_write(out_dir / "efficiency.png", chart_png(result.report))
    return js, png

"""Rendering an :class:`~snnkit.deploy.evaluate.EvalResult`: rich tables, a JSON file, a PNG chart."""
from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.table import Table

from .edge_eval import AccuracyVerdict
from .evaluate import EvalResult, Parity
from snnkit.files import atomic_write


def verdict_table(p: Parity | AccuracyVerdict) -> Table:
    return accuracy_table(p) if isinstance(p, AccuracyVerdict) else parity_table(p)


def accuracy_table(v: AccuracyVerdict) -> Table:
    p = v.comparison
    table = Table(title=f"int8 vs float32: {'PASS' if v.passed else 'FAIL'} on accuracy", title_justify="left")
    for col in ("check", "measured", "required"):
        table.add_column(col)
    table.add_row("accuracy float32 / int8", f"{p.torch_accuracy:.2%} / {p.onnx_accuracy:.2%}", "")
    table.add_row("accuracy drop", f"{v.accuracy_drop * 100:.2f} pp", f"≤ {v.max_accuracy_drop * 100:g} pp")
    table.add_row("prediction agreement", f"{p.prediction_agreement:.2%}", "reported")
    table.add_row("identical spike counts", f"{p.spike_count_identity:.2%}", "reported")
    table.add_row("logits max |Δ|", f"{p.logits_max_abs_diff:.3g}", "reported")
    return table


def early_exit_table(curve: list[float]) -> Table:
    table = Table(title="Early exit", title_justify="left")
    table.add_column("steps run", justify="right")
    table.add_column("accuracy (logits averaged over them)", justify="right")
    for t, acc in enumerate(curve, 1):
        table.add_row(str(t), f"{acc:.2%}")
    return table


def parity_table(p: Parity) -> Table:
    t = p.thresholds
    table = Table(title=f"ONNX parity: {'PASS' if p.passed else 'FAIL'}", title_justify="left")
    for col in ("check", "measured", "required"):
        table.add_column(col)
    table.add_row("logits max |Δ|", f"{p.logits_max_abs_diff:.3g}", f"≤ {t.max_logit_diff:g}")
    table.add_row("prediction agreement", f"{p.prediction_agreement:.2%}", f"≥ {t.min_agreement:.1%}")
    table.add_row("identical spike counts", f"{p.spike_count_identity:.2%}", f"≥ {t.min_spike_identity:.1%}")
    table.add_row("first layer whose counts differ", p.first_differing_layer or "none", "")
    table.add_row("accuracy PyTorch (folded twin) / ONNX", f"{p.torch_accuracy:.2%} / {p.onnx_accuracy:.2%}", "")
    return table


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
    return {"checkpoint": str(result.checkpoint), "dataset": result.dataset, "accuracy": result.accuracy,
            "providers": result.providers,
            "parity": None if result.parity is None else {**asdict(result.parity), "passed": result.parity.passed},
            "bn_folding": None if result.folding is None else asdict(result.folding),
            "accuracy_per_step": result.accuracy_per_step,
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


def early_exit_png(curve: list[float], title: str) -> bytes:
    """Accuracy against the number of steps a streaming graph has run."""
    fig = Figure(figsize=(5, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps = range(1, len(curve) + 1)
    ax.plot(steps, [100 * a for a in curve], marker="o")
    for t, a in zip(steps, curve):
        ax.annotate(f"{a:.2%}", (t, 100 * a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="time steps run", ylabel="test accuracy (%)", xticks=list(steps), title=title)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_report(result: EvalResult, out_dir: str | Path) -> tuple[Path, ...]:
    """``efficiency.json`` and ``efficiency.png`` in ``out_dir``; ``early_exit.png`` for a streaming graph."""
    out_dir = Path(out_dir)
    js = atomic_write(out_dir / "efficiency.json", json.dumps(result_dict(result), indent=2).encode())
    png = atomic_write(out_dir / "efficiency.png", chart_png(result.report))
    if result.accuracy_per_step is None:
        return js, png
    title = f"{result.dataset}, streaming graph, T = {len(result.accuracy_per_step)}"
    return js, png, atomic_write(out_dir / "early_exit.png", early_exit_png(result.accuracy_per_step, title))

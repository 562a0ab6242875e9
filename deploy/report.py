"""Rendering an :class:`~snnkit.deploy.evaluate.EvalResult`: rich tables, a JSON file, a PNG chart."""
from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import EngFormatter
from rich.console import Group
from rich.table import Table
from rich.text import Text

from .efficiency import ENERGY_PJ
from .evaluate import Agreement, EvalResult, Parity
from snnkit.files import atomic_write


def verdict_line(result: EvalResult) -> str:
    """The one line ``snnkit eval`` ends with: the form, the verdict and the number that decided it."""
    p = result.parity
    if p is None:
        return f"checkpoint at T = {result.T}: test accuracy {result.accuracy:.2%}"
    verdict = "PASS" if p.passed else "FAIL"
    if p.max_accuracy_drop is None:
        return f"{result.form} graph, ONNX parity at T = {p.T}: {verdict}, {p.verdict.unexplained:,} spikes unexplained"
    return (f"int8 graph at T = {p.T}: {verdict} on accuracy, drop {p.accuracy_drop * 100:.2f} pp "
            f"(at most {p.max_accuracy_drop * 100:g} pp)")


def parity_table(p: Parity) -> Table:
    v, o = p.verdict, p.outputs
    if p.max_accuracy_drop is None:
        title = (f"ONNX parity at T = {p.T}, spike by spike (a differing spike is explained by float32 rounding "
                 "or an earlier difference)")
    else:
        title = (f"int8 graph at T = {p.T}: gated on accuracy against float32; quantization moves spikes, so "
                 "they are reported, not gated")
    table = Table(title=title, title_justify="left")
    for col in ("check", "measured"):
        table.add_column(col)
    table.add_row("spikes compared (neurons × steps × samples)", f"{v.spikes_compared:,}")
    table.add_row("identical spikes", f"{v.spikes_compared - v.differing_spikes:,} of {v.spikes_compared:,} "
                  f"({v.differing_spikes:,} differ)")
    if p.max_accuracy_drop is None:  # an int8 graph's membranes differ by its rounding, beyond float32's bounds
        first = v.first_explained
        table.add_row("explained differences", f"{v.explained:,} ({v.rounding_flips:,} rounding, "
                      f"{v.cascade_flips:,} cascade)" + (f", first in {first.layer} at step {first.step}" if first else ""))
        table.add_row("unexplained differences", f"{v.unexplained:,}"
                      + (f", first: {v.first_unexplained.describe()}" if v.first_unexplained else ""))
    table.add_row("identical spike counts (sample, layer)", f"{o.spike_count_identity:.2%}")
    table.add_row("prediction agreement", f"{o.prediction_agreement:.2%}")
    table.add_row("logits max |Δ|", f"{o.logits_max_abs_diff:.3g}")
    table.add_row("accuracy PyTorch (folded twin) / ONNX", f"{o.accuracy_a:.2%} / {o.accuracy_b:.2%}")
    return table


def early_exit_table(curve: list[float]) -> Table:
    table = Table(title="Early exit", title_justify="left")
    table.add_column("steps run", justify="right")
    table.add_column("accuracy (logits averaged over the steps run)", justify="right")
    for t, accuracy in enumerate(curve, 1):
        table.add_row(str(t), f"{accuracy:.2%}")
    return table


def folding_line(f: Agreement) -> str:
    return (f"BN folding alone (checkpoint model vs the folded PyTorch twin, float32): {f.spike_count_identity:.2%} "
            f"identical spike counts, max |Δlogits| {f.logits_max_abs_diff:.3g}, accuracy {f.accuracy_a:.2%} / "
            f"{f.accuracy_b:.2%}")


def runs(row: dict) -> str:
    """How often the graph computes an analog-fed layer per sample: "1 run", "4 runs"."""
    n = row["runs_per_sample"]
    return f"{n} run" if n == 1 else f"{n} runs"


def sources_text(row: dict) -> str:
    """"spikes of lif1", "spike counts of lif3+lif5", "spike counts of lif20 +5 more", or "analog"."""
    names = [label.split(" ")[0] for label in row["sources"]]
    if not names:
        return row["fed_by"]
    return f"{row['fed_by']} of " + ("+".join(names) if len(names) <= 3 else f"{names[0]} +{len(names) - 1} more")


def efficiency_table(report: dict) -> Group:
    """A heading, then two tables: the spiking layers, and the synaptic layers with their operations."""
    heading = Text(f"Spike efficiency per sample: {report['model']} on {report['dataset']}, T = {report['T']}, "
                   f"{report['samples']} samples", style="italic")
    spiking = Table()
    for col in ("spiking layer", "firing rate", "spikes"):
        spiking.add_column(col, justify="left" if col == "spiking layer" else "right")
    for r in report["spiking_layers"]:
        spiking.add_row(r["label"], f"{r['firing_rate']:.3f}", f"{r['spikes_per_sample']:,.0f}")
    spiking.add_section()
    spiking.add_row("total", f"{report['firing_rate']:.3f}", f"{report['spikes_per_sample']:,.0f}")
    synaptic = Table()
    for col in ("synaptic layer", "fed by", "accumulates", "MACs", "ANN MACs"):
        synaptic.add_column(col, justify="left" if col in ("synaptic layer", "fed by") else "right")
    for r in report["synaptic_layers"]:
        analog = r["fed_by"] == "analog"
        synaptic.add_row(r["label"], sources_text(r), "" if analog else f"{r['acs_per_sample']:,.0f}",
                         f"{r['macs_per_sample']:,.0f} ({runs(r)})" if analog else "",
                         f"{r['ann_macs']:,}")
    synaptic.add_section()
    synaptic.add_row("total", "", f"{report['acs_per_sample']:,.0f}", f"{report['macs_per_sample']:,.0f}",
                     f"{report['ann_macs_per_sample']:,}")
    return Group(heading, spiking, synaptic)


def energy_lines(report: dict) -> list[str]:
    lines = [f"energy per sample, {p}: SNN {e['snn_pj'] / 1e6:.4g} µJ vs ANN {e['ann_pj'] / 1e6:.4g} µJ "
             f"(SNN/ANN {e['snn_over_ann']:.3f})" for p, e in report["energy"].items()]
    return lines + [f"neuron updates per sample: {report['neuron_updates_per_sample']:,} (not in the energy)"]


def assumption_lines(report: dict) -> list[str]:
    """The energy model's assumptions (in efficiency.json; printed under ``snnkit --verbose eval``)."""
    return [f"assumption: {a}" for a in report["assumptions"]]


def parity_dict(p: Parity) -> dict:
    return {**asdict(p), "passed": p.passed, "accuracy_drop": p.accuracy_drop,
            "verdict": {**asdict(p.verdict), "identical": p.verdict.identical}}


def result_dict(result: EvalResult) -> dict:
    return {"checkpoint": str(result.checkpoint), "form": result.form, "dataset": result.dataset, "T": result.T,
            "accuracy": result.accuracy, "accuracy_per_step": result.accuracy_per_step, "providers": result.providers,
            "parity": None if result.parity is None else parity_dict(result.parity),
            "bn_folding": None if result.folding is None else asdict(result.folding),
            "efficiency": result.report}


def bars(ax, names: list[str], values: list[float], color, xlabel: str, title: str, **kw) -> None:
    """Horizontal bars on a linear axis, first layer on top; names as tick labels (never parsed)."""
    ax.barh(range(len(names)), values, color=color, **kw)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)


FORM_TITLES = {"checkpoint": "PyTorch checkpoint", "unrolled": "unrolled float32 graph",
               "streaming": "streaming float32 graph", "int8": "int8 graph"}
PRICES = {"int8": "int8"}  # the energy preset a form's synaptic operations are priced at; fp32 otherwise
ROW_OFFSET = 0.15  # the SNN point sits this far above its row, the ANN point below: equal values stay visible


def chart(report: dict, form: str = "checkpoint", float32_layers: tuple[str, ...] = ()) -> Figure:
    """Firing rate per spiking layer; per synaptic layer its accumulates, and its energy in the SNN
    against the ANN: energy is the one axis where accumulates and MACs meet, each at its own price,
    the price of the precision ``form`` computes that layer in (an int8 graph's at int8, except its
    ``float32_layers``); the ANN's layer at the same precision."""
    preset = PRICES.get(form, "fp32")
    presets = ["fp32" if r["name"] in float32_layers else preset for r in report["synaptic_layers"]]
    spiking, synaptic = report["spiking_layers"], report["synaptic_layers"]
    fig = Figure(figsize=(15, 2.2 + 0.2 * max(len(spiking), len(synaptic), 6)), layout="constrained")
    FigureCanvasAgg(fig)
    rate_ax, ac_ax, energy_ax = fig.subplots(1, 3)
    bars(rate_ax, [r["label"] for r in spiking], [r["firing_rate"] for r in spiking], "tab:blue",
         "firing rate (spikes / neuron / step)", "spiking layers: firing rate")

    names = [r["label"] for r in synaptic]
    analog = [r["fed_by"] == "analog" for r in synaptic]
    bars(ac_ax, names, [r["acs_per_sample"] for r in synaptic], "tab:orange",
         "accumulates per sample", "synaptic layers: spike-driven accumulates")
    ac_ax.xaxis.set_major_formatter(EngFormatter())
    for i, r in enumerate(synaptic):
        if analog[i]:
            ac_ax.text(0.01, i, f"analog input: {r['macs_per_sample']:,.0f} MACs ({runs(r)})",
                       transform=ac_ax.get_yaxis_transform(), va="center", fontsize=7, color="dimgray")

    snn = [r["energy_pj"][p] for r, p in zip(synaptic, presets)]
    ann = [r["ann_macs"] * ENERGY_PJ[p][1] for r, p in zip(synaptic, presets)]
    y = np.arange(len(synaptic))
    energy_ax.hlines(y, np.minimum(snn, ann), np.maximum(snn, ann), color="lightgray", zorder=1)
    energy_ax.scatter(snn, y - ROW_OFFSET, c=["tab:gray" if a else "tab:orange" for a in analog], zorder=2)
    energy_ax.scatter(ann, y + ROW_OFFSET, marker="D", c="tab:purple", zorder=2)
    energy_ax.set_yticks(y, [])  # the same rows as the accumulates panel beside it
    energy_ax.set_ylim(len(names) - 0.5, -0.5)
    prices = preset + (f", {len(float32_layers)} layer(s) fp32" if float32_layers else "")
    energy_ax.set(xscale="log", xlabel=f"energy per sample (pJ, {prices}, 45 nm, log scale)")
    energy_ax.set_title("synaptic layers: energy, SNN vs ANN", fontsize=10)
    fig.legend(handles=[Line2D([], [], ls="", marker="o", color="tab:orange", label="SNN, accumulates"),
                              Line2D([], [], ls="", marker="o", color="tab:gray", label="SNN, MACs (analog input)"),
                              Line2D([], [], ls="", marker="D", color="tab:purple", label="ANN, MACs")],
               fontsize=8, loc="outside lower right", ncol=3)
    fig.suptitle(f"{report['model']} on {report['dataset']}, {FORM_TITLES.get(form, form)}, T = {report['T']}: "
                 f"energy per sample SNN {sum(snn) / 1e6:.3g} µJ vs ANN {sum(ann) / 1e6:.3g} µJ "
                 f"(SNN/ANN {sum(snn) / sum(ann):.2f}, {prices}, 45 nm)\nmean firing rate {report['firing_rate']:.3f}; per sample "
                 f"{report['acs_per_sample']:,.0f} accumulates + {report['macs_per_sample']:,.0f} MACs, "
                 f"the ANN {report['ann_macs_per_sample']:,} MACs", fontsize=11)
    return fig


def chart_png(report: dict, form: str, float32_layers: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    chart(report, form, float32_layers).savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def early_exit_png(curve: list[float], title: str) -> bytes:
    """Accuracy against the number of steps a streaming graph has run."""
    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    steps = range(1, len(curve) + 1)
    ax.plot(steps, [100 * a for a in curve], marker="o")
    for t, a in zip(steps, curve):
        ax.annotate(f"{a:.2%}", (t, 100 * a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.margins(x=0.08, y=0.25)  # room for the labels above the points
    ax.set(xlabel="time steps run (logits averaged over them)", ylabel="test accuracy (%)", xticks=list(steps))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def write_report(result: EvalResult, out_dir: str | Path) -> tuple[Path, ...]:
    """``efficiency.json`` and ``efficiency.png`` in ``out_dir``; ``early_exit.png`` for a streaming graph."""
    out_dir = Path(out_dir)
    js = atomic_write(out_dir / "efficiency.json", json.dumps(result_dict(result), indent=2).encode())
    png = atomic_write(out_dir / "efficiency.png", chart_png(result.report, result.form, result.float32_layers))
    if result.accuracy_per_step is None:
        return js, png
    title = f"{result.report['model']} on {result.dataset}: early exit, streaming graph, T = {result.T}"
    return js, png, atomic_write(out_dir / "early_exit.png", early_exit_png(result.accuracy_per_step, title))

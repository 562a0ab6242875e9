"""The paper's Figure 4 in kind: memory, time and test accuracy against T on one recipe's network.

    python bench/figure4.py --set data.root=/data/cifar10           # cifar10_cpu: hours on 2 cores
    python bench/figure4.py --recipe digits --train-subset 512      # every panel in minutes

Memory and time: for each T, the bytes saved for backward at the peak and the time per training
iteration of every ``--cost`` row (bptt in its multi-step layout, rate_m, rate_s, SpikingJelly's
memopt BPTT, sltt, ottt_o) on the recipe's network and batch, each in a fresh process on the same
inputs (``bench/train_cost.py``'s measurement; peak RSS in the JSON). Measured once and kept in
``<out>/figure4-<recipe>-cost.json``, reused while the settings match (``--remeasure`` measures
again), so the timing can be taken on a quiet machine apart from the long accuracy runs.

Accuracy: the recipe trained with only T changed for every ``--accuracy`` row (bptt and rate_m), on
a short budget (``--epochs``, ``--train-subset``) printed beside the plot; ``bench/accuracy.py``'s
rows, so a rerun after a kill continues where it stopped.

Writes ``<out>/figure4-<recipe>.{json,md,png}``: one picture with the three panels.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import sys
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
import train_cost  # noqa: E402
from common import machine, markdown_table, write_atomic, write_json  # noqa: E402

from snnkit.config import resolve_config  # noqa: E402
from snnkit.errors import SnnkitError  # noqa: E402
from snnkit.files import atomic_write  # noqa: E402

log = logging.getLogger("bench.figure4")
COST_ROWS = "bptt,rate_m,rate_s,memopt,sltt,ottt_o"
ACCURACY_ROWS = "bptt,rate_m"
MIB = 2 ** 20


def cost(args, model: tuple[str, float, int], Ts: list[int], methods: list[str]) -> list[dict]:
    """The memory and time rows, from the kept measurement when it was taken with these settings."""
    path = args.out / f"figure4-{args.recipe_name}-cost.json"
    settings = {"model": list(model), "T": Ts, "methods": methods, "iters": args.iters, "device": args.device}
    if path.is_file() and not args.remeasure:
        kept = json.loads(path.read_text())
        if kept["settings"] == settings:
            log.info("memory and time: %s (measured %s; --remeasure to measure again)", path, kept["machine"]["processor"])
            return kept["results"]
    base = train_cost.Setting("", 1.0, 0, 0, "", "", iters=args.iters, device=args.device)
    results = train_cost.sweep([model], Ts, methods, base, extras=False)
    write_json(path, {"settings": settings, "machine": machine(), "results": results})
    return results


def accuracy_rows(args, Ts: list[int], methods: list[str]) -> list[accuracy.Row]:
    return accuracy.make_rows([f"{m}@method.T={T}" for m in methods for T in Ts], args.recipe, args.recipe_name,
                              args.epochs, args.train_subset, args.out, tuple(args.set))


def trained(rows: list[accuracy.Row]) -> list[dict]:
    """Each row's summary with its method and T, training the ones not finished."""
    accuracy.train_unfinished(rows)
    out = []
    for row in rows:
        s = accuracy.summary(row)
        if s is not None:
            method, T = row.label.split("@method.T=")
            out.append({**s, "method": method, "T": int(T)})
    return out


def budget(args) -> str:
    return (f"{args.epochs} epoch{'s' if args.epochs != 1 else ''}"
            + (f" on {args.train_subset} training samples" if args.train_subset else "")
            + ", seed 0")


def plot_png(costs: list[dict], accs: list[dict], title: str, note: str) -> bytes:
    """Saved memory, time per iteration and test accuracy against T: the paper's three panels."""
    fig = Figure(figsize=(14, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    memory, time, acc = fig.subplots(1, 3)
    measured = [r for r in costs if "seconds" in r]
    for label in dict.fromkeys(r["row"] for r in measured):
        mine = sorted((r for r in measured if r["row"] == label), key=lambda r: r["T"])
        Ts = [r["T"] for r in mine]
        memory.plot(Ts, [r["saved_bytes"] / MIB for r in mine], marker="o", label=label)
        time.plot(Ts, [1e3 * r["seconds"] for r in mine], marker="o", label=label)
    for method in dict.fromkeys(r["method"] for r in accs):
        mine = sorted((r for r in accs if r["method"] == method), key=lambda r: r["T"])
        acc.plot([r["T"] for r in mine], [100 * r["final_acc"] for r in mine], marker="o", label=method)
    memory.set(xlabel="T", ylabel="saved for backward (MiB)", title="memory")
    time.set(xlabel="T", ylabel="time per iteration (ms)", title="time")
    acc.set(xlabel="T", ylabel="final test accuracy (%)")
    acc.set_title(f"accuracy\n{note}", fontsize=9)
    for ax in (memory, time, acc):
        ax.grid(alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=8)
        ax.set_xticks(sorted({r["T"] for r in measured} | {r["T"] for r in accs}))
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def tables(costs: list[dict], accs: list[dict], note: str) -> str:
    body = []
    for r in sorted(costs, key=lambda r: (r["T"], r["row"])):
        if "seconds" not in r:
            body.append([r["T"], r["row"], f"did not run: {r.get('error', '')[:80]}", "", "", ""])
            continue
        body.append([r["T"], r["row"], f"{r['saved_bytes'] / MIB:.1f}", f"{r['peak_rss_bytes'] / MIB:.0f}",
                     f"{1e3 * r['seconds']:.0f}", "–" if r.get("x_bptt") is None else f"{r['x_bptt']:.2f}"])
    text = markdown_table(["T", "row", "saved for backward (MiB)", "peak RSS (MiB)", "time/iter (ms)", "× bptt"], body)
    if accs:
        text += f"\n\nTest accuracy ({note}):\n\n" + markdown_table(
            ["T", "method", "final test acc (%)", "best test acc (%) (epoch)", "train s/epoch (median)"],
            [[r["T"], r["method"], f"{100 * r['final_acc']:.2f}", f"{100 * r['best_acc']:.2f} ({r['best_epoch']})",
              f"{r['seconds_per_epoch']:.1f}"] for r in sorted(accs, key=lambda r: (r["T"], r["method"]))])
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="cifar10_cpu", help="a bundled recipe or a YAML path")
    parser.add_argument("--T", default="1,2,4,6,8", help="comma-separated time steps")
    parser.add_argument("--cost", default=COST_ROWS, help="rows of the memory and time panels")
    parser.add_argument("--accuracy", default=ACCURACY_ROWS, help="rows of the accuracy panel (empty: none)")
    parser.add_argument("--epochs", type=int, default=1, help="the accuracy panel's epochs per run")
    parser.add_argument("--train-subset", type=int, default=10000, help="the accuracy panel's training samples")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every accuracy run (repeatable), e.g. data.root=/data/cifar10")
    parser.add_argument("--iters", type=int, default=3, help="timed iterations per memory/time configuration")
    parser.add_argument("--remeasure", action="store_true", help="measure memory and time again")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    Ts = [int(t) for t in args.T.split(",")]
    cost_methods = args.cost.split(",")
    known = train_cost.METHODS.names() + list(train_cost.EXTRA_ROWS)
    if unknown := sorted(set(cost_methods) - set(known)):
        parser.error(f"--cost: unknown rows {', '.join(unknown)}; choose from {', '.join(known)}")
    try:
        cfg = resolve_config(args.recipe, args.set)
        args.recipe_name = cfg.recipe
        rows = accuracy_rows(args, Ts, [m for m in args.accuracy.split(",") if m])
    except SnnkitError as e:
        parser.error(str(e))
    if cfg.model.name not in train_cost.INPUTS:
        parser.error(f"the memory and time panels know the input of {', '.join(train_cost.INPUTS)}, "
                     f"not {cfg.model.name}")
    model = (cfg.model.name, cfg.model.width, cfg.data.batch_size)
    costs = cost(args, model, Ts, cost_methods)
    accs = trained(rows)
    unfinished = [row.label for row in rows if accuracy.summary(row) is None]
    note = budget(args)
    command = "python bench/figure4.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    title = (f"{args.recipe_name}: {cfg.model.name} at width {cfg.model.width:g}, batch {cfg.data.batch_size}, "
             f"{info['processor']}, {info['cpus']} CPUs")
    md = f"`{command}` on {info['processor']}, {info['cpus']} CPUs, torch {torch.__version__}\n\n"
    md += tables(costs, accs, note) + "".join(f"\n\n{label} has not finished; rerun the command to continue it."
                                              for label in unfinished)
    stem = args.out / f"figure4-{args.recipe_name}"
    write_json(stem.with_suffix(".json"), {"command": command, "machine": info, "model": list(model),
                                           "budget": note, "cost": costs, "accuracy": accs,
                                           "unfinished": unfinished})
    write_atomic(stem.with_suffix(".md"), md + "\n")
    atomic_write(stem.with_suffix(".png"), plot_png(costs, accs, title, note))
    print(md)


if __name__ == "__main__":
    main()

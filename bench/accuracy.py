"""Test accuracy at equal epochs: every method on one recipe at its full length, restartable.

    python bench/accuracy.py                                    # fashion_mnist, 30 epochs, every method
    python bench/accuracy.py --methods bptt,rate_m,rate_s       # the spine only
    python bench/accuracy.py --recipe digits --epochs 5         # a quick check (minutes)
    python bench/accuracy.py --epochs 2 --train-subset 10000 \\
        --methods bptt,rate_m,rate_m@method.divide_grad_by_T=true   # a quick Fashion-MNIST check
    python bench/accuracy.py --recipe cifar10_cpu --set data.root=/data/cifar10 \\
        --methods bptt,rate_m,rate_s,sltt,ottt_o                    # CIFAR-10 on 2 cores: hours

Each row trains the recipe with the same seed and epochs (the online methods with their own
per-step loss); a row is a registered method, optionally followed by ``@section.key=value``
overrides for that row alone. A row runs in a fresh subprocess (its peak RSS is its own) in its
own snnkit run directory ``<out>/accuracy/<recipe>-<E>ep[-n<N>]/<row>``: a finished run is read
back and an interrupted one continues from its last completed epoch (snnkit's resume), so the same
command, rerun after a kill, loses at most one epoch of one row. ``--train-subset N`` trains on
N training samples drawn with seed 0 (the test set stays whole). ``--set section.key=value`` applies to
every row (where the data lives, say); a row already started continues with the config it began with.

Reported per row: final and best test accuracy and the final's gap to bptt, the last epoch's
training accuracy (the running mean over its batches), median training seconds per epoch, the
whole run's training time, peak RSS (and CUDA max allocated), the final test firing rate; a plot
of test accuracy against epoch and against training time, one line per row. Writes
``<out>/accuracy-<recipe>-<E>ep[-n<N>].{json,md,png}``.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch.utils.data import Subset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (labelled_config, machine, markdown_table, peak_rss_bytes, write_atomic,  # noqa: E402
                    write_json)

from snnkit.checkpoint import CHECKPOINT_NAME  # noqa: E402
from snnkit.config import Config, resolve_config  # noqa: E402
from snnkit.data import DataBundle, load_dataset  # noqa: E402
from snnkit.errors import SnnkitError  # noqa: E402
from snnkit.files import atomic_write  # noqa: E402
from snnkit.methods import METHODS  # noqa: E402
from snnkit.training import resume, train  # noqa: E402
from snnkit.training.curves import read_metrics  # noqa: E402
from snnkit.training.progress import EpochProgress  # noqa: E402

log = logging.getLogger("bench.accuracy")
MEMORY_NAME = "memory.json"  # the peak memory of the row's sessions, beside snnkit's own files
MIB = 2 ** 20


@dataclasses.dataclass(frozen=True)
class Row:
    label: str  # e.g. rate_m or rate_m@method.divide_grad_by_T=true; also its run directory's name
    recipe: str
    epochs: int
    train_subset: int | None
    group_dir: Path
    shared: tuple[str, ...] = ()  # --set overrides, for every row

    @property
    def run_dir(self) -> Path:
        return self.group_dir / self.label

    def config(self) -> Config:
        return labelled_config(self.recipe, self.label, f"optim.epochs={self.epochs}",
                               f"run.out_dir={self.group_dir}", f"run.name={self.label}",
                               shared=self.shared)


def subset(data: DataBundle, n: int | None) -> DataBundle | None:
    """``n`` training samples drawn without replacement with seed 0, in their files' order, and the
    whole test set; None (the dataset itself) without n. Drawn, not the first n: an image-folder
    dataset lists its samples class by class, so its first 10,000 CIFAR-10 images are two classes."""
    if n is None:
        return None
    drawn = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return dataclasses.replace(data, train=Subset(data.train, drawn.tolist()))


# --- the child: one row in a fresh process -------------------------------------------------------
def run_row(row: Row) -> None:
    """Train ``row``, or continue it from its last checkpoint; record the session's peak memory."""
    cfg, quiet = row.config(), EpochProgress(enabled=False)
    data = subset(load_dataset(cfg.data.name, cfg.data.root), row.train_subset)
    if (row.run_dir / CHECKPOINT_NAME).is_file():
        resume(row.run_dir, quiet, data)
    else:
        shutil.rmtree(row.run_dir, ignore_errors=True)  # killed in its first epoch: nothing to keep
        train(cfg, quiet, data)
    path = row.run_dir / MEMORY_NAME
    earlier = json.loads(path.read_text()) if path.is_file() else {}  # a session before a kill
    now = {"peak_rss_bytes": peak_rss_bytes(),
           "cuda_max_allocated_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else None}
    write_json(path, {k: max((x for x in (v, earlier.get(k)) if x is not None), default=None)
                      for k, v in now.items()})


def launch(row: Row) -> None:
    """Run ``row`` to its end in a subprocess, its log streaming through."""
    job = {**dataclasses.asdict(row), "group_dir": str(row.group_dir)}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)])
    if proc.returncode != 0:
        log.warning("%s stopped with exit status %d; rerun the command to continue it", row.label, proc.returncode)


# --- the parent: rows, table, plot ----------------------------------------------------------------
def summary(row: Row) -> dict | None:
    """The finished row's numbers, from its metrics.jsonl (results.json marks it finished); None if
    it has not finished."""
    if not (row.run_dir / "results.json").is_file():
        return None
    metrics = read_metrics(row.run_dir)
    last = metrics[-1]
    memory = row.run_dir / MEMORY_NAME
    seconds = [m["train_seconds"] for m in metrics]
    return {"row": row.label, "epochs": last["epoch"], "final_acc": last["test_acc"], "best_acc": last["test_acc_best"],
            "best_epoch": last["best_epoch"], "train_acc": last["train_acc"], "firing_rate": last["test_firing_rate"],
            "seconds_per_epoch": statistics.median(seconds), "train_seconds": sum(seconds),
            **(json.loads(memory.read_text()) if memory.is_file() else {}),
            "test_acc": [m["test_acc"] for m in metrics], "epoch_seconds": seconds}


def table(results: list[dict]) -> str:
    bptt = next((r["final_acc"] for r in results if r["row"] == "bptt"), None)
    cuda = any(r.get("cuda_max_allocated_bytes") for r in results)
    rows = []
    for r in results:
        gap = "–" if bptt is None else f"{100 * (r['final_acc'] - bptt):+.2f}"
        rss = r.get("peak_rss_bytes")
        rows.append([r["row"], r["epochs"], f"{100 * r['final_acc']:.2f}",
                     f"{100 * r['best_acc']:.2f} ({r['best_epoch']})", gap, f"{100 * r['train_acc']:.2f}",
                     f"{r['seconds_per_epoch']:.1f}",
                     f"{r['train_seconds'] / 60:.1f}", "–" if rss is None else f"{rss / MIB:.0f}",
                     *([f"{r['cuda_max_allocated_bytes'] / MIB:.0f}"] if cuda else []), f"{r['firing_rate']:.3f}"])
    return markdown_table(["row", "epochs", "final test acc (%)", "best test acc (%) (epoch)",
                           "final − bptt (pp)", "last epoch's train acc (%)", "train s/epoch (median)", "train time (min)", "peak RSS (MiB)",
                           *(["CUDA max alloc (MiB)"] if cuda else []), "test firing rate"], rows)


def plot_png(results: list[dict], title: str) -> bytes:
    """Test accuracy against epoch and against cumulative training time, one line per row."""
    fig = Figure(figsize=(11, 4), layout="constrained")
    FigureCanvasAgg(fig)
    by_epoch, by_time = fig.subplots(1, 2, sharey=True)
    for r in results:
        acc = [100 * a for a in r["test_acc"]]
        minutes = [sum(r["epoch_seconds"][: i + 1]) / 60 for i in range(len(acc))]
        by_epoch.plot(range(1, len(acc) + 1), acc, marker="o", markersize=2, label=r["row"])
        by_time.plot(minutes, acc, marker="o", markersize=2, label=r["row"])
    by_epoch.set(xlabel="epoch", ylabel="test accuracy (%)")
    by_time.set(xlabel="training time (min, evaluation excluded)")
    for ax in (by_epoch, by_time):
        ax.grid(alpha=0.3)
    by_epoch.legend(fontsize=8)
    fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def make_rows(labels: list[str], recipe: str, recipe_name: str, epochs: int, train_subset: int | None,
              out: Path, shared: tuple[str, ...]) -> list[Row]:
    """One :class:`Row` per label in the group folder its budget names, each checked to resolve to a
    valid config (an unknown method or key stops here, with the valid choices)."""
    group = f"{recipe_name}-{epochs}ep" + (f"-n{train_subset}" if train_subset else "")
    rows = [Row(label, recipe, epochs, train_subset, out / "accuracy" / group, shared) for label in labels]
    for row in rows:
        row.config()
    return rows


def parse_rows(args) -> list[Row]:
    """The rows of ``--methods`` (default: every registered method)."""
    recipe = resolve_config(args.recipe)
    return make_rows(args.methods.split(",") if args.methods else METHODS.names(), args.recipe, recipe.recipe,
                     args.epochs or recipe.optim.epochs, args.train_subset, args.out, tuple(args.set))


def train_unfinished(rows: list[Row]) -> None:
    """Train every row not finished, continuing an interrupted one from its checkpoint."""
    for row in rows:
        if summary(row) is None:
            log.info("%s: %s", row.label, "continuing" if (row.run_dir / CHECKPOINT_NAME).is_file() else "training")
            launch(row)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="fashion_mnist", help="a bundled recipe or a YAML path")
    parser.add_argument("--methods", help="comma-separated rows: METHOD[@section.key=value...] "
                                          "(default: every registered method)")
    parser.add_argument("--epochs", type=int, help="epochs per row (default: the recipe's)")
    parser.add_argument("--train-subset", type=int, help="train on N training samples drawn with seed 0")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a config override for every row (repeatable), e.g. data.root=/data/cifar10")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child:
        job = json.loads(args.child)
        run_row(Row(**{**job, "group_dir": Path(job["group_dir"]), "shared": tuple(job["shared"])}))
        return
    try:
        rows = parse_rows(args)
    except SnnkitError as e:
        parser.error(str(e))
    train_unfinished(rows)
    results = [s for s in map(summary, rows) if s is not None]
    unfinished = [row.label for row in rows if summary(row) is None]
    group = rows[0].group_dir.name
    command = "python bench/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    md = f"`{command}` on {info['processor']}, {info['cpus']} CPUs, torch {torch.__version__}\n\n"
    md += table(results) + "".join(f"\n\n{label} has not finished; rerun the command to continue it."
                                   for label in unfinished)
    write_json(args.out / f"accuracy-{group}.json", {"command": command, "machine": info, "results": results,
                                                    "unfinished": unfinished})
    write_atomic(args.out / f"accuracy-{group}.md", md + "\n")
    if results:
        cfg = rows[0].config()
        title = (f"{cfg.recipe}: {cfg.model.name}, T = {cfg.method.T}, seed {cfg.run.seed}"
                 + (f", {args.train_subset} training samples" if args.train_subset else ""))
        atomic_write(args.out / f"accuracy-{group}.png", plot_png(results, title))
    print(md)


if __name__ == "__main__":
    main()

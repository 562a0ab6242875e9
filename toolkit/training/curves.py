"""``curves.png`` of a run: loss, accuracy and firing rate against epoch, train and test, redrawn
from ``metrics.jsonl`` after every epoch (people look at a curve before they read a log)."""
from __future__ import annotations

import io
import json
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import Config
from ..files import atomic_write

CURVES_NAME = "curves.png"
PANELS = (("loss", "loss (train: the method's; test: CE)", 1.0), ("acc", "accuracy (%)", 100.0),
          ("firing_rate", "firing rate (spikes / neuron / step)", 1.0))


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def curves_png(metrics: list[dict], title: str) -> bytes:
    """Three panels side by side, train, val and test per panel; each epoch is a marked point."""
    fig = Figure(figsize=(12, 3.6))  # fixed margins: a constrained layout would double the drawing time
    FigureCanvasAgg(fig)
    epochs = [m["epoch"] for m in metrics]
    for ax, (key, label, scale) in zip(fig.subplots(1, 3), PANELS):
        for split, style in (("train", "-o"), ("val", ":^"), ("test", "--s")):
            ax.plot(epochs, [scale * m[f"{split}_{key}"] for m in metrics], style, markersize=3, label=split)
        ax.set(xlabel="epoch", ylabel=label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="center right")
    last = metrics[-1]
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.14, top=0.89, wspace=0.25)
    fig.suptitle(f"{title}, epoch {last['epoch']}: test acc {100 * last['test_acc']:.2f}%; selected on val: "
                 f"epoch {last['best_epoch']}, test acc {100 * last['test_acc_best']:.2f}%")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def write_curves(run_dir: str | Path, cfg: Config) -> Path:
    """Redraw ``run_dir/curves.png`` atomically from the run's ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    title = f"{cfg.recipe}: {cfg.model.name}, {cfg.method.name}, T = {cfg.method.T}"
    return atomic_write(run_dir / CURVES_NAME, curves_png(read_metrics(run_dir), title))

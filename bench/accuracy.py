"""Accuracy for a fixed training budget, every registered method, through the library.

    python bench/accuracy.py --quick       # digits, 5 epochs per method
    python bench/accuracy.py               # digits 30 epochs; Fashion-MNIST too when it is there

Each method trains the same model with ``snnkit.training.train`` on the bundled ``digits`` recipe
(the method name and T are the only overrides), and Fashion-MNIST when a ``fashion_mnist`` dataset
is registered and /usr/share/datasets/fashion-mnist exists. Reported per method: final and best
test accuracy, spikes per test sample (all layers and steps, final weights) and wall time.
Writes ``<out>/accuracy.{json,md}``.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, markdown_table, write_atomic, write_json  # noqa: E402

from snnkit.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from snnkit.config import resolve_config  # noqa: E402
from snnkit.data import DATASETS, encode, load_dataset  # noqa: E402
from snnkit.methods import METHODS  # noqa: E402
from snnkit.training import train  # noqa: E402
from snnkit.training.progress import EpochProgress  # noqa: E402

log = logging.getLogger("bench.accuracy")
FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
# dataset -> the overrides on the digits recipe that train it (the 8×8 digits net cannot take 28×28)
DATASET_OVERRIDES = {
    "digits": [],
    "fashion_mnist": ["data.name=fashion_mnist", f"data.root={FASHION_ROOT}", "model.name=vgg11",
                      "model.width=0.25"],
}


@torch.no_grad()
def spikes_per_sample(run_dir: Path, dataset: str, root) -> float:
    """Mean spikes per test sample of the run's final weights, over every layer and step."""
    ckpt = load_checkpoint(run_dir)
    net, T, data = model_from_checkpoint(ckpt), ckpt["T"], load_dataset(dataset, root)
    total = n = 0.0
    for x, _ in torch.utils.data.DataLoader(data.test, batch_size=256):
        total += float(net(encode(x, T, data.kind)).spike_counts.sum())
        n += x.shape[0]
    return total / n


def available(dataset: str) -> str | None:
    """None when ``dataset`` can run here, else why not."""
    if dataset == "fashion_mnist":
        if "fashion_mnist" not in DATASETS:
            return "no dataset named fashion_mnist is registered in this snnkit"
        if not FASHION_ROOT.exists():
            return f"{FASHION_ROOT} does not exist"
    return None


def run(dataset: str, method: str, T: int, epochs: int, out_dir: Path) -> dict:
    cfg = resolve_config("digits", [*DATASET_OVERRIDES[dataset], f"method.name={method}", f"method.T={T}",
                                    f"optim.epochs={epochs}", f"run.out_dir={out_dir}",
                                    f"run.name={dataset}-{method}"])
    result = train(cfg, EpochProgress(enabled=False))
    return {"dataset": dataset, "method": method, "T": T, "epochs": epochs, "model": cfg.model.name,
            "final_acc": result.final_acc, "best_acc": result.best_acc, "best_epoch": result.best_epoch,
            "spikes_per_sample": spikes_per_sample(result.run_dir, dataset, cfg.data.root),
            "seconds": result.seconds}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 epochs, digits only")
    parser.add_argument("--methods", help="comma-separated methods (default: every registered one)")
    parser.add_argument("--T", type=int, default=4)
    parser.add_argument("--epochs", type=int, help="epochs per run (default 30 on digits, 5 with --quick)")
    parser.add_argument("--fashion-epochs", type=int, default=3, help="epochs per run on Fashion-MNIST")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = args.methods.split(",") if args.methods else METHODS.names()
    for m in methods:
        METHODS.get(m)  # an unknown name stops here, listing the valid ones
    budgets = {"digits": args.epochs or (5 if args.quick else 30)}
    notes = []
    if not args.quick:
        why = available("fashion_mnist")
        if why:
            notes.append(f"Fashion-MNIST skipped: {why}.")
            log.warning(notes[-1])
        else:
            budgets["fashion_mnist"] = args.fashion_epochs
    results = []
    with tempfile.TemporaryDirectory(prefix="snnkit-accuracy-") as runs:
        for dataset, epochs in budgets.items():
            for method in methods:
                results.append(run(dataset, method, args.T, epochs, Path(runs)))
                r = results[-1]
                log.info("%s %s: final %.2f%% best %.2f%% (epoch %d), %.0f spikes/sample, %.0fs", dataset,
                         method, 100 * r["final_acc"], 100 * r["best_acc"], r["best_epoch"],
                         r["spikes_per_sample"], r["seconds"])
    command = "python bench/accuracy.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = machine()
    md = f"`{command}` on {info['processor']}, {info['cpus']} CPUs, torch {torch.__version__}\n\n"
    md += markdown_table(
        ["dataset", "model", "method", "T", "epochs", "final acc (%)", "best acc (%)", "spikes/sample", "time (s)"],
        [[r["dataset"], r["model"], r["method"], r["T"], r["epochs"], f"{100 * r['final_acc']:.2f}",
          f"{100 * r['best_acc']:.2f}", f"{r['spikes_per_sample']:.0f}", f"{r['seconds']:.0f}"] for r in results])
    md += "".join(f"\n\n{n}" for n in notes)
    write_json(args.out / "accuracy.json", {"command": command, "machine": info, "results": results, "notes": notes})
    write_atomic(args.out / "accuracy.md", md + "\n")
    print(md)


if __name__ == "__main__":
    main()

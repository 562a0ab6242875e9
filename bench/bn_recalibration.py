"""Test accuracy of trained checkpoints before and after BatchNorm recalibration, against K.

    python bench/bn_recalibration.py RUN_DIR [RUN_DIR ...] --train-subset 20000 --batches 4 16 64 0

Recalibration (:func:`snnkit.training.batchnorm.recalibrate_batchnorm`) does not change the
weights, so it can be measured post hoc on a finished run: for each run (its ``checkpoint.pt``)
and each K, the running statistics are re-estimated over the first K batches of a shuffle of the
run's own training split (``--train-subset`` as given to ``bench/accuracy.py``; K=0: every batch)
and the test set is evaluated. Writes ``<out>/bn_recalibration.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy  # noqa: E402
from common import machine, markdown_table, write_atomic, write_json  # noqa: E402

from snnkit.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from snnkit.config import config_from_dict  # noqa: E402
from snnkit.data import load_dataset, validation_split  # noqa: E402
from snnkit.evaluation import evaluate_network  # noqa: E402
from snnkit.training.batchnorm import recalibrate_batchnorm  # noqa: E402


def measure(run: Path, train_subset: int | None, ks: list[int]) -> dict:
    ckpt = load_checkpoint(run)
    cfg = config_from_dict(ckpt["config"])
    data = load_dataset(cfg.data.name, cfg.data.root)
    data = accuracy.subset(data, train_subset) or data
    train_set, _ = validation_split(data, cfg.data.val_fraction, cfg.run.seed)
    T, kind = cfg.method.T, data.kind
    test = DataLoader(data.test, batch_size=1000)
    net = model_from_checkpoint(ckpt)
    row = {"run": str(run), "method": cfg.method.name, "options": cfg.method.options, "T": T,
           "epoch": ckpt["train_state"]["epoch"], "train_batches": -(-len(train_set) // cfg.data.batch_size),
           "test_acc": {"training estimate": evaluate_network(net, test, T, kind).accuracy}}
    print(f"{run.name}: training estimate: {100 * row['test_acc']['training estimate']:.2f}%", flush=True)
    for k in ks:
        net = model_from_checkpoint(ckpt)
        shuffle = DataLoader(train_set, batch_size=cfg.data.batch_size, shuffle=True,
                             generator=torch.Generator().manual_seed(cfg.run.seed))
        used = recalibrate_batchnorm(net, shuffle, k or len(shuffle), T, kind)
        row["test_acc"][f"K={used}"] = evaluate_network(net, test, T, kind).accuracy
        print(f"{run.name}: K={used}: {100 * row['test_acc'][f'K={used}']:.2f}%", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (their checkpoint.pt)")
    parser.add_argument("--train-subset", type=int,
                        help="the --train-subset the runs were trained with (bench/accuracy.py)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16, 64, 0],
                        help="values of K to measure; 0: every training batch")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = [measure(run, args.train_subset, args.batches) for run in args.runs]
    columns = list(rows[0]["test_acc"])
    table = markdown_table(["run", "method", "T", *columns],
                           [[Path(r["run"]).name, r["method"], r["T"],
                             *(f"{100 * r['test_acc'][c]:.2f}" if c in r["test_acc"] else "" for c in columns)]
                            for r in rows])
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bn_recalibration.json", {"machine": machine(), "rows": rows})
    write_atomic(args.out / "bn_recalibration.md", table + "\n")


if __name__ == "__main__":
    main()

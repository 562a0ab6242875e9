"""How close each method's gradient is to BPTT's: per parameter, cosine and norm ratio.

    python bench/grad_agreement.py                               # fashion_mnist net at initialisation
    python bench/grad_agreement.py --checkpoint runs/NAME        # at a run's trained weights

On the same weights and the same training batches of a recipe, every method (default: the rate
methods; ``METHOD@method.key=value`` sets an option) computes one gradient
without stepping, and so does BPTT in the layout with the same BatchNorm statistics (rate_S and
the single-step methods: per step; the others: over T·B). Reported per parameter: the cosine and
||g|| / ||g_bptt||, averaged over ``--batches`` batches. A norm ratio near 1 means the recipe's
learning rate means the same for the method as for BPTT. Writes ``<out>/grad_agreement.{json,md}``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import labelled_config, markdown_table, write_atomic, write_json  # noqa: E402

from snnkit.checkpoint import load_checkpoint  # noqa: E402
from snnkit.config import resolve_config  # noqa: E402
from snnkit.data import encode, load_dataset  # noqa: E402
from snnkit.methods import Method, build_method  # noqa: E402
from snnkit.models import ModelSpec, build_model  # noqa: E402


def method_for(recipe: str, label: str) -> Method:
    """``rate_m`` or ``rate_m@method.divide_grad_by_T=true@...`` (as in accuracy.py) on ``recipe``."""
    cfg = labelled_config(recipe, label)
    return build_method(cfg.method.name, cfg.method.T, cfg.method.options)


def gradient(net, method: Method, x_seq, y) -> dict[str, torch.Tensor]:
    """The method's gradient for one batch; weights and BN running statistics are left unchanged."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    net.zero_grad(set_to_none=True)
    method.train_step(net, x_seq, y, step=lambda: None)
    net.load_state_dict(state)
    return {n: p.grad.clone() for n, p in net.named_parameters()}


def agreement(net, methods: dict[str, Method], batches, T: int, kind: str) -> dict[str, dict[str, list[float]]]:
    """{method: {parameter: [mean cosine, mean norm ratio]}} against BPTT over ``batches``."""
    sums: dict[str, dict[str, list[float]]] = {label: {} for label in methods}
    references = {layout: build_method("bptt", T, {"layout": layout}) for layout in ("multi", "single")}
    for x, y in batches:
        x_seq = encode(x, T, kind)
        ref = {layout: gradient(net, m, x_seq, y) for layout, m in references.items()}
        for label, method in methods.items():
            g_ref = ref["single" if method.per_step_statistics else "multi"]
            for name, g in gradient(net, method, x_seq, y).items():
                cos = F.cosine_similarity(g.flatten(), g_ref[name].flatten(), dim=0).item()
                ratio = (g.norm() / g_ref[name].norm()).item()
                acc = sums[label].setdefault(name, [0.0, 0.0])
                acc[0] += cos / len(batches)
                acc[1] += ratio / len(batches)
    return sums


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="fashion_mnist")
    parser.add_argument("--checkpoint", help="a run directory or checkpoint whose weights to use")
    parser.add_argument("--methods", default="rate_m,rate_s")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    cfg = resolve_config(args.recipe)
    data = load_dataset(cfg.data.name, cfg.data.root)
    torch.manual_seed(cfg.run.seed)
    net = build_model(ModelSpec(cfg.model.name, data.num_classes, data.in_channels, cfg.neuron, cfg.model.width))
    if args.checkpoint:
        net.load_state_dict(load_checkpoint(args.checkpoint)["state_dict"])
    net.train()
    loader = torch.utils.data.DataLoader(data.train, batch_size=cfg.data.batch_size, shuffle=True,
                                         generator=torch.Generator().manual_seed(cfg.run.seed))
    batches = [batch for batch, _ in zip(loader, range(args.batches))]
    methods = {label: method_for(args.recipe, label) for label in args.methods.split(",")}
    result = agreement(net, methods, batches, cfg.method.T, data.kind)
    command = "python bench/grad_agreement.py " + " ".join(sys.argv[1:] if argv is None else argv)
    rows = [[label, "bptt[single]" if methods[label].per_step_statistics else "bptt", name,
             f"{cos:.3f}", f"{ratio:.3f}"] for label, params in result.items() for name, (cos, ratio) in params.items()]
    md = f"`{command}`\n\n" + markdown_table(["method", "against", "parameter", "cosine", "norm ratio"], rows)
    write_json(args.out / "grad_agreement.json", {"command": command, "results": result})
    write_atomic(args.out / "grad_agreement.md", md + "\n")
    print(md)


if __name__ == "__main__":
    main()

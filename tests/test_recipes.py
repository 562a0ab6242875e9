"""The bundled recipes: the paper's settings (docs/spec/rate_backprop.md §5), their one-line method twins, and
short end-to-end runs of the recipes on tiny files in the real formats."""
from __future__ import annotations

import json

import pytest

from snnkit.checkpoint import CHECKPOINT_NAME
from snnkit.config import recipe_names, resolve_config
from snnkit.data import DATASETS
from snnkit.methods import build_method
from snnkit.models import MODELS
from snnkit.training import train
from snnkit.training.progress import EpochProgress

from data_files import DVS_CLASSES, write_cifar10, write_dvs_frames, write_idx_set, write_image_folders

CIFAR = dict(T=4, lr=0.1, batch_size=128, weight_decay=5e-4, epochs=300)
PAPER = {  # recipe -> (dataset, model, settings that must match §5)
    **{f"{d}_{m}": (d, m, CIFAR) for d in ("cifar10", "cifar100") for m in ("resnet18", "resnet19", "vgg11")},
    "imagenet_sew_resnet34": ("imagenet", "sew_resnet34", dict(T=4, lr=0.2, batch_size=512,
                                                               weight_decay=2e-5, epochs=100)),
    "cifar10dvs_vggsnn": ("cifar10_dvs", "vggsnn", dict(CIFAR, T=10)),
    "fashion_mnist": ("fashion_mnist", "mnist_convnet", dict(T=4)),
}
CPU_SIZED = {  # recipe -> (the paper's recipe it shrinks, the only settings it may change)
    "cifar10_cpu": ("cifar10_resnet18", {("model", "width"), ("optim", "epochs"), ("data", "batch_size"),
                                          ("data", "workers")}),
}


def test_every_paper_setting_has_a_recipe():
    assert sorted(PAPER) == sorted(set(recipe_names()) - {"digits"} - set(CPU_SIZED))


@pytest.mark.parametrize("recipe", sorted(CPU_SIZED))
def test_cpu_sized_recipes_shrink_a_paper_recipe_and_change_nothing_else(recipe):
    """Its accuracy stands for the paper's recipe at a smaller size: same data, model family, method,
    T, optimiser, schedule and augmentation."""
    paper, allowed = CPU_SIZED[recipe]
    small, full = resolve_config(recipe).to_dict(), resolve_config(paper).to_dict()
    changed = {(section, key) for section in full if isinstance(full[section], dict)
               for key in full[section] if small[section][key] != full[section][key]}
    assert changed <= allowed and small["model"]["width"] < 1


@pytest.mark.parametrize("recipe", sorted(PAPER))
def test_recipe_matches_the_paper(recipe):
    cfg = resolve_config(recipe)
    dataset, model, settings = PAPER[recipe]
    assert (cfg.data.name, cfg.model.name, cfg.method.name) == (dataset, model, "rate_m")
    assert dataset in DATASETS and model in MODELS
    actual = dict(T=cfg.method.T, lr=cfg.optim.lr, batch_size=cfg.data.batch_size,
                  weight_decay=cfg.optim.weight_decay, epochs=cfg.optim.epochs)
    assert {k: actual[k] for k in settings} == settings
    assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.schedule) == ("sgd", 0.9, "cosine")


@pytest.mark.parametrize("method", ["bptt", "rate_s"])
@pytest.mark.parametrize("recipe", sorted(PAPER))
def test_method_twins_differ_only_in_the_method(recipe, method):
    base, twin = resolve_config(recipe).to_dict(), resolve_config(recipe, [f"method.name={method}"]).to_dict()
    assert twin["method"]["name"] == method and twin["method"]["T"] == base["method"]["T"]
    assert {k: v for k, v in twin.items() if k != "method"} == {k: v for k, v in base.items() if k != "method"}


@pytest.mark.parametrize("method", ["rate_m", "rate_s"])
@pytest.mark.parametrize("recipe", recipe_names())
def test_recipes_give_rate_methods_the_loss_gradient_bptt_uses(recipe, method):
    """One lr and weight decay mean the same for every method: no recipe turns the reference's 1/T on."""
    cfg = resolve_config(recipe, [f"method.name={method}"])
    assert build_method(method, cfg.method.T, cfg.method.options).options.divide_grad_by_T is False


TINY = ["optim.epochs=1", "model.width=0.125", "data.batch_size=4", "data.workers=0"]


def run_recipe(recipe: str, root, out, extra=()) -> dict:
    cfg = resolve_config(recipe, [*TINY, f"data.root={root}", f"run.out_dir={out}", "run.name=r", *extra])
    result = train(cfg, EpochProgress(enabled=False))
    assert 0.0 <= result.final_acc <= 1.0 and (result.run_dir / CHECKPOINT_NAME).is_file()
    return json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rate_m", "bptt"])
def test_cifar10_resnet18_recipe_trains_on_tiny_pickles(tmp_path, method):
    write_cifar10(tmp_path / "data")
    metrics = run_recipe("cifar10_resnet18", tmp_path / "data", tmp_path / "runs", [f"method.name={method}"])
    assert metrics["epoch"] == 1 and metrics["train_loss"] > 0


@pytest.mark.slow
def test_cifar10dvs_vggsnn_recipe_trains_on_tiny_frames(tmp_path):
    write_dvs_frames(tmp_path / "data", per_class=10)  # the 9:1 split keeps one test sample per class
    assert run_recipe("cifar10dvs_vggsnn", tmp_path / "data", tmp_path / "runs", ["data.batch_size=45"])["epoch"] == 1


@pytest.mark.slow
def test_fashion_mnist_recipe_trains_on_tiny_idx_files(tmp_path):
    write_idx_set(tmp_path)
    assert run_recipe("fashion_mnist", tmp_path, tmp_path / "runs")["epoch"] == 1


@pytest.mark.slow
def test_imagenet_recipe_trains_on_tiny_folders(tmp_path):
    write_image_folders(tmp_path / "data", ("train", "val"), DVS_CLASSES[:2], size=(64, 48), suffix=".JPEG")
    assert run_recipe("imagenet_sew_resnet34", tmp_path / "data", tmp_path / "runs",
                      ["data.batch_size=2", "method.T=2"])["epoch"] == 1

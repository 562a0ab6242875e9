"""Every run draws curves.png from its metrics.jsonl after each epoch, for every method."""
import dataclasses

import numpy as np
import pytest
from matplotlib.image import imread
from torch.utils.data import Subset

import snnkit.training.trainer
from snnkit.config import resolve_config
from snnkit.data import load_dataset
from snnkit.methods import METHODS
from snnkit.training import train
from snnkit.training.curves import CURVES_NAME, read_metrics, write_curves
from snnkit.training.progress import EpochProgress
from png_files import png_size


@pytest.fixture
def data():
    digits = load_dataset("digits")
    return dataclasses.replace(digits, train=Subset(digits.train, range(96)), test=Subset(digits.test, range(64)))


@pytest.mark.parametrize("method", METHODS.names())
def test_every_epoch_redraws_curves_from_all_its_metrics(tmp_path, data, method, monkeypatch):
    drawn = []

    def spy(run_dir, cfg):
        drawn.append(len(read_metrics(run_dir)))
        return write_curves(run_dir, cfg)

    monkeypatch.setattr(snnkit.training.trainer, "write_curves", spy)
    cfg = resolve_config(None, [f"method.name={method}", "method.T=2", "optim.epochs=2", "model.width=0.125",
                                "data.batch_size=32", f"run.out_dir={tmp_path}", "run.name=r"])
    result = train(cfg, EpochProgress(enabled=False), data)
    assert drawn == [1, 2]
    path = result.run_dir / CURVES_NAME
    assert png_size(path) == (1200, 360)  # 12 × 3.6 inches at 100 dpi: three readable panels
    assert 20_000 < path.stat().st_size < 500_000
    pixels = imread(path)
    assert pixels.shape[:2] == (360, 1200) and np.ptp(pixels[..., :3]) > 0.5  # drawn, not blank
    assert not list(result.run_dir.glob(f".{CURVES_NAME}.*"))  # no temporary file left behind

"""Optimisers and schedules. Weight decay applies to conv/linear weights only."""
from __future__ import annotations

import torch
from torch import nn

from ..config import OptimConfig
from ..errors import ConfigError

DECAYED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay = {id(m.weight) for m in model.modules() if isinstance(m, DECAYED)}
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if id(p) in decay], "weight_decay": weight_decay},
            {"params": [p for p in params if id(p) not in decay], "weight_decay": 0.0}]


OPTIMIZERS = {
    "sgd": lambda groups, c: torch.optim.SGD(groups, lr=c.lr, momentum=c.momentum),
    "adamw": lambda groups, c: torch.optim.AdamW(groups, lr=c.lr),
}

SCHEDULES = {
    "cosine": lambda opt, c: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs, eta_min=0.0),
    "constant": lambda opt, c: torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0),
}


def make_optimizer(model: nn.Module, c: OptimConfig):
    """Returns (optimizer, per-epoch scheduler)."""
    for table, key in ((OPTIMIZERS, c.name), (SCHEDULES, c.schedule)):
        if key not in table:
            raise ConfigError(f"unknown {'optim.name' if table is OPTIMIZERS else 'optim.schedule'} "
                              f"{key!r}; choose one of: {', '.join(table)}")
    opt = OPTIMIZERS[c.name](param_groups(model, c.weight_decay), c)
    return opt, SCHEDULES[c.schedule](opt, c)

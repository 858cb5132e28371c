"""DiffusionMTL's optimiser: Adam (lr 2e-5, weight decay 1e-6, one group), the "poly" schedule
stepped once per *epoch* over a 100-epoch horizon (lr_e = lr (1 - e/100)^0.9, what the
release's main.py does whatever its comments say), gradients clipped at L2 norm 10."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

LR, WEIGHT_DECAY, POLY_POWER, EPOCHS, GRAD_CLIP_NORM = 2e-5, 1e-6, 0.9, 100, 10.0


def dense_optimizer(params: Iterable[nn.Parameter], lr: float = LR, weight_decay: float = WEIGHT_DECAY) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def poly_schedule(optimizer: torch.optim.Optimizer, epochs: int = EPOCHS, power: float = POLY_POWER
                  ) -> torch.optim.lr_scheduler.PolynomialLR:
    """Call `.step()` once per epoch."""
    return torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=epochs, power=power)

"""Classifier guidance (Dhariwal & Nichol 2021), a variant of Algorithm 1 (the `_g` rows of Tables 2-3).

`classifier_guidance(classifier, y)` is ADM's ``cond_fn`` without its scale: the gradient
``grad_z log p_phi(y | z_t, t)`` of a noisy classifier. `repro.diffusion.sampling.algorithm1`
adds ``scale * sigma_t^2 * grad`` to the mean of every step (line 12); `ddim_sample` shifts
the implied z_0 instead (ADM's ``condition_score``).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def classifier_guidance(classifier: nn.Module, y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """grad_z log p_phi(y | z_t, t) for target classes `y` [B] (ADM's cond_fn without its scale)."""

    def grad(z: Tensor, t: Tensor) -> Tensor:
        z = z.requires_grad_(True)
        log_probs = F.log_softmax(classifier(z, t), dim=-1)
        selected = log_probs[torch.arange(len(y)), y].sum()
        return torch.autograd.grad(selected, z)[0]

    return grad

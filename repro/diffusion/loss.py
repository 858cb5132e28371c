"""The multi-task training objective of MT-Diffusion (eq. 6, Algorithm 2).

    L = || eps_theta(z_t, t) - eps ||^2  +  lambda * sum_i KL( q_i(x_i) || p_theta(x_i | z_t) )

The data distribution of a modality is a point mass at the observed ``x_i`` (or the given
probability vector), so each KL reduces, up to a constant that carries no gradient, to
a cross-entropy for categorical modalities and to a squared error for continuous ones
(a Gaussian with the head output as mean and fixed variance).
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.diffusion.process import MTProcess
from repro.diffusion.vlb import vlb_term
from repro.errors import UserError

MODALITY_KINDS = ("categorical", "continuous")
IGNORE_INDEX = 255  # the "void" label of segmentation maps (Cityscapes convention)


class MultiTaskLoss:
    """Eq. 6: noise MSE plus ``lam`` times the sum of the per-modality head losses.

    ``kinds[name]`` is ``"categorical"`` (head gives logits with classes on dim 1;
    target is class indices ``[B]`` / ``[B, H, W]`` with 255 ignored, or a probability
    vector shaped like the logits, giving the soft cross-entropy) or ``"continuous"``
    (target shaped like the prediction; mean squared error over all elements).
    Returns the total and its parts: ``"eps"`` and one entry per modality (unweighted).
    """

    def __init__(self, lam: float = 0.1):
        self.lam = lam

    def __call__(
        self,
        eps_pred: Tensor,
        eps: Tensor,
        preds: Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
        kinds: Mapping[str, str],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        parts = {"eps": F.mse_loss(eps_pred, eps)}
        for name, kind in kinds.items():
            if name not in preds or name not in targets:
                raise UserError(f"modality {name!r} needs both a head prediction and a target for the loss")
            parts[name] = modality_loss(kind, preds[name], targets[name])
        total = parts["eps"] + self.lam * sum((parts[name] for name in kinds), start=torch.zeros_like(parts["eps"]))
        return total, parts


def modality_loss(kind: str, pred: Tensor, target: Tensor) -> Tensor:
    """The KL term of one modality, up to its data entropy (see the module docstring)."""
    if kind == "categorical":
        if target.is_floating_point():  # probability vectors: soft cross-entropy
            return -(target * F.log_softmax(pred, dim=1)).sum(dim=1).mean()
        return F.cross_entropy(pred, target.long(), ignore_index=IGNORE_INDEX)
    if kind == "continuous":
        return F.mse_loss(pred, target)
    raise UserError(f"unknown modality kind {kind!r}; choose one of {', '.join(MODALITY_KINDS)}")


def training_losses(
    model: Callable,
    process: MTProcess,
    z0: Tensor,
    x: Mapping[str, Tensor],
    encoders: Mapping[str, Callable[[Tensor], Tensor]],
    kinds: Mapping[str, str],
    lam: float = 0.1,
    generator: torch.Generator | None = None,
    targets: Mapping[str, Tensor] | None = None,
    *,
    steps: Tensor | None = None,
    noise: Tensor | None = None,
    vlb_weight: float = 0.0,
) -> tuple[Tensor, dict[str, Tensor]]:
    """One iteration of Algorithm 2 up to the gradient step; returns eq. 6's total and parts.

    The i-th entry of ``encoders`` is modality i of ``process`` (row i of its weights).
    Heads are trained to predict ``targets`` (default: the modality data ``x``) for the
    modalities listed in ``kinds``. ``model(z_t, t_model, e)`` returns ``(eps, preds)``
    or ``(eps, preds, var_values)``. The paper fixes the variance, so a learned one is
    trained only with ``vlb_weight > 0``: ADM's hybrid objective adds ``vlb_weight``
    times `repro.diffusion.vlb.vlb_term` (part ``"vlb"``; the mean under stop-gradient,
    ADM's weight is `HYBRID_VLB_WEIGHT` = 1).
    Randomness (steps and noise) comes from ``generator`` only, through
    ``draw_steps_and_noise``, unless ``steps`` and ``noise`` are given: data-parallel
    training draws them for the global batch and hands each rank its slice.
    """
    device = z0.device
    if (steps is None) != (noise is None):
        raise ValueError("training_losses: give both steps and noise, or neither")
    if steps is None:
        steps, noise = draw_steps_and_noise(process, z0.shape, generator, z0.dtype)
    k, noise = steps.to(device), noise.to(device)
    # The encoders carry no trainable parameters (stop-gradient, Sec. 2.2.3).
    with torch.no_grad():
        e = [encode(x[name]) for name, encode in encoders.items()]
    z_t = process.q_sample(z0, e, k, noise)
    eps_pred, preds, *rest = model(z_t, process.timesteps.to(device)[k], e)
    parts_targets = x if targets is None else targets
    total, parts = MultiTaskLoss(lam)(eps_pred, noise, preds, parts_targets, kinds)
    if vlb_weight:
        var_values = rest[0] if rest else None
        if var_values is None:
            raise UserError("the hybrid loss (L_vlb) trains a learned variance: build the model with learn_sigma")
        parts["vlb"] = vlb_term(process, z0, z_t, e, k, eps_pred, var_values).mean()
        total = total + vlb_weight * parts["vlb"]
    return total, parts


def draw_steps_and_noise(process: MTProcess, shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
                         dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The randomness of one iteration of Algorithm 2, in this order: k ~ U{0..N-1} per
    sample, then eps ~ N(0, I) of ``shape``; both on the generator's device."""
    device = _gen_device(generator, torch.device("cpu"))
    k = torch.randint(0, process.num_steps, (shape[0],), generator=generator, device=device)
    noise = torch.randn(shape, generator=generator, dtype=dtype, device=device)
    return k, noise


def _gen_device(generator: torch.Generator | None, fallback: torch.device) -> torch.device:
    return generator.device if generator is not None else fallback

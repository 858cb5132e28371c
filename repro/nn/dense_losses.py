"""DiffusionMTL's training loss on partially annotated images (design/diffusionmtl.md section 3).

Per image b with n_lab(b) labelled tasks (T tasks in all, B images in the batch):

    L_b = (T / n_lab(b)) * sum_{tau labelled in b} lambda_tau * [ l_tau(out_tau) + 0.5 * l_tau(up(P_init^tau)) ] / B
    L   = sum_b L_b

Tasks an image is not labelled for contribute nothing at all: their outputs are not even
computed (the model is called with `labelled_rows`), their targets are never read, and no
pseudo-label or consistency term exists. Each l_tau is per image, averaged over its valid
pixels (an image whose target is all ignore contributes 0 rather than 0/0):

    semseg, human_parts  cross-entropy, GT 255 ignored
    sal                  class-balanced 2-way CE: w_pos = fraction of negatives in the image,
                         class weights [1 - w_pos, w_pos], divided by the valid-pixel count
    normals              L1 between the L2-normalised prediction and the GT (3 channels summed),
                         valid where the GT is neither 255 (PASCAL) nor the zero vector (NYUD)
    edge                 BCE with logits, pos_weight 19, then / 20 (= 0.95 on positives, 0.05 on negatives)
    depth                L1 over pixels with GT != 0 (NYUD's missing depth; weights not released)
"""
from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255
PASCAL_LOSS_WEIGHTS = {"semseg": 1.0, "human_parts": 2.0, "sal": 5.0, "normals": 10.0, "edge": 50.0}
NYUD_LOSS_WEIGHTS = {"semseg": 1.0, "depth": 1.0, "normals": 1.0}  # unreleased: MTPSL's equal weights
AUX_WEIGHT = 0.5
EDGE_POS_WEIGHT = 0.95 / 0.05


def _per_image_mean(values: Tensor, valid: Tensor) -> Tensor:
    """[n, ...] pixel losses -> [n]: the mean over each image's valid pixels (0 when it has none)."""
    values = torch.where(valid, values, torch.zeros_like(values))
    return values.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


def cross_entropy_loss(logits: Tensor, target: Tensor) -> Tensor:
    valid = target != IGNORE
    ce = F.cross_entropy(logits, torch.where(valid, target, 0).long(), reduction="none")
    return _per_image_mean(ce, valid)


def balanced_saliency_loss(logits: Tensor, target: Tensor) -> Tensor:
    valid = target != IGNORE
    positive = (target == 1) & valid
    n_valid = valid.flatten(1).sum(1).clamp(min=1)
    w_pos = 1 - positive.flatten(1).sum(1) / n_valid                           # fraction of negatives
    weight = torch.where(positive, w_pos[:, None, None], 1 - w_pos[:, None, None])
    ce = F.cross_entropy(logits, torch.where(valid, target, 0).long(), reduction="none")
    return _per_image_mean(weight * ce, valid)


def normals_loss(pred: Tensor, target: Tensor) -> Tensor:
    valid = (target != IGNORE).all(1) & (target != 0).any(1)
    l1 = (F.normalize(pred, dim=1) - target).abs().sum(1)
    return _per_image_mean(l1, valid)


def edge_loss(logits: Tensor, target: Tensor) -> Tensor:
    valid = target != IGNORE
    bce = F.binary_cross_entropy_with_logits(logits[:, 0], torch.where(valid, target, 0).float(), reduction="none",
                                             pos_weight=torch.tensor(EDGE_POS_WEIGHT, device=logits.device))
    return _per_image_mean(bce / (EDGE_POS_WEIGHT + 1), valid)


def depth_loss(pred: Tensor, target: Tensor) -> Tensor:
    valid = target != 0
    return _per_image_mean((pred[:, 0] - target).abs(), valid)


TASK_LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "semseg": cross_entropy_loss, "human_parts": cross_entropy_loss, "sal": balanced_saliency_loss,
    "normals": normals_loss, "edge": edge_loss, "depth": depth_loss,
}


def labelled_rows(labelled: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
    """bool [B, T] flags -> {task: indices of the images labelled for it} (the models' `rows`)."""
    return {t: torch.nonzero(labelled[:, i], as_tuple=True)[0] for i, t in enumerate(tasks)}


def partial_label_loss(final: Mapping[str, Tensor], preliminary: Mapping[str, Tensor], targets: Mapping[str, Tensor],
                       labelled: Tensor, tasks: tuple[str, ...], weights: Mapping[str, float],
                       aux_weight: float = AUX_WEIGHT) -> tuple[Tensor, dict[str, Tensor]]:
    """(L, {task: its part of L}) for one batch (module docstring).

    final[t]: the network's output for the rows `labelled_rows(labelled, tasks)[t]` (absent
    when none); preliminary[t]: P_init upsampled for every row ({} for the baselines, which
    have no auxiliary term); targets[t]: the full batch's GT; labelled: bool [B, T].
    """
    B, T = labelled.shape
    n_lab = labelled.sum(1)
    scale = torch.where(n_lab > 0, T / n_lab.clamp(min=1), torch.zeros_like(n_lab, dtype=torch.float))
    rows = labelled_rows(labelled, tasks)
    parts: dict[str, Tensor] = {}
    for t in tasks:
        r = rows[t]
        if len(r) == 0:
            continue
        loss_fn, y = TASK_LOSSES[t], targets[t][r]
        per_image = loss_fn(final[t], y)
        if t in preliminary:
            per_image = per_image + aux_weight * loss_fn(preliminary[t][r], y)
        parts[t] = (scale[r] * weights[t] * per_image).sum() / B
    total = sum(parts.values()) if parts else torch.zeros(())
    return total, parts

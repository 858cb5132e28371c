"""Photo-to-labels scores of Table 4: per-pixel accuracy, per-class accuracy, class IoU.

The CycleGAN paper (Zhu et al., 2017, Table 2) scores generated Cityscapes label maps with
the FCN evaluation code (Long et al., 2015) that pix2pix also uses. All three numbers come
from one confusion matrix ``M[c, d]`` = number of pixels of ground-truth class ``c``
predicted as ``d``, over every pixel whose ground truth is not the ignore label:

    per-pixel acc = sum_c M[c, c] / sum M
    per-class acc = mean_c  M[c, c] / sum_d M[c, d]
    class IoU     = mean_c  M[c, c] / (sum_d M[c, d] + sum_d M[d, c] - M[c, c])

As in FCN's ``np.nanmean``, a class with no ground-truth pixels has no accuracy (0/0) and
is left out of the per-class mean; its IoU is 0 if it was predicted somewhere (a pure
false positive) and left out only if it appears in neither map.
"""
from __future__ import annotations

import numpy as np

IGNORE_LABEL = 255


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int = IGNORE_LABEL) -> np.ndarray:
    """[num_classes, num_classes] int64 counts, rows = ground truth, columns = prediction.

    Pixels whose target is `ignore_index` are skipped. Every other target and every
    prediction must be a class id in 0..num_classes-1 (ValueError otherwise: a silently
    dropped pixel would inflate the scores).
    """
    pred, target = np.asarray(pred).astype(np.int64).ravel(), np.asarray(target).astype(np.int64).ravel()
    if pred.shape != target.shape:
        raise ValueError(f"prediction and target sizes differ: {pred.size} vs {target.size}")
    keep = target != ignore_index
    pred, target = pred[keep], target[keep]
    for name, ids in (("target", target), ("prediction", pred)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise ValueError(f"{name} holds ids outside 0..{num_classes - 1} (other than the ignore label)")
    return np.bincount(num_classes * target + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(matrix: np.ndarray) -> dict[str, float]:
    """{"per_pixel_acc", "per_class_acc", "class_IoU"} of one confusion matrix (module docstring)."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.sum() == 0:
        raise ValueError("the confusion matrix is empty: no scored pixel")
    hits, gt, predicted = np.diag(m), m.sum(axis=1), m.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        class_acc = hits / gt
        iou = hits / (gt + predicted - hits)
    return {
        "per_pixel_acc": float(hits.sum() / m.sum()),
        "per_class_acc": float(np.nanmean(class_acc)),
        "class_IoU": float(np.nanmean(iou)),
    }

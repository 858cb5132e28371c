"""Dense multi-task scores of DiffusionMTL (Ye & Xu, CVPR 2024; design/diffusionmtl.md section 5).

Every statistic is pooled over the whole evaluation set (counts summed over images, one ratio
at the end), as the authors' meters do, so each metric is a small accumulator: `update` with
one batch of predictions and ground truth, `score` at the end. Arrays are numpy, channels at
axis -3 like the networks' outputs (``[B, C, H, W]`` or ``[C, H, W]``).

    semseg / human_parts mIoU   global TP/FP/FN per class over pixels with 0 <= GT < K;
                                IoU_c = TP / max(TP + FP + FN, 1e-8); mean over all K classes
                                (a class absent from GT and prediction counts as 0, as theirs)
    saliency maxF               beta^2 = 0.3, thresholds 0.05 .. 0.95; pooled precision/recall
                                per threshold, the best F. `authors=True` (default) reproduces
                                their meter's quirk: the probability goes through a sigmoid
                                before thresholding, so only cut-offs 0, 0.201, 0.405, 0.619,
                                0.847 on the probability are tested and thresholds >= 0.75 give
                                no positive (F := 0). `authors=False` thresholds the
                                probability itself (the standard maxF); report both.
    normals mErr (degrees)      angle = 2 atan2(|p - g|, |p + g|) between unit vectors (a
                                stable arccos), mean over valid pixels
    depth absErr / RMSE         over pixels with GT != 0 (MTPSL's NYUD rule)
    boundary odsF               `EdgeMeter`: Python re-implementation of SEISM/edgesEvalImg's
                                correspondPixels (see there), maxDist a fraction of the diagonal
    delta_m                     (100 / T) sum_i (-1)^{l_i} (M_i - S_i) / S_i, l_i = 1 where
                                lower is better, S = the single-task reference

Per-image statistics (the tables' intervals, repro/report/cells.py): every meter's accumulators
are sums over images, so `state()` flattens them into one vector and the pooled score is a
function of the *sum* of per-image states (`meter_from_state(column, summed).score()`). A
bootstrap over images then resamples the per-image states and recomputes the pooled score,
exactly as the authors' meter would on the resampled set. `per_image_states` gives them per
table column; `pooled_score` reads a cell's name ("dense:<column>" or the delta_m layout,
`delta_m_layout`) and scores summed states; delta_m's state is the row's states of the task
columns followed by the reference row's on the same images, so its bootstrap resamples both
sides together and recomputes delta_m from the two pooled score sets.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching
from scipy.spatial import cKDTree

from repro.metrics.segmentation import confusion_matrix

IGNORE = 255
SALIENCY_THRESHOLDS = np.arange(1, 20) * 0.05   # the authors' 0.05, 0.10, ..., 0.95
EDGE_THRESHOLDS = np.linspace(0.01, 0.99, 99)     # edgesEval's default 99 (SEISM's HED list may differ)
MAX_DIST = {"pascal_context": 0.0075, "nyud_v2": 0.011}  # SEISM's maxDist (fraction of the diagonal)
LOWER_BETTER = frozenset({"normals_mErr", "depth_absErr", "depth_rmse"})


class SegmentationMeter:
    """Pooled mIoU (semseg, human_parts) of class-id maps; GT outside 0..K-1 (255, -1) is ignored."""

    def __init__(self, num_classes: int):
        self.K = num_classes
        self.matrix = np.zeros((num_classes, num_classes), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred).ravel(), np.asarray(gt).astype(np.int64).ravel()
        keep = (gt >= 0) & (gt < self.K)
        self.matrix += confusion_matrix(pred[keep], gt[keep], self.K)

    def state(self) -> np.ndarray:
        return self.matrix.ravel().astype(np.float64)

    def load(self, state: np.ndarray) -> "SegmentationMeter":
        self.matrix = np.asarray(state).reshape(self.K, self.K)
        return self

    def score(self) -> float:
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        return float(np.mean(tp / np.maximum(union, 1e-8)) * 100)


class SaliencyMeter:
    """Pooled maxF of a saliency probability map in [0, 1] against a 0/1 GT (255 ignored)."""

    def __init__(self, authors: bool = True, beta2: float = 0.3, thresholds: np.ndarray = SALIENCY_THRESHOLDS):
        self.authors, self.beta2 = authors, beta2
        self.thresholds = np.asarray(thresholds, np.float64)
        self.tp = np.zeros(len(self.thresholds))
        self.pred_pos = np.zeros(len(self.thresholds))
        self.gt_pos = 0.0

    def update(self, prob: np.ndarray, gt: np.ndarray) -> None:
        prob, gt = np.asarray(prob, np.float64).ravel(), np.asarray(gt).ravel()
        valid = gt != IGNORE
        prob, positive = prob[valid], gt[valid] > 0
        if self.authors:  # their meter treats the 0..1 probability as a logit
            prob = 1.0 / (1.0 + np.exp(-prob))
        hit = prob[None, :] >= self.thresholds[:, None]
        self.tp += (hit & positive).sum(1)
        self.pred_pos += hit.sum(1)
        self.gt_pos += positive.sum()

    def state(self) -> np.ndarray:
        return np.concatenate([self.tp, self.pred_pos, [self.gt_pos]]).astype(np.float64)

    def load(self, state: np.ndarray) -> "SaliencyMeter":
        k = len(self.thresholds)
        self.tp, self.pred_pos, self.gt_pos = state[:k], state[k:2 * k], float(state[2 * k])
        return self

    def score(self) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            precision, recall = self.tp / self.pred_pos, self.tp / self.gt_pos
            f = (1 + self.beta2) * precision * recall / (self.beta2 * precision + recall)
        return float(np.nan_to_num(f, nan=0.0).max() * 100)


class NormalsMeter:
    """Pooled mean angular error in degrees; pass `valid` or use `pascal_normals_valid` / `nyud_normals_valid`."""

    def __init__(self):
        self.total, self.count = 0.0, 0

    def update(self, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> None:
        p, g = _unit(np.asarray(pred, np.float64)), _unit(np.asarray(gt, np.float64))
        angle = 2 * np.arctan2(np.linalg.norm(p - g, axis=-3), np.linalg.norm(p + g, axis=-3))
        self.total += float(np.degrees(angle)[valid].sum())
        self.count += int(np.count_nonzero(valid))

    def state(self) -> np.ndarray:
        return np.array([self.total, self.count], np.float64)

    def load(self, state: np.ndarray) -> "NormalsMeter":
        self.total, self.count = float(state[0]), float(state[1])
        return self

    def score(self) -> float:
        return self.total / self.count if self.count else float("nan")


def pascal_normals_valid(gt: np.ndarray) -> np.ndarray:
    """PASCAL: a pixel counts when none of its 3 GT channels is the ignore value 255."""
    return (np.asarray(gt) != IGNORE).all(axis=-3)


def nyud_normals_valid(gt: np.ndarray) -> np.ndarray:
    """NYUD-v2 (MTPSL): a pixel counts when its GT normal is non-zero."""
    return (np.asarray(gt) != 0).any(axis=-3)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-3, keepdims=True), 1e-12)


class DepthMeter:
    """Pooled absErr (the paper's number) and RMSE of depth over pixels whose GT is not 0."""

    def __init__(self):
        self.abs_sum, self.sq_sum, self.count = 0.0, 0.0, 0

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred, gt = np.asarray(pred, np.float64).ravel(), np.asarray(gt, np.float64).ravel()
        valid = gt != 0
        diff = pred[valid] - gt[valid]
        self.abs_sum += float(np.abs(diff).sum())
        self.sq_sum += float((diff**2).sum())
        self.count += int(valid.sum())

    def state(self) -> np.ndarray:
        return np.array([self.abs_sum, self.sq_sum, self.count], np.float64)

    def load(self, state: np.ndarray) -> "DepthMeter":
        self.abs_sum, self.sq_sum, self.count = (float(v) for v in state)
        return self

    def score(self) -> dict[str, float]:
        if not self.count:
            return {"absErr": float("nan"), "rmse": float("nan")}
        return {"absErr": self.abs_sum / self.count, "rmse": float(np.sqrt(self.sq_sum / self.count))}


class EdgeMeter:
    """Boundary odsF: SEISM/edgesEvalImg's 'fb' measure, re-implemented (labelled as such in tables).

    Per image and threshold, the prediction ``prob >= thr`` (no thinning, as the authors'
    evaluation) is matched one-to-one to GT edge pixels at most ``max_dist * diagonal``
    pixels away (Euclidean, the bound included, as correspondPixels). correspondPixels
    solves a min-cost assignment whose outlier cost exceeds any match, so its number of
    matches is the *maximum-cardinality* matching of the within-tolerance graph; the costs
    only choose among equally large matchings and never change the counts. We therefore
    compute exactly that with scipy's `maximum_bipartite_matching` (Hopcroft-Karp, sparse,
    O(E sqrt(V))) instead of `linear_sum_assignment`, which would need a dense cost matrix
    over all edge pixels and optimise distances that do not enter the score. Matched
    predicted pixels count as true positives for precision, matched GT pixels for recall;
    the counts are pooled over images per threshold and ODS is the best pooled F.
    Differences from MATLAB may remain (its CSA solver is approximate); label numbers
    "odsF (Python matching)".
    """

    def __init__(self, max_dist: float = MAX_DIST["pascal_context"], thresholds: np.ndarray = EDGE_THRESHOLDS):
        self.max_dist = max_dist
        self.thresholds = np.asarray(thresholds, np.float64)
        self.matched = np.zeros(len(self.thresholds))   # cntP = cntR with one GT per image
        self.pred_count = np.zeros(len(self.thresholds))
        self.gt_count = 0.0

    def update(self, prob: np.ndarray, gt: np.ndarray) -> None:
        """One image: `prob` [H, W] edge probability, `gt` [H, W] 0/1 edges (255 = unannotated)."""
        prob, gt = np.asarray(prob, np.float64), np.asarray(gt)
        annotated = gt != IGNORE
        gt_pts = np.argwhere(annotated & (gt > 0))
        self.gt_count += len(gt_pts)
        # The predicted sets are nested (higher threshold, subset): find every candidate's GT
        # neighbours once, then match the rows kept at each threshold.
        candidates = annotated & (prob >= self.thresholds.min())
        pred_pts, pred_prob = np.argwhere(candidates), prob[candidates]
        graph = within(pred_pts, gt_pts, self.max_dist * float(np.hypot(*gt.shape)))
        for i, thr in enumerate(self.thresholds):
            keep = pred_prob >= thr
            self.pred_count[i] += keep.sum()
            self.matched[i] += _maximum_matching(graph[keep])

    def state(self) -> np.ndarray:
        return np.concatenate([self.matched, self.pred_count, [self.gt_count]]).astype(np.float64)

    def load(self, state: np.ndarray) -> "EdgeMeter":
        k = len(self.thresholds)
        self.matched, self.pred_count, self.gt_count = state[:k], state[k:2 * k], float(state[2 * k])
        return self

    def score(self) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            p, r = self.matched / self.pred_count, self.matched / self.gt_count
            f = 2 * p * r / (p + r)
        return float(np.nan_to_num(f, nan=0.0).max() * 100)


def within(a: np.ndarray, b: np.ndarray, radius: float) -> csr_matrix:
    """Sparse [n, m] graph: a[i] -- b[j] when at most `radius` apart (plus a hair for float round-off)."""
    if len(a) == 0 or len(b) == 0:
        return csr_matrix((len(a), len(b)), dtype=np.int8)
    neighbours = cKDTree(a).query_ball_tree(cKDTree(b), radius * (1 + 1e-9))
    rows = np.repeat(np.arange(len(a)), [len(n) for n in neighbours])
    cols = np.fromiter((j for n in neighbours for j in n), np.int64, len(rows))
    return csr_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(len(a), len(b)))


def _maximum_matching(graph: csr_matrix) -> int:
    if graph.nnz == 0:
        return 0
    return int(np.count_nonzero(maximum_bipartite_matching(graph, perm_type="column") >= 0))


def match_count(a: np.ndarray, b: np.ndarray, radius: float) -> int:
    """Size of a maximum one-to-one matching between point sets `a` [n, 2] and `b` [m, 2],
    pairing only points at most `radius` apart."""
    return _maximum_matching(within(a, b, radius))


def delta_m(scores: Mapping[str, float], reference: Mapping[str, float],
            lower_better: frozenset[str] | set[str] = LOWER_BETTER) -> float:
    """Multi-task performance in %: mean relative gain over the reference's metrics (module docstring)."""
    missing = sorted(set(reference) - set(scores))
    if missing:
        raise ValueError(f"delta_m: scores lack {missing} of the reference")
    gains = [(-1 if name in lower_better else 1) * (scores[name] - s) / s for name, s in reference.items()]
    return float(100 * np.mean(gains))


# ----------------------------------------------------------------------------------------------
# Per-image states of a table column and pooled scores of summed states (module docstring)

COLUMN_TASK = {"semseg_mIoU": "semseg", "human_parts_mIoU": "human_parts", "saliency_maxF": "sal",
               "saliency_maxF_standard": "sal", "normals_mErr": "normals", "depth_absErr": "depth",
               "depth_rmse": "depth", "boundary_odsF": "edge"}
POOLED_PREFIX = "dense:"            # a cell's pooled-score name: "dense:<column>"
DELTA_M_PREFIX = "dense_delta_m:"   # "dense_delta_m:<column>=<state size>,...": row states, then reference's


def make_meter(column: str, num_classes: int | None = None, edge_max_dist: float = MAX_DIST["pascal_context"]):
    """A fresh meter of one column (names as the tables' columns, `COLUMN_TASK`)."""
    if column in ("semseg_mIoU", "human_parts_mIoU"):
        return SegmentationMeter(int(num_classes))
    if column in ("saliency_maxF", "saliency_maxF_standard"):
        return SaliencyMeter(authors=column == "saliency_maxF")
    if column == "normals_mErr":
        return NormalsMeter()
    if column in ("depth_absErr", "depth_rmse"):
        return DepthMeter()
    if column == "boundary_odsF":
        return EdgeMeter(max_dist=edge_max_dist)
    raise ValueError(f"no dense meter for column {column!r}: choose one of {', '.join(COLUMN_TASK)}")


def meter_score(column: str, meter) -> float:
    score = meter.score()
    return score["absErr" if column == "depth_absErr" else "rmse"] if column.startswith("depth_") else float(score)


def per_image_states(column: str, pred: np.ndarray, gt: np.ndarray, num_classes: int | None = None,
                     edge_max_dist: float = MAX_DIST["pascal_context"],
                     normals_valid: Callable[[np.ndarray], np.ndarray] = nyud_normals_valid) -> np.ndarray:
    """float64 [N, D]: row i is the meter state of image i alone (`pred`, `gt` [N, ...])."""
    rows = []
    for p, g in zip(pred, gt):
        m = make_meter(column, num_classes, edge_max_dist)
        if column == "normals_mErr":
            m.update(p, g, normals_valid(g))
        else:
            m.update(p, g)
        rows.append(m.state())
    return np.stack(rows)


def meter_from_state(column: str, state: np.ndarray):
    """The meter of `column` holding `state` (a summed per-image state); the class count of a
    segmentation column is the side of its square confusion matrix."""
    state = np.asarray(state, np.float64)
    k = math.isqrt(len(state)) if column in ("semseg_mIoU", "human_parts_mIoU") else None
    return make_meter(column, k).load(state)


def delta_m_layout(sizes: Mapping[str, int]) -> str:
    """The pooled-score name of a delta_m cell whose per-image state is the row's states of these
    columns (in order, `sizes` = their lengths) followed by the reference's of the same columns."""
    return DELTA_M_PREFIX + ",".join(f"{c}={n}" for c, n in sizes.items())


def _split_layout(name: str) -> list[tuple[str, int]]:
    return [(c, int(n)) for c, n in (part.split("=") for part in name.removeprefix(DELTA_M_PREFIX).split(","))]


def pooled_score(name: str, summed: np.ndarray) -> float:
    """The score of summed per-image states: a column ("dense:<column>") or delta_m (its layout,
    `delta_m_layout`; NaN where the reference scores 0 on a column, a gain over nothing)."""
    summed = np.asarray(summed, np.float64)
    if name.startswith(POOLED_PREFIX):
        column = name.removeprefix(POOLED_PREFIX)
        return meter_score(column, meter_from_state(column, summed))
    if not name.startswith(DELTA_M_PREFIX):
        raise ValueError(f"not a dense pooled score: {name!r}")
    layout = _split_layout(name)
    total = sum(n for _, n in layout)
    if len(summed) != 2 * total:
        raise ValueError(f"{name}: state of length {len(summed)}, expected {2 * total}")
    scores, ref, at = {}, {}, 0
    for column, n in layout:
        scores[column] = meter_score(column, meter_from_state(column, summed[at:at + n]))
        ref[column] = meter_score(column, meter_from_state(column, summed[total + at:total + at + n]))
        at += n
    if any(v == 0 or not np.isfinite(v) for v in ref.values()):
        return float("nan")
    return delta_m(scores, ref)

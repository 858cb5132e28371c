"""DiffusionMTL's table cells with uncertainty: per-image meter states, pooled scores of their sums,
intervals by bootstrap over test images and claims as paired tests (repro/metrics/dense.py,
repro/report/cells.py, repro/jobs/dense_evaluate.py).

Oracles: the pooled meter run on the whole set at once (the states must add up to it), a
hand-computed delta_m, an independent bootstrap written here (numpy resampling, mIoU and delta_m
recomputed from scratch), and hand-built rows whose claim verdict is obvious.
"""
from __future__ import annotations

import numpy as np
import pytest

from repro.jobs.dense_evaluate import dense_scores, dense_states, _delta_m_cell
from repro.metrics.dense import (
    POOLED_PREFIX, EdgeMeter, NormalsMeter, SaliencyMeter, SegmentationMeter, delta_m, delta_m_layout,
    nyud_normals_valid, per_image_states, pooled_score,
)
from repro.report.cells import CellData, arrays_of_cells, cell_interval, cells_from_arrays, claim_verdict
from repro.report.claims import HELD, INCONCLUSIVE, NOT_HELD
from repro.report.paper import table_spec

K = 4
TASKS = {"semseg": K, "sal": 2, "normals": 3, "edge": 1}


def scenes(rng, n: int, size: int = 12):
    """Ground truth of `n` small images (semseg, saliency, normals with holes, edges)."""
    semseg = rng.integers(0, K, (n, size, size))
    semseg[:, 0, :3] = 255
    sal = (rng.random((n, size, size)) < 0.4).astype(np.int64)
    normals = rng.normal(size=(n, 3, size, size))
    normals[:, :, :2, :2] = 0                        # no normal there (MTPSL's rule)
    edge = (rng.random((n, size, size)) < 0.1).astype(np.int64)
    return {"semseg": semseg, "sal": sal, "normals": normals, "edge": edge}


def predictions(rng, gt, quality):
    """Predictions right with per-image probability `quality[i]` (images, not pixels, vary)."""
    n = len(quality)
    q = np.asarray(quality).reshape(n, 1, 1)
    shape = gt["semseg"].shape
    right = rng.random(shape) < q
    semseg = np.where(right, np.where(gt["semseg"] == 255, 0, gt["semseg"]), rng.integers(0, K, shape))
    sal = np.clip(np.where(right, gt["sal"], 1 - gt["sal"]) * 0.8 + rng.random(shape) * 0.2, 0, 1)
    normals = gt["normals"] + rng.normal(size=gt["normals"].shape) * (1.5 - q[:, None])
    edge = np.clip(np.where(right, gt["edge"], rng.random(shape) < 0.1) * 0.9 + rng.random(shape) * 0.1, 0, 1)
    return {"semseg": semseg, "sal": sal, "normals": normals, "edge": edge}


def test_states_add_up_to_the_pooled_meter():
    rng = np.random.default_rng(0)
    gt = scenes(rng, 5)
    pred = predictions(rng, gt, [0.2, 0.5, 0.7, 0.9, 0.4])
    scores = dense_scores(dense_states(pred, gt, TASKS, 0.1))
    whole = SegmentationMeter(K)
    whole.update(pred["semseg"], gt["semseg"])
    assert scores["semseg_mIoU"] == pytest.approx(whole.score(), rel=1e-12)
    for authors, column in ((True, "saliency_maxF"), (False, "saliency_maxF_standard")):
        m = SaliencyMeter(authors=authors)
        m.update(pred["sal"], gt["sal"])
        assert scores[column] == pytest.approx(m.score(), rel=1e-12)
    m = NormalsMeter()
    m.update(pred["normals"], gt["normals"], nyud_normals_valid(gt["normals"]))
    assert scores["normals_mErr"] == pytest.approx(m.score(), rel=1e-12)
    m = EdgeMeter(0.1)
    for p, g in zip(pred["edge"], gt["edge"]):
        m.update(p, g)
    assert scores["boundary_odsF"] == pytest.approx(m.score(), rel=1e-12)
    # depth: errors -1, 0, 3 on the valid pixels of two images (0 = no depth), absErr 4/3
    states = per_image_states("depth_absErr", np.array([[1.0, 2.0], [4.0, 9.0]]), np.array([[2.0, 2.0], [1.0, 0.0]]))
    assert pooled_score(POOLED_PREFIX + "depth_absErr", states.sum(0)) == pytest.approx(4 / 3)
    assert pooled_score(POOLED_PREFIX + "depth_rmse", states.sum(0)) == pytest.approx(np.sqrt(10 / 3))


def _miou(pred, gt):
    """mIoU over K classes written out again (the oracle): TP / (TP + FP + FN) per class, x100."""
    keep = gt != 255
    p, g = pred[keep], gt[keep]
    ious = [np.sum((p == c) & (g == c)) / max(np.sum((p == c) | (g == c)), 1e-8) for c in range(K)]
    return 100 * float(np.mean(ious))


def test_delta_m_cell_pools_both_rows_and_matches_an_independent_bootstrap():
    rng = np.random.default_rng(1)
    n = 40
    gt = scenes(rng, n)
    ref_pred = predictions(rng, gt, rng.uniform(0.3, 0.6, n))
    row_pred = predictions(rng, gt, rng.uniform(0.5, 0.9, n))
    columns = ["semseg_mIoU", "saliency_maxF", "normals_mErr", "boundary_odsF"]
    ref_states, row_states = (dense_states(p, gt, TASKS, 0.1) for p in (ref_pred, row_pred))
    ref_cells = {c: CellData(0.0, items=ref_states[c], pooled=POOLED_PREFIX + c) for c in columns}
    cell = _delta_m_cell(row_states, ref_cells, columns)
    ours, ref = dense_scores(row_states), dense_scores(ref_states)
    assert cell.estimate == pytest.approx(delta_m({c: ours[c] for c in columns}, {c: ref[c] for c in columns}))
    assert cell.pooled == delta_m_layout({c: row_states[c].shape[1] for c in columns})

    # An independent bootstrap: resample images, recompute mIoU from the pixels and delta_m of
    # the semseg column alone (both rows on the same images).
    semseg_cell = _delta_m_cell(row_states, ref_cells, ["semseg_mIoU"])
    draws = []
    oracle_rng = np.random.default_rng(123)
    for _ in range(1000):
        idx = oracle_rng.integers(0, n, n)
        a, b = _miou(row_pred["semseg"][idx], gt["semseg"][idx]), _miou(ref_pred["semseg"][idx], gt["semseg"][idx])
        draws.append(100 * (a - b) / b)
    lo, hi = np.quantile(draws, [0.025, 0.975])
    ci = cell_interval(semseg_cell)
    assert ci.estimate == pytest.approx(100 * (_miou(row_pred["semseg"], gt["semseg"]) -
                                               _miou(ref_pred["semseg"], gt["semseg"])) /
                                        _miou(ref_pred["semseg"], gt["semseg"]))
    width = hi - lo
    assert abs(ci.low - lo) < 0.15 * width and abs(ci.high - hi) < 0.15 * width
    assert ci.method == "percentile bootstrap over images"


def test_claims_on_dense_cells_are_paired_tests_with_three_verdicts():
    """A much better row holds the delta_m claim, a row equal to the baseline up to noise is
    inconclusive, a much worse one does not hold; cells survive the cells.npz round trip."""
    rng = np.random.default_rng(2)
    n = 30
    gt = scenes(rng, n)
    columns = ["semseg_mIoU", "saliency_maxF", "normals_mErr", "boundary_odsF"]
    q = rng.uniform(0.4, 0.6, n)
    states = {name: dense_states(predictions(rng, gt, quality), gt, TASKS, 0.1) for name, quality in
              {"single": q, "baseline": q, "good": np.clip(q + 0.35, 0, 1), "same": q, "bad": q - 0.35}.items()}
    ref = {c: CellData(0.0, items=states["single"][c], pooled=POOLED_PREFIX + c) for c in columns}
    dm = {name: _delta_m_cell(states[name], ref, columns) for name in ("baseline", "good", "same", "bad")}
    for name, cell in dm.items():   # round trip through the npz arrays of the evaluate job
        back = cells_from_arrays(["delta_m"], {"delta_m": cell.estimate}, arrays_of_cells(["delta_m"], {"delta_m": cell}))
        np.testing.assert_array_equal(back["delta_m"].items, cell.items)
        assert back["delta_m"].pooled == cell.pooled
    spec = table_spec("diffusionmtl")
    a, b = "DiffusionMTL-Feature (one-label)", "MTL Baseline (one-label)"
    claim = {"text": "t", "check": {"op": "gt", "left": a, "right": b, "columns": ["delta_m"]}}
    verdicts = {}
    for name in ("good", "same", "bad"):
        cells = {(a, "delta_m"): dm[name], (b, "delta_m"): dm["baseline"]}
        verdicts[name] = claim_verdict(spec, claim, cells)
    assert verdicts["good"]["status"] == HELD
    assert verdicts["same"]["status"] == INCONCLUSIVE
    assert verdicts["bad"]["status"] == NOT_HELD
    assert "paired percentile bootstrap over images" in verdicts["good"]["detail"]

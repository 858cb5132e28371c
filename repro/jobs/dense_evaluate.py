"""Job body: score a row's dense predictions with DiffusionMTL's metrics (repro/metrics/dense.py).

Reads only the prediction job's samples and the test split's ground truth, never the network.
Every metric is pooled over the test set; the predictions after denoising give the row's
numbers, those before (P_init, DiffusionMTL's networks only) give `initial_values` (Fig. 8:
denoising helps every task). delta_m is against the Single-Task row of the same label setting
(its evaluate job, dependency "reference"); the Single-Task row itself has none (the paper's "-").

Intervals (as every table's, repro/report/cells.py): each metric is computed from per-image
meter states (`repro.metrics.dense.per_image_states`) whose sum is the pooled meter; they are
kept in `cells.npz` (the evaluate jobs' file, `repro.jobs.evaluate.read_cells`) and each cell's
95% interval is a percentile bootstrap over the test images that recomputes the pooled score
from the resampled images' summed states. delta_m's cell holds the row's states of the task
columns followed by the reference row's states on the same images: a resample draws the same
images for both, recomputes both rows' pooled metrics and takes delta_m of those (not a mean of
per-image delta_m, which the pooled metrics do not define). Claims compare two rows on the same
resampled images (paired). `eval.evaluate_version` names this output format: it is part of the
job's key, so a store evaluated before the per-image states re-evaluates instead of rendering
without intervals.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from repro.data.registry import dense_tasks, load_dense
from repro.io import atomic_save_npz
from repro.jobs import samples as samples_format
from repro.jobs.evaluate import CELLS_FILE, read_cells
from repro.jobs.store import JobDir
from repro.metrics.dense import COLUMN_TASK, delta_m_layout, per_image_states, pooled_score, POOLED_PREFIX
from repro.report.cells import CellData, POOLED_RESAMPLES, arrays_of_cells, column_intervals
from repro.report.uncertainty import CONFIDENCE

EVALUATE_VERSION = 2   # 2: per-image states and intervals (cells.npz); 1 (no field): point values only


def reads(view: Mapping[str, Any]) -> list[str]:
    return ["data", "row.name", "table.columns", "eval.edge_max_dist", "eval.evaluate_version"]


def _ground_truth(data: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    test = load_dense(data, "test")
    items = [test[i] for i in range(n)]
    return {k: np.stack([it[k].numpy() for it in items]) for k in items[0] if k not in ("image", "labelled")}


def dense_states(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], classes: Mapping[str, int],
                 edge_max_dist: float) -> dict[str, np.ndarray]:
    """Per-image meter states [N, D] of every metric of the tasks in `pred` (names as the table's
    columns): saliency by the authors' meter (their sigmoid quirk) as `saliency_maxF` and the
    standard maxF beside it; depth absErr (the paper's) and RMSE; normals valid where the GT
    is non-zero (PASCAL's un-annotated normals are zero vectors, repro.data.dense_folders)."""
    return {column: per_image_states(column, pred[task], gt[task], classes.get(task), edge_max_dist)
            for column, task in COLUMN_TASK.items() if task in pred}


def dense_scores(states: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each metric pooled over the images: the score of its summed per-image states."""
    return {column: pooled_score(POOLED_PREFIX + column, s.sum(axis=0)) for column, s in states.items()}


def _delta_m_cell(states: Mapping[str, np.ndarray], reference: Mapping[str, CellData], columns: list[str]
                  ) -> CellData:
    """delta_m against the reference row, pooled (module docstring); NaN where the reference
    scores 0 on a column (a relative gain over nothing: a tiny run whose Single-Task model
    predicts no class right)."""
    ref_items = [reference[c].items if c in reference else None for c in columns]
    if any(i is None or len(i) != len(states[c]) for i, c in zip(ref_items, columns)):
        return CellData(float("nan"))
    items = np.concatenate([states[c] for c in columns] + [np.asarray(i, np.float64) for i in ref_items], axis=1)
    name = delta_m_layout({c: states[c].shape[1] for c in columns})
    return CellData(pooled_score(name, items.sum(axis=0)), items=items, pooled=name)


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    saved = samples_format.read(deps["samples"])
    n = len(saved["images"])
    gt = _ground_truth(cfg["data"], n)
    classes = dense_tasks(cfg["data"])
    stages = {stage: {t: saved[f"{stage}_{t}"] for t in classes if f"{stage}_{t}" in saved}
              for stage in ("final", "initial")}
    columns = list(cfg["table"]["columns"])
    task_columns = [c for c in columns if c != "delta_m"]
    edge_max_dist = cfg["eval"]["edge_max_dist"]
    states = dense_states(stages["final"], gt, classes, edge_max_dist)
    scores = dense_scores(states)
    initial_states = dense_states(stages["initial"], gt, classes, edge_max_dist) if stages["initial"] else {}
    initial = dense_scores(initial_states)
    cells = {c: CellData(scores[c], items=states[c], pooled=POOLED_PREFIX + c) for c in task_columns if c in states}
    if "reference" in deps:
        reference = read_cells(deps["reference"])
        cells["delta_m"] = _delta_m_cell(states, reference, task_columns)
        scores["delta_m"] = cells["delta_m"].estimate
        if initial:   # before denoising, against the reference's final predictions
            initial["delta_m"] = _delta_m_cell(initial_states, reference, task_columns).estimate
    atomic_save_npz(out / CELLS_FILE, **arrays_of_cells(columns, cells))
    intervals, methods = column_intervals(cells, columns)
    result: dict[str, Any] = {
        "n_images": n, "all_metrics": scores, "initial_values": initial,
        "feature_extractor": "none (dense metrics on the predictions" + ("; boundary odsF by a Python "
                             "re-implementation of SEISM's matching)" if "edge" in classes else ")"),
        "values": {c: scores.get(c, float("nan")) for c in columns},
        "intervals": intervals,
        "interval_method": {"confidence": CONFIDENCE, "methods": methods, "resamples": POOLED_RESAMPLES,
                            "evaluate_version": int(cfg["eval"]["evaluate_version"])}}
    print(f"{cfg['row']['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["values"].items()) + f" (n={n})")
    return result


def interval_note(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The caption's sentence on the dense table's intervals and claim tests."""
    if not any(res.get("intervals") for res in results.values()):
        return ""
    n = sorted({int(res["n_images"]) for res in results.values()})
    return (f"Intervals: 95%, percentile bootstrap over the test images ({POOLED_RESAMPLES} resamples; "
            f"{'/'.join(map(str, n))} images per row), each resample recomputing the pooled metric from the "
            f"resampled images' summed per-image statistics (confusion matrices, saliency and boundary counts per "
            f"threshold, angle and depth sums); delta_m: both rows' pooled metrics on the same resampled images, "
            f"then delta_m of those. Claims: paired tests of the difference on the same resampled images, held / "
            f"not held when its interval excludes 0, inconclusive otherwise.")

"""Job body: score a row's dense predictions with DiffusionMTL's metrics (repro/metrics/dense.py).

Reads only the prediction job's samples and the test split's ground truth, never the network.
Every metric is pooled over the test set; the predictions after denoising give the row's
numbers, those before (P_init, DiffusionMTL's networks only) give `initial_values` (Fig. 8:
denoising helps every task). delta_m is against the Single-Task row of the same label setting
(its evaluate job, dependency "reference"); the Single-Task row itself has none (the paper's "-").
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from repro.data.registry import load_dense
from repro.jobs import samples as samples_format
from repro.jobs.store import JobDir
from repro.metrics.dense import (DepthMeter, EdgeMeter, NormalsMeter, SaliencyMeter, SegmentationMeter, delta_m,
                                 nyud_normals_valid)


def reads(view: Mapping[str, Any]) -> list[str]:
    return ["data", "row.name", "table.columns", "eval.edge_max_dist"]


def _ground_truth(data: Mapping[str, Any], n: int) -> dict[str, np.ndarray]:
    test = load_dense(data, "test")
    items = [test[i] for i in range(n)]
    return {k: np.stack([it[k].numpy() for it in items]) for k in items[0] if k not in ("image", "labelled")}


def dense_scores(pred: Mapping[str, np.ndarray], gt: Mapping[str, np.ndarray], classes: Mapping[str, int],
                 edge_max_dist: float) -> dict[str, float]:
    """Every metric of the tasks in `pred` (names as the table's columns), pooled over the images.

    Saliency: the authors' meter (their sigmoid quirk) as `saliency_maxF`, the standard maxF
    beside it; depth: absErr (the paper's) and RMSE; normals valid where the GT is non-zero."""
    out: dict[str, float] = {}
    for task in ("semseg", "human_parts"):
        if task in pred:
            m = SegmentationMeter(classes[task])
            m.update(pred[task], gt[task])
            out[f"{task}_mIoU"] = m.score()
    if "sal" in pred:
        for name, authors in (("saliency_maxF", True), ("saliency_maxF_standard", False)):
            m = SaliencyMeter(authors=authors)
            m.update(pred["sal"], gt["sal"])
            out[name] = m.score()
    if "normals" in pred:
        m = NormalsMeter()
        m.update(pred["normals"], gt["normals"], nyud_normals_valid(gt["normals"]))
        out["normals_mErr"] = m.score()
    if "depth" in pred:
        m = DepthMeter()
        m.update(pred["depth"], gt["depth"])
        d = m.score()
        out["depth_absErr"], out["depth_rmse"] = d["absErr"], d["rmse"]
    if "edge" in pred:
        m = EdgeMeter(max_dist=edge_max_dist)
        for p, g in zip(pred["edge"], gt["edge"]):
            m.update(p, g)
        out["boundary_odsF"] = m.score()
    return out


def _delta_m(scores: Mapping[str, float], ref: Mapping[str, float], columns: list[str]) -> float:
    """delta_m over `columns`; NaN where the reference scores 0 on one of them (a relative gain
    over nothing is undefined: a tiny run whose Single-Task model predicts no class right)."""
    if any(ref[c] == 0 for c in columns):
        return float("nan")
    return delta_m({c: scores[c] for c in columns}, {c: ref[c] for c in columns})


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    from repro.data.registry import dense_tasks

    saved = samples_format.read(deps["samples"])
    n = len(saved["images"])
    gt = _ground_truth(cfg["data"], n)
    classes = dense_tasks(cfg["data"])
    stages = {stage: {t: saved[f"{stage}_{t}"] for t in classes if f"{stage}_{t}" in saved}
              for stage in ("final", "initial")}
    columns = cfg["table"]["columns"]
    scores = dense_scores(stages["final"], gt, classes, cfg["eval"]["edge_max_dist"])
    initial = dense_scores(stages["initial"], gt, classes, cfg["eval"]["edge_max_dist"]) if stages["initial"] else {}
    result: dict[str, Any] = {"n_images": n, "all_metrics": scores, "initial_values": initial,
                              "feature_extractor": "none (dense metrics on the predictions; boundary odsF by a "
                                                   "Python re-implementation of SEISM's matching)"}
    if "reference" in deps:
        ref = deps["reference"].result()["all_metrics"]
        task_columns = [c for c in columns if c != "delta_m"]
        scores["delta_m"] = _delta_m(scores, ref, task_columns)
        if initial:
            initial["delta_m"] = _delta_m(initial, ref, task_columns)
    result["values"] = {c: scores.get(c, float("nan")) for c in columns}
    print(f"{cfg['row']['name']}: " + ", ".join(f"{k} {v:.4f}" for k, v in result["values"].items()) + f" (n={n})")
    return result

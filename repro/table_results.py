"""A table's results assembled from the job store: the numbers, their provenance and intervals.

After dispatch every row's evaluation job holds a result.json; this module turns those into
what render_table takes (repro/report/render.py): the frame of our numbers (rows x the spec's
columns), the provenance (profile, dataset, sample counts, config keys, wall time of every job
behind a row, the readings), the caption notes, the cell intervals and the cells the claim
tests read; and tables/metrics/<key>.json for `dvc metrics show`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from repro.report.paper import column_names


def results_of(rows: list, store) -> dict[str, dict]:
    """Each row's evaluation result (result.json), by row name."""
    return {r.name: store.dir(r.job).result() for r in rows}


def ours_frame(cfg: DictConfig, results: dict[str, dict]) -> pd.DataFrame:
    """Our numbers: one row per table row, the spec's columns in the spec's order."""
    ours = pd.DataFrame({name: res["values"] for name, res in results.items()}).T
    return ours.reindex(columns=column_names(cfg.table))


def compute_s(store, jobs: list) -> float:
    """Wall time of every job behind `jobs` (training, sampling, evaluation), each once."""
    from repro.jobs.job import topological

    return round(sum(store.dir(j).result()["provenance"]["wall_time_s"] for j in topological(jobs)), 1)


def provenance_of(cfg: DictConfig, rows: list, results: dict[str, dict], store,
                  readings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The table's provenance (repro.report.provenance): table-wide fields, and per row its
    config key, compute and sample count; the smallest sample count is the table's."""
    from repro.report.provenance import make_provenance

    return make_provenance(
        profile=cfg.profile, dataset=f"{cfg.data.name} {cfg.data.resolution}x{cfg.data.resolution}",
        n_samples=min(r["n_images"] for r in results.values()),
        feature_extractor=next(iter(results.values()))["feature_extractor"],
        wall_time_s=compute_s(store, [r.job for r in rows]),
        rows={r.name: {"config_key": r.job.key, "wall_time_s": compute_s(store, [r.job]),
                       "n_samples": results[r.name]["n_images"]} for r in rows},
        readings=readings)


def caption_notes(cfg: DictConfig, readings_line: str) -> list[str]:
    """The caption's notes of a generative table: the readings, the sampling and training budget,
    then the spec's own notes."""
    return [readings_line, f"{cfg.sample.steps} sampling steps of T={cfg.diffusion.T}; "
            f"train: {cfg.train.steps} steps, batch {cfg.train.batch_size}", *cfg.table.get("notes", [])]


def dense_caption_notes(cfg: DictConfig) -> list[str]:
    """The caption's notes of DiffusionMTL's table: network, training and boundary settings,
    then the spec's own notes."""
    t = cfg.task
    return [f"{t.backbone} (ImageNet weights: {t.imagenet or 'none, random initialisation'}), C = {t.width}, "
            f"S = {t.S}; train: {cfg.train.steps} steps, batch {cfg.train.batch_size}, Adam lr {cfg.train.lr}, "
            f"poly over {cfg.train.epochs} epochs" + (f"; boundary maxDist {cfg.eval.edge_max_dist} of the diagonal"
                                                    if "boundary_odsF" in column_names(cfg.table) else ""),
            *cfg.table.get("notes", [])]


def uncertainty_of(rows: list, store, results: dict) -> tuple[dict, dict | None, str]:
    """Each row's cell intervals, its cells for the claim tests (repro.report.cells) and the
    caption's sentence on how the intervals were computed; no cells where a row's evaluation
    predates them (its claims are then compared on point values)."""
    from repro.jobs.evaluate import interval_note, read_cells

    intervals = {name: res.get("intervals") or {} for name, res in results.items()}
    if any("intervals" not in res for res in results.values()):
        return intervals, None, ""
    cells = {(r.name, col): cell for r in rows for col, cell in read_cells(store.dir(r.job)).items()}
    return intervals, cells, interval_note(results)


def write_dvc_metrics(key: str, ours: pd.DataFrame, out_dir: Path) -> Path:
    """tables/metrics/<key>.json: {row: {column: {ours, paper}}}, flat enough for `dvc metrics show`."""
    from repro.io import atomic_write_json
    from repro.report.paper import paper_table

    paper = paper_table(key)
    doc = {row: {col: {"ours": None if pd.isna(ours.at[row, col]) else round(float(ours.at[row, col]), 6),
                       "paper": None if row not in paper.index or pd.isna(paper.at[row, col])
                       else float(paper.at[row, col])}
                 for col in ours.columns} for row in ours.index}
    return atomic_write_json(Path(out_dir) / "metrics" / f"{key}.json", doc)


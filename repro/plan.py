"""Expand a table spec into its DAG of jobs: [features] -> train -> sample -> evaluate.

Each job gets only the parts of the config that determine its output, so changing, say,
the number of evaluation images re-runs sampling and evaluation but not training.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from repro.config import to_dict
from repro.errors import UserError
from repro.jobs.job import Job



@dataclass(frozen=True)
class RowPlan:
    name: str
    job: Job          # its result holds {"values": {column: value}, ...}


def _pick(cfg: DictConfig, *keys: str) -> dict[str, Any]:
    return {k: to_dict(cfg[k]) for k in keys if k in cfg}


def features_job(cfg: DictConfig) -> Job | None:
    if cfg.features.kind != "embedded":
        return None
    return Job("features", "features/embedded", _pick(cfg, "data", "features", "seed"))


def train_job(cfg: DictConfig, model: str) -> Job:
    if model not in cfg.models:
        raise UserError(f"row refers to model {model!r}, which the spec's models section does not define")
    config = _pick(cfg, "data", "task", "unet", "train", "seed")
    config["diffusion"] = {k: v for k, v in to_dict(cfg.diffusion).items() if k != "prior"}
    config["model"] = to_dict(cfg.models[model])
    return Job("train", f"train/{model}", config)


def plan(cfg: DictConfig) -> list[RowPlan]:
    feats = features_job(cfg)
    rows = []
    for row in cfg.rows:
        deps = {"model": train_job(cfg, row.model)} if "model" in row else {}
        sample_cfg = _pick(cfg, "data", "task", "sample", "seed")
        sample_cfg.update(row=to_dict(row), diffusion={"prior": cfg.diffusion.prior},
                          eval={k: to_dict(cfg.eval[k]) for k in ("n_images", "mask_counts", "composite")})
        sample = Job("sample", f"sample/{row.name}", sample_cfg, deps)
        eval_cfg = _pick(cfg, "features", "weights")
        eval_cfg.update(row=to_dict(row), table={k: to_dict(cfg.table[k]) for k in ("columns", "evaluation")},
                        eval={k: to_dict(cfg.eval[k]) for k in ("mask_counts", "batch_size")})
        eval_deps = {"samples": sample, **({"features": feats} if feats else {})}
        rows.append(RowPlan(row.name, Job("evaluate", f"evaluate/{row.name}", eval_cfg, eval_deps)))
    return rows

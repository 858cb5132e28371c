"""Expand a table spec into its DAG of jobs: [features] -> train -> sample -> evaluate.

Each job gets only the parts of the config that determine its output, so changing, say,
the number of evaluation images re-runs sampling and evaluation but not training. The plan
builds each job's view of the spec (a model's own overrides merged in, its task's block);
the bodies that declare what they read (`reads(view)`, repro/jobs/train.py) get exactly
that part of their view (repro.jobs.job.select), and their key hashes nothing else.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from repro.config import to_dict
from repro.errors import UserError, missing
from repro.jobs.job import Job, select
from repro.jobs.runner import declared_reads
from repro.report.paper import column_names



@dataclass(frozen=True)
class RowPlan:
    name: str
    job: Job          # its result holds {"values": {column: value}, ...}


def _pick(cfg: DictConfig, *keys: str) -> dict[str, Any]:
    return {k: to_dict(cfg[k]) for k in keys if k in cfg}


def _job(kind: str, name: str, view: dict[str, Any], deps: dict[str, Job] | None = None) -> Job:
    """A job of `kind` whose config is the part of `view` its body reads (all of it where the
    body declares nothing yet), so that its key changes with exactly those settings."""
    reads = declared_reads(kind, view)
    return Job(kind, name, view if reads is None else select(view, reads), deps or {})


def features_job(cfg: DictConfig) -> Job | None:
    if cfg.features.kind != "embedded":
        return None
    return _job("features", "features/embedded", _pick(cfg, "data", "features", "seed"))


def train_job(cfg: DictConfig, model: str, feats: Job | None = None, _chain: tuple[str, ...] = ()) -> Job:
    """`feats` becomes a dependency when the task's batches read the feature network (task.uses_features)."""
    if model not in cfg.models:
        raise UserError(f"row refers to model {model!r}, which the spec's models section does not define")
    m = to_dict(cfg.models[model])
    if m.get("released"):
        return released_job(cfg, model, m)
    view = _model_view(cfg, model, m, "train")
    if "train" in m:   # a model's own budget (continued training, finetuning stages)
        view["train"] = {**view["train"], **m["train"]}
    deps = {"features": feats} if feats is not None and cfg.task.get("uses_features", False) else {}
    if "init" in m:    # continue from another model's final weights (repro.jobs.train.init_from)
        if m["init"] == model or len(_chain) > 8:
            raise UserError(f"model {model!r}: init chain {' -> '.join((*_chain, model))} loops")
        deps["init"] = train_job(cfg, m["init"], feats, _chain=(*_chain, model))
    return _job("train", f"train/{model}", view, deps)


def _model_view(cfg: DictConfig, model: str, m: dict[str, Any], *blocks: str) -> dict[str, Any]:
    """What a train or released job of `model` may read: the spec's blocks, its task, its model entry."""
    view = _pick(cfg, "data", "task", "unet", "diffusion", "seed", *blocks)
    view["model"] = m
    if "task" in m:    # a model of another task than the spec's own (Table 2's image-label rows)
        view["task"] = _task_block(cfg, m["task"], model)
    return view


def _task_block(cfg: DictConfig, name: str, model: str) -> dict[str, Any]:
    if "tasks" not in cfg or name not in cfg.tasks:
        raise UserError(f"model {model!r} names task {name!r}, which the spec's tasks section does not define")
    return to_dict(cfg.tasks[name])


def _released_path(cfg: DictConfig, key: str, what: str) -> str:
    """The configured file of a released guided-diffusion checkpoint; UserError naming it if absent."""
    from repro.weights import check_weights

    return str(check_weights(key, cfg.get("weights", {}).get(key), needed_by=what))


def released_job(cfg: DictConfig, model: str, m: dict[str, Any]) -> Job:
    """A released checkpoint imported into the store; sampled and trained on like a train job."""
    view = _model_view(cfg, model, m)
    view["released"] = _released_path(cfg, m["released"], f"model {model!r}")
    return _job("released", f"released/{model}", view)


def classifier_job(cfg: DictConfig, name: str, feats: Job | None = None) -> Job:
    """ADM's noisy classifier (repro.jobs.classifier): guidance for `_g` rows, Figure 6's curves."""
    if "classifiers" not in cfg or name not in cfg.classifiers:
        raise UserError(f"classifier {name!r} is not defined in the spec's classifiers section")
    c = to_dict(cfg.classifiers[name])
    config = _pick(cfg, "data", "classifier", "seed")
    config["diffusion"] = {k: to_dict(cfg.diffusion[k]) for k in ("schedule", "T")}
    config["train"] = {**to_dict(cfg.classifier_train), **c.get("train", {})}
    kind = c.get("source", "scratch")
    config["source"] = {"kind": kind}
    deps: dict[str, Job] = {}
    if kind == "released":
        config["source"]["path"] = _released_path(cfg, c["released"], f"classifier {name!r}")
    elif kind == "classifier":
        deps["init"] = classifier_job(cfg, c["init"], feats)
    elif kind == "mt_e":
        deps["init"] = train_job(cfg, c["init"], feats)
    elif kind != "scratch":
        raise UserError(f"classifier {name!r}: source {kind!r} is not one of scratch, released, classifier, mt_e")
    return _job("classifier", f"classifier/{name}", config, deps)


def _generation_eval_config(cfg: DictConfig) -> dict[str, Any]:
    """The part of the config an evaluate job of Tables 2-3 reads (metrics, reference, extractor)."""
    from pathlib import Path

    from repro.metrics import INCEPTION_FILE

    eval_cfg = _pick(cfg, "data", "features")
    if cfg.features.kind == "pretrained":
        from repro.weights import check_weights

        w = check_weights("inception", cfg.get("weights", {}).get("inception") or INCEPTION_FILE)
        eval_cfg["weights"] = {"inception": str(w)}
    batch = cfg.eval.get("reference_batch")
    if batch and not Path(str(batch)).expanduser().is_file():
        missing(f"reference batch {batch} (eval.reference_batch) not found: the ADM evaluation suite's "
                        f"reference batches (e.g. VIRTUAL_imagenet64_labeled.npz) come with openai/guided-diffusion's "
                        f"evaluations; set eval.reference_batch=/path/to/it or null to use the training images")
    eval_cfg["table"] = {"columns": column_names(cfg.table), "evaluation": cfg.table.evaluation}
    eval_cfg["eval"] = {k: to_dict(cfg.eval[k]) for k in ("batch_size", "reference", "reference_batch", "isc_splits",
                                                          "prc_k") if k in cfg.eval}
    return eval_cfg


def _generation_row(cfg: DictConfig, row: DictConfig, eval_cfg: dict[str, Any], feats: Job | None,
                    snapshot: int | None = None) -> Job:
    """model [+ classifier] -> generate -> evaluate for one row (of a model's EMA snapshot, if given)."""
    from repro.tasks.generation import check_row

    r = to_dict(row)
    check_row(r)
    deps = {"model": train_job(cfg, row.model, feats)}
    if r.get("classifier"):
        deps["classifier"] = classifier_job(cfg, r["classifier"], feats)
    gen_cfg = _pick(cfg, "data", "sample", "seed")
    gen_cfg.update(row=r, diffusion={"prior": cfg.diffusion.prior}, eval={"n_images": cfg.eval.n_images})
    name = row.name if snapshot is None else f"{row.name}@{snapshot}"
    if snapshot is not None:
        gen_cfg["snapshot"] = snapshot
    gen = _job("generate", f"generate/{name}", gen_cfg, deps)
    eval_deps = {"samples": gen, **({"features": feats} if feats else {})}
    return _job("evaluate", f"evaluate/{name}", {**eval_cfg, "row": r}, eval_deps)


def generation_plan(cfg: DictConfig) -> list[RowPlan]:
    """Tables 2-3: per row, model [+ classifier] -> generate -> evaluate (IS/FID/sFID/P/R)."""
    feats, eval_cfg = features_job(cfg), _generation_eval_config(cfg)
    return [RowPlan(row.name, _generation_row(cfg, row, eval_cfg, feats)) for row in cfg.rows]


@dataclass(frozen=True)
class CurvePoint:
    row: str
    step: int         # training iterations behind the samples
    job: Job          # evaluate job of that snapshot's samples


def efficiency_plan(cfg: DictConfig) -> list[CurvePoint]:
    """Quality against training iterations (the curves behind Table 2's efficiency claim): the
    rows named in `efficiency.rows`, sampled and scored at every EMA snapshot their training
    keeps (`train.snapshot_every`); the final point of each curve is the table's own row.
    Empty when the spec has no `efficiency` block or the profile keeps no snapshots."""
    every = cfg.train.get("snapshot_every")
    if "efficiency" not in cfg or not every:
        return []
    by_name = {row.name: row for row in cfg.rows}
    feats, eval_cfg = features_job(cfg), _generation_eval_config(cfg)
    points = []
    for name in cfg.efficiency.rows:
        if name not in by_name:
            raise UserError(f"efficiency.rows names {name!r}, which is not a row of the table; "
                            f"rows are {', '.join(by_name)}")
        m = to_dict(cfg.models[by_name[name].model])
        if m.get("released") or "init" in m or "train" in m:
            raise UserError(f"efficiency.rows: {name!r} is not trained from scratch with the table's budget "
                            f"(released, init or its own train block); list only from-scratch rows")
        for step in range(every, cfg.train.steps, every):
            points.append(CurvePoint(name, step, _generation_row(cfg, by_name[name], eval_cfg, feats, snapshot=step)))
    return points


def plan(cfg: DictConfig) -> list[RowPlan]:
    if cfg.table.evaluation == "generation":
        return generation_plan(cfg)
    feats = features_job(cfg)
    rows, samples = [], {}
    for row in cfg.rows:
        if "samples_of" in row:   # this row scores another row's samples differently (no sampling of its own)
            if row.samples_of not in samples:
                raise UserError(f"row {row.name!r}: samples_of {row.samples_of!r} must name an earlier row")
            sample = samples[row.samples_of]
        else:
            deps = {"model": train_job(cfg, row.model, feats)} if "model" in row else {}
            sample_cfg = _pick(cfg, "data", "task", "sample", "seed")
            sample_cfg.update(row=to_dict(row), diffusion={"prior": cfg.diffusion.prior},
                              eval={k: to_dict(cfg.eval[k]) for k in ("n_images", "mask_counts", "composite")
                                    if k in cfg.eval})
            sample = _job("sample", f"sample/{row.name}", sample_cfg, deps)
        samples[row.name] = sample
        eval_cfg = _pick(cfg, "features", "weights")
        eval_cfg.update(row=to_dict(row), table={"columns": column_names(cfg.table), "evaluation": cfg.table.evaluation},
                        eval={k: to_dict(cfg.eval[k]) for k in ("mask_counts", "batch_size") if k in cfg.eval})
        eval_deps = {"samples": sample, **({"features": feats} if feats else {})}
        rows.append(RowPlan(row.name, _job("evaluate", f"evaluate/{row.name}", eval_cfg, eval_deps)))
    return rows

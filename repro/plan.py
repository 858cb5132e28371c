"""Expand a table spec into its DAG of jobs: [features] -> train -> sample -> evaluate.

Each job gets only the parts of the config that determine its output, so changing, say,
the number of evaluation images re-runs sampling and evaluation but not training. The plan
builds each job's view of the spec (a model's own overrides merged in, its task's block);
the bodies that declare what they read (`reads(view)`, repro/jobs/train.py) get exactly
that part of their view (repro.jobs.job.select), and their key hashes nothing else.

Why one module of ~400 lines: every kind of table (restoration, generation with its efficiency
curves and diagnostics, calibration rows, DiffusionMTL's dense rows) is expanded into jobs by
the same `_job` rule (a body's `reads()` selects its view); keeping them together keeps one
definition of how a job's config and key are built. A package split (plan/restoration.py,
plan/generation.py, plan/dense.py) is the next step if it grows.
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



def readings(cfg: DictConfig) -> dict[str, Any]:
    """The paper's open readings a table is computed under, by name (each table's caption and
    the "readings" object of its JSON provenance). Defaults are the paper's literal reading;
    repro/diffusion/aggregation.py, network_input.py, vlb.py and repro/data/pixels.py say
    what each alternative is."""
    d = cfg.diffusion
    out: dict[str, Any] = {"weights": str(d.weights)}
    if d.weights in ("constant", "bounded"):
        out["weight_value"] = float(d.weight_value)
    out.update(network_input=str(d.get("network_input", "raw")), prior=str(d.prior),
               vlb_weight=float(cfg.train.get("vlb_weight", 0.0)))
    if "composite" in cfg.eval:
        out["composite"] = bool(cfg.eval.composite)
    if cfg.table.evaluation == "generation":
        out["uint8_rounding"] = str(cfg.eval.get("uint8_rounding", "round"))
    return out


def readings_line(r: dict[str, Any]) -> str:
    """One caption line of `readings(cfg)`."""
    names = {"weights": "aggregation weights", "weight_value": "weight value", "network_input": "network input",
             "prior": "prior", "vlb_weight": "L_vlb weight", "composite": "composite known pixels",
             "uint8_rounding": "uint8 export"}
    def text(v: Any) -> str:
        return ("on" if v else "off") if isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)

    return "Readings: " + "; ".join(f"{names.get(k, k)} {text(v)}" for k, v in r.items()) + "."


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


def _sampling_readings(cfg: DictConfig, model: Job | None) -> dict[str, Any]:
    """The readings a sampling job of `model` is keyed on: Algorithm 1's prior (`paper` or
    `shifted`, which starts from eq. 4's mean `atil_T e`) differs only for a model with
    modalities, so a baseline's samples are shared by every prior (the readings study).
    The network input and the aggregation weights reach sampling through the model's own
    train job (its key, and its config that rebuilds the process)."""
    if model is None:
        return {}
    from repro.tasks import make_task

    m = model.config
    if make_task(m).n_modalities(m["model"]["variant"]) == 0:
        return {}
    return {"diffusion": {"prior": cfg.diffusion.prior}}


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
    gen_cfg.update(row=r, eval={"n_images": cfg.eval.n_images, "uint8_rounding": cfg.eval.uint8_rounding},
                   **_sampling_readings(cfg, deps["model"]))
    name = row.name if snapshot is None else f"{row.name}@{snapshot}"
    if snapshot is not None:
        gen_cfg["snapshot"] = snapshot
    gen = _job("generate", f"generate/{name}", gen_cfg, deps)
    eval_deps = {"samples": gen, **({"features": feats} if feats else {})}
    return _job("evaluate", f"evaluate/{name}", {**eval_cfg, "row": r}, eval_deps)


def generation_plan(cfg: DictConfig) -> list[RowPlan]:
    """Tables 2-3: per row, model [+ classifier] -> generate -> evaluate (IS/FID/sFID/P/R)."""
    feats, eval_cfg = features_job(cfg), _generation_eval_config(cfg)
    rows = [RowPlan(row.name, _generation_row(cfg, row, eval_cfg, feats)) for row in cfg.rows]
    return rows + reference_plan(cfg, eval_cfg, feats)


def reference_rows(cfg: DictConfig) -> list[dict[str, Any]]:
    """The spec's calibration rows (`reference_rows`: real test images, graded degradations of
    them), at the embedded profiles only: there they give the small feature network's numbers
    a scale; the paper profile's Inception / AlexNet numbers have a literature of their own."""
    if cfg.features.kind != "embedded" or not cfg.get("reference_rows"):
        return []
    rows = [to_dict(r) for r in cfg.reference_rows]
    names = {r.name for r in cfg.rows}
    for r in rows:
        if r.get("method") not in ("real", "degrade") or r["name"] in names:
            raise UserError(f"reference row {r.get('name')!r}: method must be real or degrade and its name "
                            f"distinct from the table's rows")
    return rows


def reference_plan(cfg: DictConfig, eval_cfg: dict[str, Any], feats: Job | None) -> list[RowPlan]:
    """One evaluate job per calibration row: the table's evaluation on (degraded) test images."""
    out = []
    for r in reference_rows(cfg):
        view = {**eval_cfg, "data": to_dict(cfg.data), "row": r,
                "eval": {**eval_cfg.get("eval", {}), "n_images": cfg.eval.n_images}}
        out.append(RowPlan(r["name"], _job("evaluate", f"evaluate/{r['name']}", view,
                                           {"features": feats} if feats else {})))
    return out


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
    feats = features_job(cfg)
    eval_cfg = _generation_eval_config(cfg) if cfg.table.evaluation == "generation" else None
    points = []
    for name in cfg.efficiency.rows:
        if name not in by_name:
            raise UserError(f"efficiency.rows names {name!r}, which is not a row of the table; "
                            f"rows are {', '.join(by_name)}")
        if "model" not in by_name[name]:
            raise UserError(f"efficiency.rows: {name!r} has no model of its own to follow through training")
        m = to_dict(cfg.models[by_name[name].model])
        if m.get("released") or "init" in m or "train" in m:
            raise UserError(f"efficiency.rows: {name!r} is not trained from scratch with the table's budget "
                            f"(released, init or its own train block); list only from-scratch rows")
        for step in range(every, cfg.train.steps, every):
            if cfg.table.evaluation == "generation":
                job = _generation_row(cfg, by_name[name], eval_cfg, feats, snapshot=step)
            else:   # Table 1: the row's restorations with that snapshot, scored like the row
                job = _restoration_row(cfg, by_name[name], feats, snapshot=step)
            points.append(CurvePoint(name, step, job))
    return points


DENSE_SETTINGS = ("one_label", "random_labels")


def dense_settings(cfg: DictConfig) -> tuple[str, ...]:
    """The label settings a DiffusionMTL run covers (`setting=one_label|random_labels|both`)."""
    if cfg.setting == "both":
        return DENSE_SETTINGS
    if cfg.setting not in DENSE_SETTINGS:
        raise UserError(f"setting={cfg.setting!r}: choose one_label, random_labels or both")
    return (cfg.setting,)


def dense_plan(cfg: DictConfig, settings: tuple[str, ...] | None = None) -> list[RowPlan]:
    """DiffusionMTL (Table 3 + Table 2's ablations), per row of the chosen label settings:
    dense_train (the row's network on that setting's partial labels) -> dense_predict (test
    predictions, before and after denoising) -> dense_evaluate (dense metrics; delta_m against
    the Single-Task row of the same setting, `reference_model`, whose evaluate job it depends on)."""
    settings = dense_settings(cfg) if settings is None else settings
    rows = [r for r in cfg.rows if r.setting in settings]
    eval_base = {"data": to_dict(cfg.data), "table": {"columns": column_names(cfg.table)},
                 "eval": to_dict(cfg.eval)}

    def chain(row: DictConfig) -> tuple[Job, Job]:
        if row.model not in cfg.models:
            raise UserError(f"row {row.name!r} refers to model {row.model!r}, which the spec's models section "
                            f"does not define")
        data = {**to_dict(cfg.data), "setting": row.setting}
        view = {"seed": cfg.seed, "data": data, "task": to_dict(cfg.task), "model": to_dict(cfg.models[row.model]),
                "train": to_dict(cfg.train)}
        train = _job("dense_train", f"dense_train/{row.setting}/{row.model}", view)
        predict = _job("dense_predict", f"dense_predict/{row.setting}/{row.model}",
                       {"seed": cfg.seed, "data": to_dict(cfg.data), "eval": to_dict(cfg.eval)}, {"model": train})
        return train, predict

    references: dict[str, Job] = {}
    for setting in settings:
        ref = [r for r in cfg.rows if r.setting == setting and r.model == cfg.reference_model]
        if len(ref) != 1:
            raise UserError(f"setting {setting}: the spec needs exactly one row of model {cfg.reference_model!r} "
                            f"(reference_model, delta_m's reference), found {len(ref)}")
        references[setting] = _job("dense_evaluate", f"dense_evaluate/{ref[0].name}",
                                   {**eval_base, "row": to_dict(ref[0])}, {"samples": chain(ref[0])[1]})
    plans = []
    for row in rows:
        if row.model == cfg.reference_model:
            plans.append(RowPlan(row.name, references[row.setting]))
            continue
        deps = {"samples": chain(row)[1], "reference": references[row.setting]}
        plans.append(RowPlan(row.name, _job("dense_evaluate", f"dense_evaluate/{row.name}",
                                            {**eval_base, "row": to_dict(row)}, deps)))
    return plans


DIAGNOSE_BUCKETS = 10   # the issue's [0, 100), [100, 200), ... at T = 1000


def diagnose_plan(cfg: DictConfig, jobs: list[Job]) -> list[Job]:
    """One `diagnose` job (repro.jobs.diagnose) per trained diffusion model behind `jobs` whose
    task trains on labelled images: held-out eps MSE per timestep bucket. Separate jobs, so that
    the train jobs' keys stay as they are. Settings: the spec's `diagnose` block if it has one,
    else the table's evaluation images and batch size and 10 buckets."""
    from repro.jobs.diagnose import diagnosable
    from repro.jobs.job import topological
    from repro.tasks import make_task

    d = {"n_images": cfg.eval.n_images, "batch_size": cfg.eval.batch_size, "buckets": DIAGNOSE_BUCKETS,
         **(to_dict(cfg.diagnose) if "diagnose" in cfg else {})}
    out = []
    for job in topological(jobs):
        if job.kind == "train" and diagnosable(make_task(job.config)):
            view = {**_pick(cfg, "data", "seed"), "diagnose": d}
            out.append(_job("diagnose", f"diagnose/{job.name.removeprefix('train/')}", view, {"model": job}))
    return out


def _sample_job(cfg: DictConfig, row: DictConfig, feats: Job | None, snapshot: int | None = None) -> Job:
    """A row's own samples (Table 1, Table 4, ...), of its model's EMA snapshot after `snapshot` steps if given."""
    deps = {"model": train_job(cfg, row.model, feats)} if "model" in row else {}
    sample_cfg = _pick(cfg, "data", "task", "sample", "seed")
    # compositing pastes known pixels into a model's restoration (none without a model)
    ev = ("n_images", "mask_counts", *(("composite",) if "model" in deps else ()))
    sample_cfg.update(row=to_dict(row), eval={k: to_dict(cfg.eval[k]) for k in ev if k in cfg.eval},
                      **_sampling_readings(cfg, deps.get("model")))
    if snapshot is not None:
        sample_cfg["snapshot"] = snapshot
    name = row.name if snapshot is None else f"{row.name}@{snapshot}"
    return _job("sample", f"sample/{name}", sample_cfg, deps)


def _restoration_eval(cfg: DictConfig, row: DictConfig, sample: Job, feats: Job | None,
                      snapshot: int | None = None) -> Job:
    eval_cfg = _pick(cfg, "features", "weights")
    eval_cfg.update(row=to_dict(row), table={"columns": column_names(cfg.table), "evaluation": cfg.table.evaluation},
                    eval={k: to_dict(cfg.eval[k]) for k in ("mask_counts", "batch_size") if k in cfg.eval})
    eval_deps = {"samples": sample, **({"features": feats} if feats else {})}
    name = row.name if snapshot is None else f"{row.name}@{snapshot}"
    return _job("evaluate", f"evaluate/{name}", eval_cfg, eval_deps)


def _restoration_row(cfg: DictConfig, row: DictConfig, feats: Job | None, snapshot: int) -> Job:
    """sample -> evaluate for one row of Table 1 with its model's EMA snapshot after `snapshot` steps."""
    return _restoration_eval(cfg, row, _sample_job(cfg, row, feats, snapshot), feats, snapshot)


def plan(cfg: DictConfig) -> list[RowPlan]:
    if cfg.table.evaluation == "generation":
        return generation_plan(cfg)
    if cfg.table.evaluation == "dense":
        return dense_plan(cfg)
    feats = features_job(cfg)
    rows, samples = [], {}
    for row in cfg.rows:
        if "samples_of" in row:   # this row scores another row's samples differently (no sampling of its own)
            if row.samples_of not in samples:
                raise UserError(f"row {row.name!r}: samples_of {row.samples_of!r} must name an earlier row")
            sample = samples[row.samples_of]
        else:
            sample = _sample_job(cfg, row, feats)
        samples[row.name] = sample
        rows.append(RowPlan(row.name, _restoration_eval(cfg, row, sample, feats)))
    if cfg.table.evaluation == "lpips_restoration":
        eval_cfg = _pick(cfg, "features", "weights")
        eval_cfg.update(table={"columns": column_names(cfg.table), "evaluation": cfg.table.evaluation},
                        eval={"batch_size": cfg.eval.batch_size})
        rows += reference_plan(cfg, eval_cfg, feats)
    return rows


def table_jobs(cfg: DictConfig) -> tuple[list[RowPlan], list[CurvePoint], list[Job]]:
    """Everything one run of a table computes: its rows, the learning-curve points of
    `efficiency.rows` and the diagnostics of its trained models (what `python -m repro.table`
    dispatches and `python -m repro.status` lists)."""
    rows = plan(cfg)
    points = efficiency_plan(cfg)
    return rows, points, diagnose_plan(cfg, [r.job for r in rows])


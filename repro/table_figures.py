"""The figures and curves a table draws from the job store, beside the table itself.

Sample grids and translation strips of every row (tables/figures/), Table 1's restoration
triplets, DiffusionMTL's before / after denoising figures, and the curves of tables/curves/:
training loss, held-out loss per timestep bucket, quality against training iterations. Each
reads finished jobs only (their samples.npz, loss_curve.json, result.json) and writes with the
repro.io helpers; the drawing itself is repro.report.figures'.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from repro.report.paper import column_names


def row_slug(name: str) -> str:
    """A row's name as a file name: runs of other characters become one `_`, and `*` is spelled
    out so that "M*" and "M" do not share a figure."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name.replace("*", " star ")).strip("_")


def loss_frame(curve: Path, run: str) -> pd.DataFrame:
    """A training job's loss_curve.json as a frame, its run's name in a first column `run`."""
    frame = pd.DataFrame(json.loads(curve.read_text()))
    frame.insert(0, "run", run)
    return frame


def dense_figures(cfg: DictConfig, rows: list, store, out_dir: Path) -> dict[str, Path]:
    """tables/figures/<key>_<row>_denoising.{png,pdf} (before / after denoising / truth per task),
    tables/curves/<key>_loss.csv and its plot, and <key>_initial.csv: every metric of every row
    before and after denoising (the paper's Fig. 8)."""
    from repro.data.registry import load_dense
    from repro.io import atomic_write_text
    from repro.jobs import samples as samples_format
    from repro.report.dense_figures import plot_denoising
    from repro.report.figures import plot_loss_curves

    out: dict[str, Path] = {}
    test = load_dense(cfg.data, "test")
    frames, stages = [], []
    for r in rows:
        predict = r.job.deps.get("samples")
        saved = samples_format.read(store.dir(predict))
        truth = {k: np.stack([test[i][k].numpy() for i in range(len(saved))]) for k in test.tasks}
        final = {t: saved[f"final_{t}"] for t in test.tasks}
        initial = {t: saved[f"initial_{t}"] for t in test.tasks if f"initial_{t}" in saved}
        slug = row_slug(r.name)
        if initial:
            out["figures"] = plot_denoising(saved["images"], initial, final, truth,
                                            Path(out_dir) / "figures" / f"{cfg.table.key}_{slug}_denoising",
                                            title=f"{r.name}: before / after denoising / ground truth")[0].parent
        res = store.dir(r.job).result()
        stages += [{"row": r.name, "stage": "after", **res["all_metrics"]},
                   *([{"row": r.name, "stage": "before", **res["initial_values"]}] if res["initial_values"] else [])]
        frames.append(loss_frame(store.dir(predict.deps["model"]) / "loss_curve.json", r.name))
    out["stages"] = atomic_write_text(Path(out_dir) / "curves" / f"{cfg.table.key}_denoising.csv",
                                      pd.DataFrame(stages).to_csv(index=False, float_format="%.6g"))
    curves = pd.concat(frames, ignore_index=True)
    out["curves"] = atomic_write_text(Path(out_dir) / "curves" / f"{cfg.table.key}_loss.csv",
                                      curves.to_csv(index=False, float_format="%.6g"))
    plot_loss_curves(curves, out["curves"].with_suffix(""), title=f"{cfg.table.key}: training loss",
                     ylabel="partial-label task loss (design 3)")
    return out


def restoration_figure(key: str, rows: list, store, out_dir: Path) -> Path:
    """tables/figures/<key>_restorations.{png,pdf} from the rows' saved samples."""
    from repro.jobs import samples as samples_format
    from repro.report.figures import plot_restorations

    samples = {}
    for r in rows:
        if "samples" not in r.job.deps:   # calibration rows have no samples of their own
            continue
        saved = samples_format.read(store.dir(r.job.deps["samples"]))
        samples[r.name] = {int(m): saved.restorations(m) for m in saved.parts()}
    return plot_restorations(samples, Path(out_dir) / "figures" / f"{key}_restorations")[0]


def sample_figures(cfg: DictConfig, rows: list, store, out_dir: Path) -> list[Path]:
    """tables/figures/<key>_<row>_samples.{png,pdf}, drawn from each row's saved samples:
    generation rows as a grid with the class of each image above it (generated jointly, or
    given); translation rows as source / generated / ground-truth strips (the paper's Figures
    7-10); joint image-representation pairs as a grid. Table 1 has its own figure."""
    from repro.data import OBJECT_CLASSES
    from repro.jobs import samples as samples_format
    from repro.report.figures import plot_image_rows, plot_sample_grid

    written, seen = [], set()
    for r in rows:
        job = r.job.deps.get("samples")
        if job is None or job.key in seen:
            continue
        seen.add(job.key)
        d, row = store.dir(job), job.config.get("row", {})
        slug = row_slug(r.name)
        path = Path(out_dir) / "figures" / f"{cfg.table.key}_{slug}_samples"
        arr = samples_format.read(d)
        if arr.kind == "generations":             # Tables 2-3: generate jobs
            captions, what = None, "samples"
            label_is = _label_meaning(job)
            if row.get("method") == "restore":
                what = f"restorations of test images with {row.get('mask_patches')} masked patches"
            elif label_is:
                names = OBJECT_CLASSES if cfg.data.name == "embedded" else None
                captions = [names[k] if names else f"class {k}" for k in arr["labels"].tolist()]
                what = f"samples; above each, {label_is}"
            written += plot_sample_grid(arr["images"], path, title=f"{r.name}: {what}", captions=captions)[:1]
        elif arr.kind == "translations":          # Table 4, night2day
            if row.get("method") == "ground_truth":
                continue
            n = 8
            src, tgt = cfg.task.source, cfg.task.target
            lines = [(src, arr["source"][:n]), (f"{tgt}: {r.name}", arr["generated"][:n]),
                     (f"{tgt}: ground truth", arr["truth"][:n])]
            written += plot_image_rows(lines, path, n=n, title=f"{src} to {tgt}: {r.name}")[:1]
        elif arr.kind == "joint":                 # joint image-representation pairs
            written += plot_sample_grid(arr["images"], path, title=f"{r.name}: images drawn jointly with their "
                                                                  f"representations")[:1]
    # A renamed or removed row must not leave its old figure behind (the results page lists them all).
    keep = {p.stem for p in written}
    for old in Path(out_dir, "figures").glob(f"{cfg.table.key}_*_samples.*"):
        if old.stem not in keep:
            old.unlink()
    return written


def _label_meaning(generate_job) -> str | None:
    """What the class saved with each sample is, or None where it played no part in sampling
    (an unconditional model draws a class it never reads)."""
    row, model = generate_job.config.get("row", {}), generate_job.deps["model"].config
    conditioned = model["model"]["variant"] == "adm_cond"
    guided = "classifier" in generate_job.deps
    if conditioned or guided:
        return "the class it was " + " and ".join(w for w, on in (("conditioned on", conditioned),
                                                                   ("guided toward", guided)) if on)
    if row.get("condition") == "joint" and model.get("task", {}).get("name") == "image_label":
        return "the label generated with it"
    return None


def write_loss_curves(key: str, jobs: list, store, out_dir: Path) -> Path | None:
    """tables/curves/<key>_loss.csv (long form: run, step, loss) and a PNG/PDF plot of it."""
    from repro.io import atomic_write_text
    from repro.jobs.job import topological
    from repro.report.figures import plot_loss_curves

    frames = []
    for job in topological(jobs):
        f = store.dir(job) / "loss_curve.json"
        if job.kind == "train" and f.exists():
            frames.append(loss_frame(f, job.name.removeprefix("train/")))
    if not frames:
        return None
    curves = pd.concat(frames, ignore_index=True)
    path = Path(out_dir) / "curves" / f"{key}_loss.csv"
    atomic_write_text(path, curves.to_csv(index=False, float_format="%.6g"))
    plot_loss_curves(curves, path.with_suffix(""), title=f"{key}: training loss (eq. 6)")
    return path


def write_loss_by_t(key: str, jobs: list, store, out_dir: Path) -> Path:
    """tables/curves/<key>_loss_by_t.csv (long form: run, k_lo, k_hi, n, quantity, value; the
    quantities: eps, eps_inside / eps_outside for masked-image models, one per modality head)
    and a PNG/PDF of it (repro.jobs.diagnose)."""
    from repro.io import atomic_write_text
    from repro.report.figures import plot_loss_by_t

    records = []
    for job in jobs:
        for b in store.dir(job).result()["loss_by_t"]:
            bounds = {k: b[k] for k in ("k_lo", "k_hi", "n")}
            records += [{"run": job.name.removeprefix("diagnose/"), **bounds, "quantity": q, "value": v}
                        for q, v in b.items() if q not in bounds]
    frame = pd.DataFrame(records)
    path = Path(out_dir) / "curves" / f"{key}_loss_by_t.csv"
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    plot_loss_by_t(frame, path.with_suffix(""), title=f"{key}: held-out loss per timestep bucket (EMA weights)")
    return path


def efficiency_frame(cfg: DictConfig, rows: list, points: list, store) -> pd.DataFrame:
    """The efficiency curves, long form: row, training_step, one column per metric; each curve's
    snapshots in order, then the table's own row at the budget."""
    columns = column_names(cfg.table)
    final = {r.name: r.job for r in rows}
    curves: dict[str, list] = {}     # row -> [(step, evaluate job)], snapshots in order, then the row itself
    for p in points:
        curves.setdefault(p.row, []).append((p.step, p.job))
    records = [{"row": name, "training_step": step, **store.dir(job).result()["values"]}
               for name, snaps in curves.items() for step, job in [*snaps, (int(cfg.train.steps), final[name])]]
    return pd.DataFrame(records).reindex(columns=["row", "training_step", *columns])


def write_efficiency_curves(cfg: DictConfig, rows: list, points: list, store, out_dir: Path) -> Path:
    """tables/curves/<key>_efficiency.csv (`efficiency_frame`) and a PNG/PDF with one panel per metric."""
    from repro.io import atomic_write_text
    from repro.report.figures import plot_metric_curves

    columns = column_names(cfg.table)
    frame = efficiency_frame(cfg, rows, points, store)
    path = Path(out_dir) / "curves" / f"{cfg.table.key}_efficiency.csv"
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    n = int(store.dir(points[0].job).result()["n_images"])
    plot_metric_curves(frame, columns, path.with_suffix(""), x="training_step",
                       title=f"{cfg.table.key}: quality vs training iterations ({cfg.profile} profile, "
                             f"{n} samples per point, EMA weights)")
    return path

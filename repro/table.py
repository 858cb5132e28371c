"""python -m repro.table N [--profile tiny|smoke|paper] [--cluster local|debug|slurm] [key=value ...]

Composes benchmarks/tableN.yaml with hydra, checks it, expands it into jobs, runs what
the job store does not hold yet, and renders tables/tableN.{md,tex,csv,json}.
`python -m repro.table readings` runs the readings study of benchmarks/readings.yaml.
Bad input exits 2 with one line, before any job starts.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from repro.config import available_tables, compose
from repro.cli import available_clusters, profile_out, run, table_options
from repro.errors import UserError
from repro.report.paper import column_names

MAX_PATCHES = 100   # beyond this a 64x64 image with 16x16 patches is masked many times over


def validate(cfg: DictConfig) -> None:
    """Everything that can be checked before a job starts."""
    from repro.data.registry import check_data
    from repro.dispatch import check_cluster
    from repro.schema import check
    from repro.tasks import check_task

    check(cfg)   # types, ranges, names and relations of every value a job reads (repro/schema.py)
    check_cluster(cfg.cluster)
    if "mask_counts" in cfg.eval:
        counts = list(cfg.eval.mask_counts)
        bad = [m for m in counts if not isinstance(m, int) or not 0 <= m <= MAX_PATCHES]
        if bad:
            raise UserError(f"eval.mask_counts {counts}: each must be an integer in 0..{MAX_PATCHES}, got {bad}")
        columns = column_names(cfg.table)
        if len(counts) != len(columns):
            raise UserError(f"eval.mask_counts has {len(counts)} entries but the table has "
                            f"{len(columns)} columns {columns}")
        lo, hi = cfg.task.train_patches
        if not 0 <= lo <= hi <= MAX_PATCHES:
            raise UserError(f"task.train_patches [{lo}, {hi}] must satisfy 0 <= lo <= hi <= {MAX_PATCHES}")
    for key in ("n_images", "batch_size"):
        if key in cfg.eval and cfg.eval[key] < 1:
            raise UserError(f"eval.{key} must be at least 1, got {cfg.eval[key]}")
    check_readings(cfg)
    check_data(cfg.data)
    open_some_images(cfg.data)
    check_task(cfg)
    if cfg.features.kind == "pretrained" and cfg.table.evaluation == "lpips_restoration":
        from repro.weights import check_weights

        check_weights("lpips_alexnet", cfg.weights.lpips_alexnet)
    from repro.weights import WEIGHTS, check_state_dict

    for name, path in (cfg.get("weights") or {}).items():   # every configured file that is there:
        if name in WEIGHTS and path and Path(str(path)).expanduser().is_file():   # the right network?
            check_state_dict(name, path)


IMAGES_OPENED = 8   # per split: enough to catch a folder of unreadable files, cheap on a cluster filesystem


def open_some_images(data: DictConfig, k: int = IMAGES_OPENED) -> None:
    """A user-held class-folder dataset (ImageNet): decode `k` files drawn at random (seeded) from
    each split, so that a folder of truncated or non-image files stops the run before training,
    with the file's path (repro.data.image_files.read_image), not hours into it."""
    import random

    from repro.data.image_files import read_image
    from repro.data.imagenet import list_class_folders

    if data.get("name") != "imagenet":
        return
    for key in ("root", "test_root"):
        # a missing folder is check_data's to report (or to list, in a dry run)
        if data.get(key) and Path(str(data[key])).expanduser().is_dir():
            _, files = list_class_folders(Path(str(data[key])).expanduser(), f"data.{key}", f"set data.{key}")
            for path, _ in random.Random(0).sample(files, min(k, len(files))):
                read_image(path)


def check_readings(cfg: DictConfig) -> None:
    """The named readings (README, "Decisions the paper leaves open") before any job starts."""
    from repro.data.pixels import UINT8_ROUNDINGS
    from repro.diffusion.network_input import NETWORK_INPUTS
    from repro.diffusion.sampling import PRIORS

    choices = {"diffusion.network_input": NETWORK_INPUTS, "diffusion.prior": PRIORS,
               "eval.uint8_rounding": UINT8_ROUNDINGS}
    for key, allowed in choices.items():
        block, name = key.split(".")
        value = cfg[block].get(name) if block in cfg else None
        if value is not None and value not in allowed:
            raise UserError(f"{key}={value!r}: choose one of {', '.join(allowed)}")
    vlb = [float(cfg.train.get("vlb_weight") or 0.0),
           *(float(m.get("train", {}).get("vlb_weight") or 0.0) for m in cfg.get("models", {}).values())]
    if any(w < 0 for w in vlb):
        raise UserError(f"train.vlb_weight must be >= 0, got {min(vlb)}")
    if any(vlb) and not cfg.unet.get("learn_sigma", False):
        raise UserError("train.vlb_weight > 0 trains a learned variance: set unet.learn_sigma=true "
                        "(the hybrid loss of ADM's learn_sigma models) or leave vlb_weight at 0")


def run_table(table: str, profile: str, cluster: str, overrides: tuple[str, ...],
              store: Path, out_dir: Path) -> dict[str, Path]:
    from repro.dispatch import dispatch
    from repro.jobs.job import topological
    from repro.jobs.store import JobStore
    from repro.plan import readings, readings_line, reference_rows, table_jobs
    from repro.report.provenance import make_provenance
    from repro.report.paper import table_spec
    from repro.report.learning import last_doublings
    from repro.report.render import render_table, staged

    if cluster not in available_clusters():
        raise UserError(f"unknown cluster {cluster!r}: choose one of {', '.join(available_clusters())}")
    cfg = compose(table, profile, cluster, overrides)
    if cfg.table.evaluation == "dense":   # DiffusionMTL: its own tasks, jobs and figure
        return run_dense_table(cfg, store, out_dir)
    validate(cfg)
    rows, points, diagnostics = table_jobs(cfg)
    report = dispatch([r.job for r in rows] + [p.job for p in points] + diagnostics, cfg.cluster, store)
    print(report.line())
    js = JobStore(store)
    results = {r.name: js.dir(r.job).result() for r in rows}
    ours = pd.DataFrame({name: res["values"] for name, res in results.items()}).T
    ours = ours.reindex(columns=column_names(cfg.table))
    extractor = next(iter(results.values()))["feature_extractor"]

    def compute_s(jobs: list) -> float:
        """Wall time of every job behind `jobs` (training, sampling, evaluation), each once."""
        return round(sum(js.dir(j).result()["provenance"]["wall_time_s"] for j in topological(jobs)), 1)

    provenance = make_provenance(
        profile=cfg.profile, dataset=f"{cfg.data.name} {cfg.data.resolution}x{cfg.data.resolution}",
        n_samples=min(r["n_images"] for r in results.values()), feature_extractor=extractor,
        wall_time_s=compute_s([r.job for r in rows]),
        rows={r.name: {"config_key": r.job.key, "wall_time_s": compute_s([r.job]),
                       "n_samples": results[r.name]["n_images"]} for r in rows},
        readings=readings(cfg))
    notes = [readings_line(readings(cfg)), f"{cfg.sample.steps} sampling steps of T={cfg.diffusion.T}; "
             f"train: {cfg.train.steps} steps, batch {cfg.train.batch_size}", *cfg.table.get("notes", [])]
    intervals, cells, interval_note = uncertainty_of(rows, js, results)
    learning = (last_doublings(efficiency_frame(cfg, rows, points, js), table_spec(cfg.table.key).columns)
                if points else ())   # has each row with snapshots learned at this budget?
    # Rendered into a staging folder and swapped in together: a kill mid-render keeps the old set.
    with staged(out_dir, cfg.table.key) as stage:
        paths = render_table(cfg.table.key, ours, provenance, stage, caption_notes=notes,
                             cited_rows=table_spec(cfg.table.key).cited_rows, intervals=intervals, cells=cells,
                             interval_note=interval_note,
                             reference_rows=[r["name"] for r in reference_rows(cfg)], learning=learning)
        paths["metrics"] = write_dvc_metrics(cfg.table.key, ours, stage)
        if cfg.table.evaluation == "lpips_restoration":
            paths["figure"] = restoration_figure(cfg.table.key, rows, js, stage)
        grids = sample_figures(cfg, rows, js, stage)
        if grids:
            paths["grids"] = grids[0].parent
        curves = write_loss_curves(cfg.table.key, [r.job for r in rows], js, stage)
        if curves:
            paths["curves"] = curves
        if points:
            paths["efficiency"] = write_efficiency_curves(cfg, rows, points, js, stage)
        if diagnostics:
            paths["loss_by_t"] = write_loss_by_t(cfg.table.key, diagnostics, js, stage)
        paths = {name: Path(out_dir) / Path(p).relative_to(stage) for name, p in paths.items()}
    return paths


def run_dense_table(cfg: DictConfig, store: Path, out_dir: Path) -> dict[str, Path]:
    """DiffusionMTL: the chosen setting's rows run (repro.plan.dense_plan); the table shows every
    row of either setting whose evaluation the store holds, so one_label and random_labels runs
    add up to Table 3 instead of overwriting each other."""
    from repro.data.registry import check_data
    from repro.dispatch import check_cluster, dispatch
    from repro.jobs.job import topological
    from repro.jobs.store import JobStore
    from repro.plan import DENSE_SETTINGS, dense_plan
    from repro.report.paper import table_spec
    from repro.report.provenance import make_provenance
    from repro.report.render import render_table
    from repro.tasks.dense import DENSE_TASKS, make_dense_task

    check_cluster(cfg.cluster)
    for setting in DENSE_SETTINGS:   # the data and mapping files of every setting a row may train on
        check_data({**cfg.data, "setting": setting})
    make_dense_task(cfg)
    DENSE_TASKS[cfg.task.name].check_config(cfg)
    for key in ("n_images", "batch_size"):
        if cfg.eval[key] < 1:
            raise UserError(f"eval.{key} must be at least 1, got {cfg.eval[key]}")
    report = dispatch([r.job for r in dense_plan(cfg)], cfg.cluster, store)
    print(report.line())
    js = JobStore(store)
    rows = [r for r in dense_plan(cfg, DENSE_SETTINGS) if js.dir(r.job).done]
    results = {r.name: js.dir(r.job).result() for r in rows}
    ours = pd.DataFrame({name: res["values"] for name, res in results.items()}).T.reindex(columns=column_names(cfg.table))

    def compute_s(jobs: list) -> float:
        return round(sum(js.dir(j).result()["provenance"]["wall_time_s"] for j in topological(jobs)), 1)

    provenance = make_provenance(
        profile=cfg.profile, dataset=f"{cfg.data.name} {cfg.data.resolution}x{cfg.data.resolution}",
        n_samples=min(r["n_images"] for r in results.values()),
        feature_extractor=next(iter(results.values()))["feature_extractor"],
        wall_time_s=compute_s([r.job for r in rows]),
        rows={r.name: {"config_key": r.job.key, "wall_time_s": compute_s([r.job]),
                       "n_samples": results[r.name]["n_images"]} for r in rows})
    t = cfg.task
    notes = [f"{t.backbone} (ImageNet weights: {t.imagenet or 'none, random initialisation'}), C = {t.width}, "
             f"S = {t.S}; train: {cfg.train.steps} steps, batch {cfg.train.batch_size}, Adam lr {cfg.train.lr}, "
             f"poly over {cfg.train.epochs} epochs; boundary maxDist {cfg.eval.edge_max_dist} of the diagonal",
             *cfg.table.get("notes", [])]
    paths = render_table(cfg.table.key, ours, provenance, out_dir, caption_notes=notes,
                         cited_rows=table_spec(cfg.table.key).cited_rows)
    paths["metrics"] = write_dvc_metrics(cfg.table.key, ours, out_dir)
    paths.update(dense_figures(cfg, rows, js, out_dir))
    return paths


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
        slug = re.sub(r"[^A-Za-z0-9]+", "_", r.name.replace("*", " star ")).strip("_")
        if initial:
            out["figures"] = plot_denoising(saved["images"], initial, final, truth,
                                            Path(out_dir) / "figures" / f"{cfg.table.key}_{slug}_denoising",
                                            title=f"{r.name}: before / after denoising / ground truth")[0].parent
        res = store.dir(r.job).result()
        stages += [{"row": r.name, "stage": "after", **res["all_metrics"]},
                   *([{"row": r.name, "stage": "before", **res["initial_values"]}] if res["initial_values"] else [])]
        curve = store.dir(predict.deps["model"]) / "loss_curve.json"
        frame = pd.DataFrame(json.loads(curve.read_text()))
        frame.insert(0, "run", r.name)
        frames.append(frame)
    out["stages"] = atomic_write_text(Path(out_dir) / "curves" / f"{cfg.table.key}_denoising.csv",
                                      pd.DataFrame(stages).to_csv(index=False, float_format="%.6g"))
    curves = pd.concat(frames, ignore_index=True)
    out["curves"] = atomic_write_text(Path(out_dir) / "curves" / f"{cfg.table.key}_loss.csv",
                                      curves.to_csv(index=False, float_format="%.6g"))
    plot_loss_curves(curves, out["curves"].with_suffix(""), title=f"{cfg.table.key}: training loss",
                     ylabel="partial-label task loss (design 3)")
    return out


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
        slug = re.sub(r"[^A-Za-z0-9]+", "_", r.name.replace("*", " star ")).strip("_")   # M* != M
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


def write_loss_curves(key: str, jobs: list, store, out_dir: Path) -> Path | None:
    """tables/curves/<key>_loss.csv (long form: run, step, loss) and a PNG/PDF plot of it."""
    from repro.io import atomic_write_text
    from repro.jobs.job import topological
    from repro.report.figures import plot_loss_curves

    frames = []
    for job in topological(jobs):
        f = store.dir(job) / "loss_curve.json"
        if job.kind == "train" and f.exists():
            frame = pd.DataFrame(json.loads(f.read_text()))
            frame.insert(0, "run", job.name.removeprefix("train/"))
            frames.append(frame)
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


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("table")
@click.argument("overrides", nargs=-1)
@table_options
@click.option("--dry-run", is_flag=True, help="Validate, print the job DAG with resources, compute, disk and "
              "store state, list missing data/weights; write and submit nothing (repro/dryrun.py).")
def main(table: str, overrides: tuple[str, ...], profile: str, cluster: str, store: Path, out_dir: Path,
         dry_run: bool = False) -> None:
    """Reproduce one table of MT-Diffusion (or `all`)."""
    from repro.readings import READINGS_SPEC, run_readings

    out_dir = profile_out(out_dir, profile)
    if table == READINGS_SPEC:   # the readings study (repro/readings.py): Tables 1-2 under each named reading
        paths = run_readings(profile, cluster, overrides, store, out_dir, check=validate)
        print(f"{table}: " + ", ".join(str(p) for p in paths.values()))
        print(Path(paths["md"]).read_text())
        return
    tables = available_tables() if table == "all" else [table]
    if dry_run:
        from repro.dryrun import dry_run as price

        for t in tables:
            print("\n".join(price(t, profile, cluster, overrides, store, validate)))
        return
    for t in tables:
        paths = run_table(t, profile, cluster, overrides, store, out_dir)
        print(f"table {t}: " + ", ".join(str(p) for p in paths.values()))
        md = paths.get("md")
        if md is not None:
            print(Path(md).read_text())


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.table", argv)


if __name__ == "__main__":
    sys.exit(cli())

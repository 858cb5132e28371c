"""python -m repro.table N [--profile tiny|smoke|paper] [--cluster local|debug|slurm] [key=value ...]

Composes benchmarks/tableN.yaml with hydra, checks it, expands it into jobs, runs what
the job store does not hold yet, and renders tables/tableN.{md,tex,csv,json}.
`python -m repro.table readings` runs the readings study of benchmarks/readings.yaml.
Bad input exits 2 with one line, before any job starts.

This module is the command and the order of its steps; each step lives beside it:
the checks before any job starts (repro/table_checks.py), the assembly of a table's
results from the store (repro/table_results.py), the figures and curves drawn from the
store (repro/table_figures.py), the rendering (repro/report/render.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from omegaconf import DictConfig

from repro.cli import available_clusters, profile_out, run, table_options
from repro.config import available_tables, compose
from repro.errors import UserError
from repro.table_checks import validate, validate_dense
from repro.table_figures import (dense_figures, efficiency_frame, restoration_figure, sample_figures,
                                 write_efficiency_curves, write_loss_by_t, write_loss_curves)
from repro.table_results import (caption_notes, dense_caption_notes, ours_frame, provenance_of, results_of,
                                 uncertainty_of, write_dvc_metrics)

__all__ = ["cli", "main", "run_table", "validate"]   # validate: repro.figure and the readings study share it


def run_table(table: str, profile: str, cluster: str, overrides: tuple[str, ...],
              store: Path, out_dir: Path) -> dict[str, Path]:
    """Compose, check, plan and run one table, then render it and its figures into `out_dir`;
    the paths written, by name."""
    from repro.dispatch import dispatch
    from repro.jobs.store import JobStore
    from repro.plan import readings, readings_line, reference_rows, table_jobs
    from repro.report.learning import last_doublings
    from repro.report.paper import table_spec
    from repro.report.render import render_table
    from repro.report.staging import staged

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
    results = results_of(rows, js)
    ours = ours_frame(cfg, results)
    provenance = provenance_of(cfg, rows, results, js, readings=readings(cfg))
    notes = caption_notes(cfg, readings_line(readings(cfg)))
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
    from repro.dispatch import dispatch
    from repro.jobs.store import JobStore
    from repro.plan import DENSE_SETTINGS, dense_plan
    from repro.report.paper import table_spec
    from repro.report.render import render_table

    validate_dense(cfg)
    report = dispatch([r.job for r in dense_plan(cfg)], cfg.cluster, store)
    print(report.line())
    js = JobStore(store)
    rows = [r for r in dense_plan(cfg, DENSE_SETTINGS) if js.dir(r.job).done]
    results = results_of(rows, js)
    ours = ours_frame(cfg, results)
    provenance = provenance_of(cfg, rows, results, js)
    intervals, cells, _ = uncertainty_of(rows, js, results)
    from repro.jobs.dense_evaluate import interval_note

    paths = render_table(cfg.table.key, ours, provenance, out_dir, caption_notes=dense_caption_notes(cfg),
                         cited_rows=table_spec(cfg.table.key).cited_rows, intervals=intervals, cells=cells,
                         interval_note=interval_note(results) if cells is not None else "")
    paths["metrics"] = write_dvc_metrics(cfg.table.key, ours, out_dir)
    paths.update(dense_figures(cfg, rows, js, out_dir))
    return paths


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
    if table == READINGS_SPEC and dry_run:
        from repro.dryrun import dry_run_readings

        print("\n".join(dry_run_readings(profile, cluster, overrides, store, validate)))
        return
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

"""python -m repro.steps [--profile tiny|smoke|paper] [--steps 10,25,50,100,250,1000]
                        [--only 1|2|both] [--rows "ADM (un-cond),MT-Diffusion-U"] [--reading zero]

Quality against the number of sampling steps (issue 14, item 4): Table 1's LPIPS and
Table 2's FID with `sample.steps` respaced to each count, with ancestral sampling (both
tables) and DDIM (Table 2's generation rows; Table 1's restorations have no DDIM form
in the suite). Each point is that table's own row jobs (repro.plan.table_jobs) with
`sample.steps=N` (and `+sample.sampler=ddim`), so training is shared with the table through
the store and only sampling and evaluation run per point; `--rows` keeps the study to the
rows whose answer it needs (a 1000-step point costs 50x a 20-step one), and `--reading`
applies one of benchmarks/readings.yaml's readings (the MT rows are noise under the
paper's literal weights, so their step curves are measured under `zero`, say).
Writes tables/curves/steps.{csv,png,pdf} - a later run replaces only its own series - and
prints, per series, the fewest steps within 5% of the most-steps value: the basis for
choosing a profile's `sample.steps`.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click
import pandas as pd

from repro.cli import run, table_options
from repro.errors import UserError

if TYPE_CHECKING:    # imported lazily at run time: --help stays fast
    from omegaconf import DictConfig

    from repro.jobs.job import Job

STEPS = (10, 25, 50, 100, 250, 1000)
SERIES = (("1", "ancestral", "LPIPS"), ("2", "ancestral", "FID"), ("2", "ddim", "FID"))
TOLERANCE = 0.05     # the "within 5% of the 1000-step value"
SERIES_KEYS = ["table", "sampler", "row", "reading"]   # one curve


@dataclass(frozen=True)
class StepPoint:
    table: str
    sampler: str
    sampling_steps: int
    row: str
    metric: str
    job: "Job"           # the row's evaluate job at that step count


def plan_points(profile: str, cluster: str, steps: tuple[int, ...], overrides: tuple[str, ...],
                tables: tuple[str, ...] = ("1", "2"), rows: tuple[str, ...] = ()
                ) -> tuple[list[StepPoint], "DictConfig"]:
    """Every (series, step count, row) point as the table's own row job; and the cluster config."""
    from repro.config import compose
    from repro.plan import table_jobs
    from repro.table_checks import validate

    points, cluster_cfg, names = [], None, set()
    for table, sampler, metric in (s for s in SERIES if s[0] in tables):
        for n in steps:
            extra = (f"sample.steps={n}", *(("+sample.sampler=ddim",) if sampler == "ddim" else ()))
            cfg = compose(table, profile, cluster, (*overrides, *extra))
            validate(cfg)
            table_rows = table_jobs(cfg)[0]
            names |= {r.name for r in table_rows}
            points += [StepPoint(table, sampler, n, r.name, metric, r.job) for r in table_rows
                       if not rows or r.name in rows]
            cluster_cfg = cfg.cluster
    unknown = [r for r in rows if r not in names]     # one --rows list may name rows of both tables
    if unknown:
        raise UserError(f"--rows: no row {unknown[0]!r} in Table {' or '.join(tables)} "
                        f"(rows: {', '.join(sorted(names))})")
    return points, cluster_cfg


def measure(profile: str, cluster: str, steps: tuple[int, ...], overrides: tuple[str, ...],
            store: Path, tables: tuple[str, ...] = ("1", "2"), rows: tuple[str, ...] = (),
            reading: str = "paper") -> pd.DataFrame:
    """Long form: table, sampler, sampling_steps, row, reading, metric, value, lo, hi (Table 1:
    the mean LPIPS over its mask-count columns, no interval; Table 2: FID and its 95% interval).
    All points are dispatched at once, so the local pool runs them in parallel."""
    from repro.dispatch import dispatch
    from repro.jobs.store import JobStore

    points, cluster_cfg = plan_points(profile, cluster, steps, overrides, tables, rows)
    print(dispatch([p.job for p in points], cluster_cfg, store).line())
    js, records = JobStore(store), []
    for p in points:
        result = js.dir(p.job).result()
        values = list(result["values"].values()) if p.table == "1" else [result["values"]["FID"]]
        lo, hi = (result.get("intervals") or {}).get("FID", (None, None)) if p.table == "2" else (None, None)
        records.append({"table": p.table, "sampler": p.sampler, "sampling_steps": p.sampling_steps, "row": p.row,
                        "reading": reading, "metric": p.metric, "value": float(sum(values) / len(values)),
                        "lo": lo, "hi": hi})
    return pd.DataFrame(records)


def fewest_steps(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per (table, sampler, row): the fewest steps whose value is within `tolerance` of the
    value at the most steps, and the speed-up of sampling that many instead (steps ratio)."""
    out = []
    for (table, sampler, row, reading), part in frame.groupby(SERIES_KEYS, sort=False):
        part = part.sort_values("sampling_steps")
        ref_steps, ref = int(part.sampling_steps.iloc[-1]), float(part.value.iloc[-1])
        ok = part[(part.value - ref).abs() <= tolerance * abs(ref)]
        n = int(ok.sampling_steps.iloc[0])
        out.append({"table": table, "sampler": sampler, "row": row, "reading": reading,
                    "steps": n, "reference_steps": ref_steps, "value": float(ok.value.iloc[0]),
                    "reference": ref, "speedup": ref_steps / n})
    return pd.DataFrame(out)


def write(frame: pd.DataFrame, out_dir: Path, profile: str) -> Path:
    """tables/curves/steps.csv and steps.{png,pdf}: one panel per table, a line per row, sampler
    and reading. Series already in the CSV that this run did not measure are kept (a study is
    built up over several runs: one reading or row set at a time); the ones it measured are replaced."""
    from repro.io import atomic_write_text
    from repro.report.figures import plot_metric_curves

    path = Path(out_dir) / "curves" / "steps.csv"
    if path.exists():
        old = pd.read_csv(path, dtype={"table": str})
        if "reading" not in old.columns:
            old["reading"] = "paper"
        mine = pd.MultiIndex.from_frame(frame[SERIES_KEYS].drop_duplicates())
        old = old[~pd.MultiIndex.from_frame(old[SERIES_KEYS]).isin(mine)]
        frame = pd.concat([old, frame], ignore_index=True)
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    # Table 1's metric is LPIPS and Table 2's FID: one panel each, named as report.figures knows them
    wide = frame.assign(row="T" + frame.table + " " + frame.row + " (" + frame.sampler + ", " + frame.reading + ")")
    wide = wide.pivot_table(index=["row", "sampling_steps"], columns="metric", values="value").reset_index()
    columns = [m for m in ("LPIPS", "FID") if m in wide.columns]
    plot_metric_curves(wide, columns, path.with_suffix(""), x="sampling_steps",
                       title=f"quality vs sampling steps ({profile} profile)")
    return path


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(sorted({int(s) for s in text.split(",")}))
    except ValueError:
        raise UserError(f"--steps {text!r}: give comma-separated integers, e.g. 10,25,50") from None
    if not steps or steps[0] < 1:
        raise UserError(f"--steps {text!r}: every count must be at least 1")
    return steps


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("overrides", nargs=-1)
@click.option("--steps", "steps_text", default=",".join(map(str, STEPS)), show_default=True,
              help="sampling-step counts to measure")
@click.option("--only", "which", type=click.Choice(["1", "2", "both"]), default="both", show_default=True,
              help="measure one table only")
@click.option("--rows", "rows_text", default="", help="comma-separated row names to measure (default: every row)")
@click.option("--reading", default="paper", show_default=True,
              help="a reading of benchmarks/readings.yaml whose overrides apply (recorded with each point)")
@table_options
def main(overrides: tuple[str, ...], steps_text: str, which: str, rows_text: str, reading: str, profile: str,
         cluster: str, store: Path, out_dir: Path) -> None:
    """Table 1 LPIPS and Table 2 FID against the number of sampling steps."""
    from repro.readings import load_study

    by_name = {r.name: r for r in load_study()[1]}
    if reading not in by_name:
        raise UserError(f"--reading {reading!r}: choose one of {', '.join(by_name)} (benchmarks/readings.yaml)")
    rows = tuple(r.strip() for r in rows_text.split(",") if r.strip())
    frame = measure(profile, cluster, parse_steps(steps_text), (*by_name[reading].overrides, *overrides), store,
                    ("1", "2") if which == "both" else (which,), rows, reading)
    path = write(frame, out_dir, profile)
    print(f"steps: {path}, {path.with_suffix('.png')}, {path.with_suffix('.pdf')}")
    print(fewest_steps(pd.read_csv(path, dtype={"table": str})).to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.steps", argv)


if __name__ == "__main__":
    sys.exit(cli())

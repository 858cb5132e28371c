"""python -m repro.steps [--profile tiny|smoke|paper] [--steps 10,25,50,100,250,1000]

Quality against the number of sampling steps (issue 14, item 4): Table 1's LPIPS and
Table 2's FID with `sample.steps` respaced to each count, with ancestral sampling (both
tables) and DDIM (Table 2's generation rows; Table 1's restorations have no DDIM form
in the suite). Each point is the table itself, run through `repro.table`'s own path with
`sample.steps=N` (and `+sample.sampler=ddim`), so training is shared through the store
and only sampling and evaluation run per point. Writes tables/curves/steps.{csv,png,pdf}
and prints, per table and sampler, the fewest steps within 5% of the most-steps value:
the basis for choosing a profile's `sample.steps`.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import click
import pandas as pd

from repro.cli import run, table_options
from repro.errors import UserError

STEPS = (10, 25, 50, 100, 250, 1000)
SERIES = (("1", "ancestral", "LPIPS"), ("2", "ancestral", "FID"), ("2", "ddim", "FID"))
TOLERANCE = 0.05     # the "within 5% of the 1000-step value"


def measure(profile: str, cluster: str, steps: tuple[int, ...], overrides: tuple[str, ...],
            store: Path, tables: tuple[str, ...] = ("1", "2")) -> pd.DataFrame:
    """Long form: table, sampler, sampling_steps, row, metric, value (Table 1: the mean LPIPS
    over its mask-count columns; Table 2: FID)."""
    from repro.table import run_table

    records = []
    with tempfile.TemporaryDirectory() as scratch:    # each point's rendered table is not kept
        for table, sampler, metric in (s for s in SERIES if s[0] in tables):
            for n in steps:
                extra = (f"sample.steps={n}", *(("+sample.sampler=ddim",) if sampler == "ddim" else ()))
                paths = run_table(table, profile, cluster, (*overrides, *extra), store, Path(scratch))
                ours = json.loads(Path(paths["metrics"]).read_text())    # {row: {column: {ours, paper}}}
                for row, cols in ours.items():
                    values = [c["ours"] for c in cols.values()] if table == "1" else [cols["FID"]["ours"]]
                    value = sum(values) / len(values)
                    records.append({"table": table, "sampler": sampler, "sampling_steps": n, "row": row,
                                    "metric": metric, "value": float(value)})
    return pd.DataFrame(records)


def fewest_steps(frame: pd.DataFrame, tolerance: float = TOLERANCE) -> pd.DataFrame:
    """Per (table, sampler, row): the fewest steps whose value is within `tolerance` of the
    value at the most steps, and the speed-up of sampling that many instead (steps ratio)."""
    out = []
    for (table, sampler, row), part in frame.groupby(["table", "sampler", "row"], sort=False):
        part = part.sort_values("sampling_steps")
        ref_steps, ref = int(part.sampling_steps.iloc[-1]), float(part.value.iloc[-1])
        ok = part[(part.value - ref).abs() <= tolerance * abs(ref)]
        n = int(ok.sampling_steps.iloc[0])
        out.append({"table": table, "sampler": sampler, "row": row, "steps": n, "reference_steps": ref_steps,
                    "value": float(ok.value.iloc[0]), "reference": ref, "speedup": ref_steps / n})
    return pd.DataFrame(out)


def write(frame: pd.DataFrame, out_dir: Path, profile: str) -> Path:
    """tables/curves/steps.csv and steps.{png,pdf}: one panel per table, a line per row and sampler."""
    from repro.io import atomic_write_text
    from repro.report.figures import plot_metric_curves

    path = Path(out_dir) / "curves" / "steps.csv"
    atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
    # Table 1's metric is LPIPS and Table 2's FID: one panel each, named as report.figures knows them
    wide = frame.assign(row="T" + frame.table + " " + frame.row + " (" + frame.sampler + ")")
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
@table_options
def main(overrides: tuple[str, ...], steps_text: str, which: str, profile: str, cluster: str, store: Path,
         out_dir: Path) -> None:
    """Table 1 LPIPS and Table 2 FID against the number of sampling steps."""
    frame = measure(profile, cluster, parse_steps(steps_text), overrides, store,
                    ("1", "2") if which == "both" else (which,))
    path = write(frame, out_dir, profile)
    print(f"steps: {path}, {path.with_suffix('.png')}, {path.with_suffix('.pdf')}")
    print(fewest_steps(frame).to_string(index=False, float_format=lambda v: f"{v:.4g}"))


def cli(argv: list[str] | None = None) -> int:
    return run(main, "python -m repro.steps", argv)


if __name__ == "__main__":
    sys.exit(cli())

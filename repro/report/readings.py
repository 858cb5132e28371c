"""The readings study's report: Table 1's and Table 2's cells under each named reading of the
paper, seed replicates, and for every paper claim the readings under which it holds.

Pure functions of the numbers (repro.readings collects them from the job store): a long frame
of cells (table, reading, seed, row, column, value, low, high: each seed's value with its 95%
interval) and, per (table, reading, seed), the cells' per-image data or bootstrap replicates
(`repro.report.cells.CellData`, from the evaluate jobs' cells.npz) in; the texts of
tables/readings.{md,tex,csv,json} out.

Verdicts are the tables' own (`repro.report.cells.claim_verdict`, one definition): at each seed
the claim is tested on that seed's cells (paired over images where the rows score the same
images, else unpaired), held / not held / inconclusive from the interval of the difference.
Across seeds (`combine_seeds`): held if held at every seed, not held if not held at every
seed, otherwise inconclusive. Not the rule that combines a claim's comparisons
(`cells.combine_verdicts`: one counterexample refutes "for every mask count"): seeds are
replicates of one experiment, and replicates that disagree say the outcome is not settled.
A seed whose cells carry no data (jobs older than cells.npz) falls back to the point
comparison of `repro.report.claims`, as the tables do.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from repro.errors import UserError
from repro.report.cells import CellData, claim_verdict
from repro.report.claims import HELD, INCONCLUSIVE, NOT_EVALUABLE, NOT_HELD, evaluate_claim, expand
from repro.report.escape import md_escape, tex_escape
from repro.report.paper import Column, table_spec
from repro.report.table_formats import _interval_text

CELL_COLUMNS = ["table", "reading", "seed", "row", "column", "value", "low", "high"]
# (table, reading, seed) -> {(row, column): CellData}; None where the jobs saved no per-image data
SeedCells = Mapping[tuple[str, str, int], Mapping[tuple[str, str], CellData] | None]


@dataclass(frozen=True)
class Reading:
    """One named reading: the overrides it applies to every table it concerns."""

    name: str
    overrides: tuple[str, ...]
    why: str = ""
    only: tuple[str, ...] = field(default=())     # the study's tables it is restricted to (readings.yaml), () = all
    seeds: tuple[int, ...] = field(default=())    # the seeds it is run at (readings.yaml; default the study's)
    tables: tuple[str, ...] = field(default=())   # the tables it applies to (set by the study)


def study_claims(table_id: str, rows: Sequence[str]) -> list[dict]:
    """The paper's claims of `table_id` that compare only `rows` (a claim about a row the study
    leaves out, e.g. Table 2's M*/E*, is not re-evaluated)."""
    spec, keep = table_spec(table_id), set(rows)
    out = []
    for claim in spec.claims:
        if claim.get("check") is None:
            continue
        cells = [c for cmp in expand(spec, claim) for c in (cmp.a, cmp.b)]
        if cells and all(r in keep for r, _ in cells):
            out.append(claim)
    return out


def frame_of(cells: pd.DataFrame, table: str, reading: str, seed: int | None = None) -> pd.DataFrame:
    """Rows x columns of one table under one reading: one seed's values, or the mean over seeds."""
    sel = cells[(cells.table == table) & (cells.reading == reading)]
    if seed is not None:
        sel = sel[sel.seed == seed]
    return sel.pivot_table(index="row", columns="column", values="value", aggfunc="mean", dropna=False)


def combine_seeds(statuses: Sequence[str]) -> str:
    """Seed replicates' verdicts -> one: held if held at every seed, not held if not held at
    every seed, not evaluable if evaluable at none, otherwise inconclusive (module docstring)."""
    if not statuses or all(s == NOT_EVALUABLE for s in statuses):
        return NOT_EVALUABLE
    if all(s == HELD for s in statuses):
        return HELD
    if all(s == NOT_HELD for s in statuses):
        return NOT_HELD
    return INCONCLUSIVE


def seed_verdict(table_id: str, claim: dict, frame: pd.DataFrame,
                 data: Mapping[tuple[str, str], CellData] | None) -> dict:
    """One claim at one seed: the tables' test on the seed's cells (`cells.claim_verdict`), or
    the point comparison where the seed's jobs saved no per-image data."""
    spec = table_spec(table_id)
    if data is None:
        return {**evaluate_claim(spec, claim, frame), "comparisons": [], "test": "point values"}
    return {**claim_verdict(spec, claim, data), "test": "interval"}


def reading_verdict(table_id: str, claim: dict, per_seed: Mapping[int, dict]) -> dict:
    """The verdict on one claim under one reading from its per-seed verdicts (`seed_verdict`):
    the combined status, each seed's, and the first seed's detail (its differences and intervals)."""
    seeds = sorted(per_seed)
    statuses = [per_seed[s]["status"] for s in seeds]
    return {"status": combine_seeds(statuses), "n_seeds": len(seeds),
            "held_seeds": sum(s == HELD for s in statuses),
            "seed_status": {str(s): per_seed[s]["status"] for s in seeds},
            "first_seed": seeds[0], "detail": per_seed[seeds[0]]["detail"],
            "seeds": {str(s): per_seed[s] for s in seeds}}


def evaluate_study(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]],
                   data: SeedCells | None = None) -> list[dict]:
    """Every study claim of every table under every reading that applies to it:
    [{table, text, by_reading: {reading: verdict}, holds_under: [reading, ...]}].
    `data` gives each (table, reading, seed)'s cells for the tests; without it (or where it
    has None) that seed is judged on point values."""
    data = data or {}
    out = []
    for table, table_rows in rows.items():
        for claim in study_claims(table, table_rows):
            by_reading = {}
            for r in readings:
                if table not in r.tables:
                    continue
                seeds = sorted(int(s) for s in cells[(cells.table == table) & (cells.reading == r.name)].seed.unique())
                if not seeds:
                    continue
                per_seed = {s: seed_verdict(table, claim, frame_of(cells, table, r.name, s),
                                            data.get((table, r.name, s))) for s in seeds}
                by_reading[r.name] = reading_verdict(table, claim, per_seed)
            out.append({"table": table, "text": claim["text"], "by_reading": by_reading,
                        "holds_under": [r for r, v in by_reading.items() if v["status"] == HELD],
                        "inconclusive_under": [r for r, v in by_reading.items() if v["status"] == INCONCLUSIVE]})
    return out


def summarize_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (table, row, column, reading): mean, standard deviation across seeds (ddof 1; NaN
    with one seed), min, max, the number of seeds, and with one seed its 95% interval (low,
    high; NaN with more: their spread is the sd)."""
    cells = cells.reindex(columns=CELL_COLUMNS)
    g = cells.groupby(["table", "row", "column", "reading"], sort=False)
    out = g.value.agg(["mean", "std", "min", "max", "count"])
    bounds = g[["low", "high"]].first()
    out = out.join(bounds).reset_index().rename(columns={"std": "sd", "count": "n_seeds"})
    several = out.n_seeds > 1
    out.loc[several, ["low", "high"]] = np.nan
    return out


def _cell_text(rec: Any, column: Column) -> str:
    """2+ seeds: "mean ± sd sd"; one seed: its value with its 95% interval (the tables' format)."""
    if np.isnan(rec.mean):
        return "-"
    if rec.n_seeds > 1:
        return f"{column.fmt(rec.mean)} ± {column.fmt(rec.sd)} sd"
    return column.fmt(rec.mean) + _interval_text(rec.mean, column, [rec.low, rec.high], "md")


def _status_text(v: dict | None) -> str:
    if v is None:
        return "n/a"
    return f"{v['status']} (" + ", ".join(f"s{s}: {st}" for s, st in v["seed_status"].items()) + ")"


def cell_tables(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]]
                ) -> dict[str, pd.DataFrame]:
    """Per table: index "row: column", one column per reading, text as `_cell_text`."""
    summary = summarize_cells(cells)
    names = [r.name for r in readings]
    out = {}
    for table, table_rows in rows.items():
        spec = table_spec(table)
        s = summary[summary.table == table]
        index = [f"{row}: {c.name}" for row in table_rows for c in spec.columns]
        grid = pd.DataFrame("n/a", index=index, columns=names)
        for rec in s.itertuples():
            grid.at[f"{rec.row}: {rec.column}", rec.reading] = _cell_text(rec, spec.column(rec.column))
        out[table] = grid
    return out


def _md_table(frame: pd.DataFrame, index_name: str) -> str:
    head = "| " + " | ".join([md_escape(index_name), *(md_escape(c) for c in frame.columns)]) + " |"
    rule = "|" + "|".join([":---", *("---:" for _ in frame.columns)]) + "|"
    body = ["| " + " | ".join([md_escape(i), *(md_escape(v) for v in frame.loc[i])]) + " |" for i in frame.index]
    return "\n".join([head, rule, *body])


def _tex_table(frame: pd.DataFrame, index_name: str, caption: str) -> str:
    cols = "l" + "r" * len(frame.columns)
    lines = [r"\begin{table}[t]", r"\centering\small", f"\\caption{{{tex_escape(caption)}}}",
             f"\\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join([tex_escape(index_name), *(tex_escape(c) for c in frame.columns)]) + r" \\", r"\midrule"]
    lines += [" & ".join([tex_escape(i), *(tex_escape(v) for v in frame.loc[i])]) + r" \\" for i in frame.index]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines)


def claims_frame(claims: list[dict], readings: Sequence[Reading]) -> pd.DataFrame:
    names = [r.name for r in readings]
    return pd.DataFrame([[_status_text(c["by_reading"].get(n)) for n in names] for c in claims],
                        index=[f"Table {c['table']}: {c['text']}" for c in claims], columns=names)


def _json_safe(x: Any) -> Any:
    """NaN / inf -> None, numpy scalars -> Python (JSON has no NaN; a degenerate interval has one)."""
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


CELLS_NOTE = ("cells: mean ± sd across seeds (marked sd) where a reading has 2+ seeds, else the one seed's value "
              "± the half-width of its 95% interval, or [low, high] when the interval is not symmetric")
VERDICTS_NOTE = ("verdicts: at each seed the tables' test of the claim on that seed's cells (95% interval of the "
                 "difference; paired over images where the rows score the same images, else unpaired): held / not "
                 "held when it excludes 0, inconclusive otherwise; per reading: held if held at every seed, not held "
                 "if not held at every seed, otherwise inconclusive (sN: the verdict at seed N)")


def render_study(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]],
                 provenance: dict[str, Any], caption: str, data: SeedCells | None = None) -> dict[str, str]:
    """The texts of readings.{md,tex,csv,json} (nothing is written here). `data`: each
    (table, reading, seed)'s cells for the claim tests (see `evaluate_study`)."""
    if cells.empty:
        raise UserError("the readings study has no results to report")
    claims = evaluate_study(cells, readings, rows, data)
    grids = cell_tables(cells, readings, rows)
    verdicts = claims_frame(claims, readings)
    defs = [f"{r.name}: {', '.join(r.overrides) or 'the spec as written'} (tables {', '.join(r.tables)})"
            + (f": {r.why}" if r.why else "") for r in readings]
    md = [f"## The readings study: {md_escape(caption)}", "",
          md_escape(f"Profile {provenance['profile']}; seeds {provenance['seeds']}; {CELLS_NOTE}; {VERDICTS_NOTE}. "
                    f"Wall time of every job behind it, each once: {provenance['wall_time_s']} s; commit "
                    f"{provenance['git_commit']}."), "", "Readings:", ""]
    md += [f"- {md_escape(d)}" for d in defs]
    md += ["", "### For each paper claim, the readings under which it holds", ""]
    md += [f"- Table {c['table']}: {md_escape(c['text'])}: "
           + (md_escape(", ".join(c["holds_under"])) if c["holds_under"] else "none")
           + (md_escape(f" (inconclusive under {', '.join(c['inconclusive_under'])})")
              if c["inconclusive_under"] else "") for c in claims]
    md += ["", "### Verdicts per reading", "", _md_table(verdicts, "claim")]
    md += ["", "### The tests at each reading's first seed (difference a - b, its 95% interval, p)", ""]
    md += [f"- Table {c['table']}: {md_escape(c['text'])}; {md_escape(name)}, seed {v['first_seed']}: "
           f"**{v['seeds'][str(v['first_seed'])]['status']}**; over seeds {md_escape(_status_text(v))}. "
           f"{md_escape(v['detail'])}"
           for c in claims for name, v in c["by_reading"].items()]
    for table, grid in grids.items():
        md += ["", f"### Table {table} cells", "", _md_table(grid, "row: column")]
    tex = [_tex_table(verdicts, "claim", f"Readings study ({provenance['profile']} profile): the paper's claims "
                                         f"under each reading; {VERDICTS_NOTE}. " + " ".join(defs))]
    tex += [_tex_table(g, "row: column", f"Readings study: Table {t}'s cells; {CELLS_NOTE}; seeds "
                                         f"{provenance['seeds']}.") for t, g in grids.items()]
    tests = [rf"  \item Table {c['table']}: {tex_escape(c['text'])}; {tex_escape(name)}, seed {v['first_seed']}: "
             rf"\textsc{{{v['seeds'][str(v['first_seed'])]['status']}}}; over seeds {tex_escape(_status_text(v))}. "
             rf"{{\footnotesize {tex_escape(v['detail'])}}}" for c in claims for name, v in c["by_reading"].items()]
    if tests:
        tex.append("\\paragraph{The tests at each reading's first seed.}\n\\begin{itemize}\n" + "\n".join(tests)
                   + "\n\\end{itemize}")
    summary = summarize_cells(cells)
    doc = {"study": "readings", "title": caption, "readings": [
        {"name": r.name, "overrides": list(r.overrides), "why": r.why, "tables": list(r.tables),
         "seeds": list(r.seeds)} for r in readings],
        "cells": json.loads(summary.to_json(orient="records")), "verdicts": VERDICTS_NOTE,
        "claims": claims, "provenance": provenance}
    return {"md": "\n".join(md) + "\n", "tex": "\n\n".join(tex) + "\n",
            "csv": cells.reindex(columns=CELL_COLUMNS).to_csv(index=False, float_format="%.10g"),
            "json": json.dumps(_json_safe(doc), indent=2, allow_nan=False, default=str) + "\n"}

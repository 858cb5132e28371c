"""The readings study's report: Table 1's and Table 2's cells under each named reading of the
paper, seed replicates, and for every paper claim the readings under which it holds.

Pure functions of the numbers (repro.table's `readings` command collects them from the job
store): a long frame of cells (table, reading, seed, row, column, value) in, the texts of
tables/readings.{md,tex,csv,json} out. The verdict on a claim under one reading is made in
one place, `claim_verdict`: today the point comparison of `repro.report.claims` on the
seed-mean cells (with how many seeds agree); the interval-based three-valued verdict of the
uncertainty work replaces its body, nothing else.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from repro.errors import UserError
from repro.report.claims import HELD, evaluate_claims, expand
from repro.report.escape import md_escape, tex_escape
from repro.report.paper import table_spec

CELL_COLUMNS = ["table", "reading", "seed", "row", "column", "value"]


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


def claim_verdict(table_id: str, claim: dict, per_seed: dict[int, pd.DataFrame]) -> dict:
    """The verdict on one claim under one reading, from that reading's per-seed frames.

    The one place a verdict is made. Now: `repro.report.claims` on the seed-mean frame
    (status), and the number of seeds on whose own frame the claim holds (a claim that holds
    on the mean but not on every seed is fragile). The interval-based verdict (held / not held
    / inconclusive from per-cell intervals) replaces this body.
    """
    mean = sum(per_seed.values()) / len(per_seed)
    on_mean = evaluate_claims(table_id, mean, [claim])[0]
    held_seeds = sum(evaluate_claims(table_id, f, [claim])[0]["status"] == HELD for f in per_seed.values())
    return {"status": on_mean["status"], "held_seeds": held_seeds, "n_seeds": len(per_seed),
            "detail": on_mean["detail"]}


def evaluate_study(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]]) -> list[dict]:
    """Every study claim of every table under every reading that applies to it:
    [{table, text, by_reading: {reading: verdict}, holds_under: [reading, ...]}]."""
    out = []
    for table, table_rows in rows.items():
        for claim in study_claims(table, table_rows):
            by_reading = {}
            for r in readings:
                if table not in r.tables:
                    continue
                seeds = sorted(cells[(cells.table == table) & (cells.reading == r.name)].seed.unique())
                if not seeds:
                    continue
                by_reading[r.name] = claim_verdict(table, claim, {s: frame_of(cells, table, r.name, s) for s in seeds})
            out.append({"table": table, "text": claim["text"], "by_reading": by_reading,
                        "holds_under": [r for r, v in by_reading.items() if v["status"] == HELD]})
    return out


def summarize_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Per (table, row, column, reading): mean, standard deviation across seeds (ddof 1; NaN
    with one seed), min, max and the number of seeds."""
    g = cells.groupby(["table", "row", "column", "reading"], sort=False).value
    out = g.agg(["mean", "std", "min", "max", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n_seeds"})


def _cell_text(mean: float, sd: float, fmt: str) -> str:
    if np.isnan(mean):
        return "-"
    return format(mean, fmt) + ("" if np.isnan(sd) else f" ± {format(sd, fmt)}")


def _status_text(v: dict | None) -> str:
    if v is None:
        return "n/a"
    return f"{v['status']} ({v['held_seeds']}/{v['n_seeds']} seeds)"


def cell_tables(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]]
                ) -> dict[str, pd.DataFrame]:
    """Per table: index "row: column", one column per reading, text "mean ± sd"."""
    summary = summarize_cells(cells)
    names = [r.name for r in readings]
    out = {}
    for table, table_rows in rows.items():
        spec = table_spec(table)
        s = summary[summary.table == table]
        index = [f"{row}: {c.name}" for row in table_rows for c in spec.columns]
        grid = pd.DataFrame("n/a", index=index, columns=names)
        for rec in s.itertuples():
            grid.at[f"{rec.row}: {rec.column}", rec.reading] = _cell_text(rec.mean, rec.sd,
                                                                          spec.column(rec.column).format)
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


def render_study(cells: pd.DataFrame, readings: Sequence[Reading], rows: dict[str, list[str]],
                 provenance: dict[str, Any], caption: str) -> dict[str, str]:
    """The texts of readings.{md,tex,csv,json} (nothing is written here)."""
    if cells.empty:
        raise UserError("the readings study has no results to report")
    claims = evaluate_study(cells, readings, rows)
    grids = cell_tables(cells, readings, rows)
    verdicts = claims_frame(claims, readings)
    defs = [f"{r.name}: {', '.join(r.overrides) or 'the spec as written'} (tables {', '.join(r.tables)})"
            + (f": {r.why}" if r.why else "") for r in readings]
    md = [f"## The readings study: {md_escape(caption)}", "",
          md_escape(f"Profile {provenance['profile']}; seeds {provenance['seeds']}; cells: mean ± sd across seeds; "
                    f"verdicts on the seed-mean cells (k/n: seeds on which the claim holds on its own). "
                    f"Wall time of every job behind it, each once: {provenance['wall_time_s']} s; commit "
                    f"{provenance['git_commit']}."), "", "Readings:", ""]
    md += [f"- {md_escape(d)}" for d in defs]
    md += ["", "### For each paper claim, the readings under which it holds", ""]
    md += [f"- Table {c['table']}: {md_escape(c['text'])}: "
           + (md_escape(", ".join(c["holds_under"])) if c["holds_under"] else "none") for c in claims]
    md += ["", "### Verdicts per reading", "", _md_table(verdicts, "claim")]
    for table, grid in grids.items():
        md += ["", f"### Table {table} cells (mean ± sd across seeds)", "", _md_table(grid, "row: column")]
    tex = [_tex_table(verdicts, "claim", f"Readings study ({provenance['profile']} profile): the paper's claims "
                                         f"under each reading. " + " ".join(defs))]
    tex += [_tex_table(g, "row: column", f"Readings study: Table {t}'s cells, mean ± sd across seeds "
                                         f"{provenance['seeds']}.") for t, g in grids.items()]
    summary = summarize_cells(cells)
    doc = {"study": "readings", "title": caption, "readings": [
        {"name": r.name, "overrides": list(r.overrides), "why": r.why, "tables": list(r.tables)} for r in readings],
        "cells": json.loads(summary.to_json(orient="records")),
        "claims": claims, "provenance": provenance}
    return {"md": "\n".join(md) + "\n", "tex": "\n\n".join(tex) + "\n",
            "csv": cells.reindex(columns=CELL_COLUMNS).to_csv(index=False, float_format="%.10g"),
            "json": json.dumps(doc, indent=2, allow_nan=False, default=str) + "\n"}

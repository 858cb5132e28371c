"""The text of one rendered table in its four formats: markdown, LaTeX (booktabs), long-form
CSV and JSON, from one `_View` that repro.report.render.render_table assembles.

Layout (the same in every format): rows in the paper's order, then rows only we have; for
each metric column our number and the paper's (md: "ours (paper)" in one cell; tex: two
sub-columns). The best of OUR numbers per column is bold (ties on the printed precision:
all of them), read from the metric's direction (arrows in the headers). Rows the paper
calls not comparable are never bold. Below the table: the paper's claims with their verdicts.

Intervals: our number with its 95% interval, md "0.412 ± 0.021" (the half-width, or
"0.412 [0.40, 0.43]" when the interval is not symmetric about it: bootstrap intervals of
FID lean high), tex the same with the interval in small type, csv/json separate `low` /
`high` fields. Reference rows (calibration: real vs real, degraded real images) are
shown in italics below the rows, never bold, and no claim reads them.

Pure functions of the view (no I/O): render_table formats all four before writing any.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from repro.report.escape import md_escape, tex_escape
from repro.report.paper import Column, TableSpec, paper_table
from repro.report.provenance import row_provenance, table_provenance

CAPTION_FIELDS = (
    ("profile", "profile"),
    ("dataset", "dataset"),
    ("n_samples", "samples"),
    ("feature_extractor", "feature extractor"),
    ("git_commit", "commit"),
)
ARROW = {"md": {"lower_better": "↓", "higher_better": "↑"},
         "tex": {"lower_better": r"$\downarrow$", "higher_better": r"$\uparrow$"}}
CITED_MARK = {"md": "†", "tex": r"\textsuperscript{\dag}"}
CITED_TEXT = "cited, not reproduced here"
MISSING = {"md": "-", "tex": "--"}
# A symmetric interval prints as "value ± half-width"; beyond this asymmetry, as "value [lo, hi]".
SYMMETRY_TOLERANCE = 0.2


def _heading(spec: TableSpec) -> str:
    m = re.fullmatch(r"table(\d+)", spec.id)
    return f"Table {m.group(1)}" if m else spec.id


def _summarize(provenance: dict, rows: Sequence[str], key: str) -> str:
    """One provenance field for the caption: its value, or its distinct values when rows differ."""
    values = [row_provenance(provenance, r)[key] for r in rows] or [provenance.get(key)]
    distinct = list(dict.fromkeys(str(v) for v in values))
    return distinct[0] if len(distinct) == 1 else " / ".join(distinct) + " (per row)"


def _caption(spec: TableSpec, ours: pd.DataFrame, provenance: dict, notes: Sequence[str],
             fmt: str, cited: Sequence[str], interval_note: str = "", reference: Sequence[str] = ()
             ) -> tuple[str, str]:
    """(title, body) of the caption in `fmt` ("md" or "tex"): escaped text plus markup."""
    esc = md_escape if fmt == "md" else tex_escape
    title = esc(spec.title)
    facts = "; ".join(f"{name} {_summarize(provenance, list(ours.index), key)}" for key, name in CAPTION_FIELDS)
    cell = "ours (paper)" if fmt == "md" else "ours and the paper's numbers side by side"
    if interval_note:
        cell = ("ours ± half-width of its 95% interval, or ours [low, high] (paper)" if fmt == "md"
                else "ours with its 95% interval in small type, and the paper's numbers side by side")
    down, up = ARROW[fmt]["lower_better"], ARROW[fmt]["higher_better"]
    bold = "**Bold**" if fmt == "md" else r"\textbf{Bold}"
    parts = [
        esc(f"{spec.source} of the paper; cells: {cell}."),
        esc(f"Ours: {facts}.") if ours.size else esc("No results of ours yet."),
        f"{bold}: best of our numbers per column ({down} lower / {up} higher is better).",
    ]
    if any(r in spec.not_comparable for r in ours.index):
        parts.append(esc("Rows the paper marks not comparable are never bold."))
    if cited:
        parts.append(f"{CITED_MARK[fmt]} {esc(CITED_TEXT)}.")
    if interval_note:
        parts.append(esc(interval_note))
    if reference:
        parts.append(esc(f"Reference rows ({', '.join(reference)}) calibrate the metric: real images, or real "
                         f"test images degraded by a known amount, scored through the same evaluation; never "
                         f"bold, not read by any claim."))
    parts += [esc(s) for s in (*spec.legend, *spec.notes, *notes)]
    return title, " ".join(parts)


def _cell_text(value: float, column: Column, bold: bool, style: str, interval: Sequence[float] | None = None) -> str:
    if np.isnan(value):
        return MISSING[style]
    text = column.fmt(value)
    if bold:
        text = f"**{text}**" if style == "md" else rf"\textbf{{{text}}}"
    return text + _interval_text(value, column, interval, style)


def _interval_text(value: float, column: Column, interval: Sequence[float] | None, style: str) -> str:
    """" ± h" (symmetric) or " [lo, hi]" at the column's precision; tex in small type."""
    if interval is None or not all(np.isfinite(interval)):
        return ""
    lo, hi = float(interval[0]), float(interval[1])
    fmt = column.format
    below, above = value - lo, hi - value
    half = (hi - lo) / 2
    if min(below, above) >= 0 and abs(below - above) <= SYMMETRY_TOLERANCE * max(half, 1e-12):
        body = (f"± {format(half, fmt)}" if style == "md" else rf"$\pm$ {format(half, fmt)}")
    else:
        body = f"[{format(lo, fmt)}, {format(hi, fmt)}]"
    return f" {body}" if style == "md" else rf" {{\scriptsize {body}}}"


def _row_label(spec: TableSpec, row: str, style: str, cited: Sequence[str], reference: Sequence[str] = ()) -> str:
    if style == "tex":
        label = spec.tex.get(row, tex_escape(row))
        label = rf"\textit{{{label}}}" if row in reference else label
    else:
        label = md_escape(row)
        label = f"*{label}*" if row in reference else label
    return label + (CITED_MARK[style] if row in cited else "")


def _claims_md(claims: list[dict]) -> str:
    lines = [f"- **{c['status']}**: {md_escape(c['text'])}. {md_escape(c['detail'])}".rstrip() for c in claims]
    return "\n".join(lines) if lines else "(the paper makes no claim about this table)"


def _claims_tex(spec: TableSpec, claims: list[dict]) -> str:
    if not claims:
        return ""
    items = "\n".join(
        rf"  \item \textsc{{{c['status']}}}: {tex_escape(c['text'])}. {{\footnotesize {tex_escape(c['detail'])}}}"
        for c in claims
    )
    return (rf"\paragraph{{Claims of Table~\ref{{tab:{spec.id}}}.}}" "\n"
            rf"\begin{{itemize}}" "\n" f"{items}\n" rf"\end{{itemize}}" "\n")


@dataclass(frozen=True)
class _View:
    """Everything one rendering needs: both frames aligned on the rendered row order."""

    spec: TableSpec
    ours: pd.DataFrame  # our rows only (as given)
    order: list[str]
    best: set[tuple[str, str]]
    provenance: dict
    notes: list[str]
    cited: list[str]
    claims: list[dict]
    intervals: dict[str, dict[str, list[float] | None]]
    interval_note: str
    reference: list[str]
    learning: list[dict]   # repro.report.learning: each row's last doubling of training

    def interval(self, row: str, col: str) -> list[float] | None:
        return (self.intervals.get(row) or {}).get(col)

    @functools.cached_property
    def ours_all(self) -> pd.DataFrame:  # NaN for rows only the paper has
        return self.ours.reindex(self.order)

    @functools.cached_property
    def paper_all(self) -> pd.DataFrame:  # NaN for rows only we have
        return paper_table(self.spec.id).reindex(self.order)


def _markdown(v: _View) -> str:
    spec = v.spec
    header = [f"{c.label} {ARROW['md'][c.direction]}" for c in spec.columns]
    body = [
        [_row_label(spec, row, "md", v.cited, v.reference)] + [
            f"{_cell_text(v.ours_all.at[row, c.name], c, (row, c.name) in v.best, 'md', v.interval(row, c.name))}"
            f" ({_cell_text(v.paper_all.at[row, c.name], c, False, 'md')})"
            for c in spec.columns
        ]
        for row in v.order
    ]
    table = pd.DataFrame(body, columns=["Model", *header]).to_markdown(
        index=False, disable_numparse=True, colalign=("left",) + ("right",) * len(spec.columns))
    title, caption = _caption(spec, v.ours, v.provenance, v.notes, "md", v.cited, v.interval_note, v.reference)
    return (f"## {_heading(spec)}: {title}\n\n{caption}\n\n{table}\n\n"
            f"### Claims ({_heading(spec)})\n\n{_claims_md(v.claims)}\n")


def _latex(v: _View) -> str:
    spec = v.spec
    columns = [("Model", "")]
    for c in spec.columns:
        head = f"{tex_escape(c.label)} {ARROW['tex'][c.direction]}"
        columns += [(head, "Ours"), (head, "Paper")]
    body = []
    for row in v.order:
        cells = [_row_label(spec, row, "tex", v.cited, v.reference)]
        for c in spec.columns:
            cells += [_cell_text(v.ours_all.at[row, c.name], c, (row, c.name) in v.best, "tex", v.interval(row, c.name)),
                      _cell_text(v.paper_all.at[row, c.name], c, False, "tex")]
        body.append(cells)
    title, caption = _caption(spec, v.ours, v.provenance, v.notes, "tex", v.cited, v.interval_note, v.reference)
    tex = pd.DataFrame(body, columns=pd.MultiIndex.from_tuples(columns)).to_latex(
        index=False, escape=False, multicolumn=True, multicolumn_format="c",
        column_format="l" + "rr" * len(spec.columns), position="t",
        caption=(f"{title}. {caption}", title), label=f"tab:{spec.id}",
    )
    lines = tex.splitlines()
    # booktabs groups the Ours/Paper pair under each metric with a trimmed rule, which
    # pandas does not emit; the first header line is the one with the \multicolumn spans.
    span = next(i for i, line in enumerate(lines) if line.startswith("Model &"))
    lines.insert(span + 1, " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(len(spec.columns))))
    # Captions above tables (the ML-venue convention) need a gap that article.cls omits.
    label = next(i for i, line in enumerate(lines) if line.startswith(r"\label{"))
    lines.insert(label + 1, r"\smallskip")
    # Two sub-columns per metric make wide tables; shrink them to fit a one-column page
    # (booktabs is the only package a document needs, so no \resizebox).
    start = next(i for i, line in enumerate(lines) if line.startswith(r"\begin{table}"))
    size, sep = (r"\small", "3pt") if len(spec.columns) < 5 else (r"\footnotesize", "2.5pt")
    lines[start + 1:start + 1] = [r"\centering", size, rf"\setlength{{\tabcolsep}}{{{sep}}}"]
    header = f"% {_heading(spec)} of repro (generated by repro.report.render; do not edit by hand)."
    return "\n".join([header, *lines]) + "\n" + _claims_tex(spec, v.claims)


def _long(v: _View) -> pd.DataFrame:
    """Tidy form: one line per (row, column), raw numbers (not rounded)."""
    records = [
        {"row": row, "column": c.name, "ours": v.ours_all.at[row, c.name],
         "low": (v.interval(row, c.name) or [np.nan, np.nan])[0],
         "high": (v.interval(row, c.name) or [np.nan, np.nan])[1],
         "paper": v.paper_all.at[row, c.name], "direction": c.direction, "reference": row in v.reference}
        for row in v.order
        for c in v.spec.columns
    ]
    return pd.DataFrame.from_records(records, columns=["row", "column", "ours", "low", "high", "paper", "direction",
                                                       "reference"])


def _number(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def _json(v: _View) -> dict:
    spec = v.spec
    rows = [
        {
            "row": row,
            "in_paper": row in spec.rows,
            "cited": row in v.cited,
            "not_comparable": row in spec.not_comparable,
            "reference": row in v.reference,
            "cells": {
                c.name: {"ours": _number(v.ours_all.at[row, c.name]),
                         "low": _number((v.interval(row, c.name) or [np.nan, np.nan])[0]),
                         "high": _number((v.interval(row, c.name) or [np.nan, np.nan])[1]),
                         "paper": _number(v.paper_all.at[row, c.name]),
                         "best": (row, c.name) in v.best}
                for c in spec.columns
            },
            "provenance": row_provenance(v.provenance, row) if row in v.ours.index else None,
        }
        for row in v.order
    ]
    return {
        "table": spec.id,
        "title": spec.title,
        "source": spec.source,
        "columns": spec.column_names,
        "column_info": {c.name: {"label": c.label, "metric": c.metric, "direction": c.direction,
                                 "format": c.format} for c in spec.columns},
        "rows": rows,
        "provenance": table_provenance(v.provenance),
        "caption_notes": list(v.notes),
        "intervals": v.interval_note,
        "claims": v.claims,
        "learning": v.learning,
    }

"""Render one table of results beside the paper's numbers: tableN.{md,tex,csv,json}.

Layout (the same in every format): rows in the paper's order, then rows only we have; for
each metric column our number and the paper's (md: "ours (paper)" in one cell; tex: two
sub-columns). The best of OUR numbers per column is bold (ties on the printed precision:
all of them), read from the metric's direction (arrows in the headers). Rows the paper
calls not comparable are never bold. Below the table: the paper's claims, each held / not
held / not evaluable on our numbers (repro.report.claims); given the cells' per-image data
or bootstrap replicates (repro.report.cells), each claim is a test instead: held / not
held / inconclusive, with the difference, its interval and p-value.

Intervals: our number with its 95% interval, md "0.412 ± 0.021" (the half-width, or
"0.412 [0.40, 0.43]" when the interval is not symmetric about it: bootstrap intervals of
FID lean high), tex the same with the interval in small type, csv/json separate `low` /
`high` fields. Reference rows (calibration: real vs real, degraded real images) are
shown in italics below the rows, never bold, and no claim reads them.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from repro.errors import UserError
from repro.io import atomic_write_text
from repro.report.cells import CellData, claim_verdict
from repro.report.claims import HELD, INCONCLUSIVE, NOT_EVALUABLE, NOT_HELD, count_statuses, evaluate_claims
from repro.report.escape import md_escape, tex_escape
from repro.report.learning import LastDoubling, learning_note, learning_records
from repro.report.paper import Column, TableSpec, paper_table, table_spec
from repro.report.provenance import row_provenance, table_provenance

# Provenance fields every row with results must carry (config key and wall time may be
# unknown, e.g. for numbers aggregated over several jobs).
REQUIRED = ("profile", "dataset", "n_samples", "feature_extractor", "git_commit")
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


def _conform(spec: TableSpec, ours: pd.DataFrame) -> pd.DataFrame:
    """Our results as floats with the paper's columns in the paper's order (NaN where absent)."""
    if ours.index.has_duplicates:
        raise UserError(f"{spec.id}: duplicated result rows {sorted(set(ours.index[ours.index.duplicated()]))}")
    unknown = [c for c in ours.columns if c not in spec.column_names]
    if unknown:
        raise UserError(f"{spec.id}: result columns {unknown} are not columns of the table {spec.column_names}")
    try:
        frame = ours.reindex(columns=spec.column_names).astype(float)
    except (TypeError, ValueError) as err:
        raise UserError(f"{spec.id}: result values must be numbers ({err})") from None
    frame.index = frame.index.map(str)
    return frame


def _row_order(spec: TableSpec, ours: pd.DataFrame) -> list[str]:
    return spec.row_names + [r for r in ours.index if r not in spec.rows]


def best_cells(spec: TableSpec, ours: pd.DataFrame, reference: Sequence[str] = ()) -> set[tuple[str, str]]:
    """(row, column) of the best of our numbers per column; ties compared at the printed
    precision, since a reader sees two equal printed numbers as a tie. Reference rows
    (calibration) are never best."""
    best: set[tuple[str, str]] = set()
    rows = [r for r in ours.index if r not in spec.not_comparable and r not in reference]
    for col in spec.columns:
        shown = ours.loc[rows, col.name].dropna().map(lambda v: float(col.fmt(v)))
        if len(shown) < 2:  # one number is not "best" of anything
            continue
        target = shown.min() if col.lower_is_better else shown.max()
        best.update((r, col.name) for r in shown.index[shown == target])
    return best


def _check_provenance(spec: TableSpec, ours: pd.DataFrame, provenance: dict) -> None:
    for row in ours.index:
        merged = row_provenance(provenance, row)
        absent = [k for k in REQUIRED if merged.get(k) is None]
        if absent:
            raise ValueError(f"{spec.id}: provenance of row {row!r} lacks {absent}")


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


def render_table(
    table_id: int | str,
    ours: pd.DataFrame,
    provenance: dict,
    out_dir: Path,
    caption_notes: Sequence[str] = (),
    cited_rows: Sequence[str] = (),
    intervals: dict[str, dict[str, list[float] | None]] | None = None,
    cells: dict[tuple[str, str], CellData] | None = None,
    interval_note: str = "",
    reference_rows: Sequence[str] = (),
    learning: Sequence[LastDoubling] = (),
) -> dict[str, Path]:
    """Write `{stem}.md`, `.tex`, `.csv`, `.json` of one table into `out_dir` (atomically).

    ours: rows = model ids as in the paper (plus any of our own), columns = the table's
        metric columns; NaN for numbers we do not have.
    provenance: table-wide fields of repro.report.provenance.FIELDS plus optional
        `rows: {row: {field: value}}` overrides (see make_provenance).
    cited_rows: paper-only rows that are other papers' numbers, marked "cited, not
        reproduced here".
    intervals: {row: {column: [low, high] or None}}, our cells' 95% intervals.
    cells: {(row, column): CellData}; given, each claim is a test with a three-valued verdict
        (repro.report.cells.claim_verdict) instead of a comparison of point values.
    interval_note: how the intervals were computed (method, resamples, images), for the caption.
    reference_rows: calibration rows of ours: never bold, excluded from the claims.
    learning: each row's metric over its last doubling of training (repro.report.learning,
        from the efficiency curve): a caption sentence, learned or still learning, and `learning` in json.
    Returns {"md": path, "tex": path, "csv": path, "json": path}.
    """
    spec = table_spec(table_id)
    ours = _conform(spec, ours)
    _check_provenance(spec, ours, provenance)
    unknown = [r for r in cited_rows if r not in spec.rows]
    if unknown:
        raise UserError(f"{spec.id}: cited rows {unknown} are not rows of the paper's table")
    reference = [r for r in reference_rows if r in ours.index]
    claim_rows = ours.drop(index=reference)
    if cells is not None:
        cells = {k: c for k, c in cells.items() if k[0] not in reference}
        claims = [claim_verdict(spec, c, cells) for c in spec.claims]
    else:
        claims = evaluate_claims(spec.id, claim_rows)
    view = _View(
        spec=spec,
        ours=ours,
        order=_row_order(spec, claim_rows) + reference,   # reference rows last
        best=best_cells(spec, ours, reference),
        provenance=provenance,
        notes=[*caption_notes, *([learning_note(learning, spec.columns)] if learning else [])],
        cited=[r for r in cited_rows if r not in ours.index],  # a row we reproduced is not "cited"
        claims=claims,
        intervals=dict(intervals or {}),
        interval_note=interval_note,
        reference=reference,
        learning=learning_records(learning),
    )
    # Everything is formatted before the first write: a failure leaves no partial set.
    texts: dict[str, str] = {
        "md": _markdown(view),
        "tex": _latex(view),
        "csv": _long(view).to_csv(index=False, float_format="%.10g"),
        # allow_nan=False: NaN is not JSON; every missing number must already be null.
        "json": json.dumps(_json(view), indent=2, allow_nan=False, default=str) + "\n",
    }
    out_dir = Path(out_dir)
    return {ext: atomic_write_text(out_dir / f"{spec.stem}.{ext}", text) for ext, text in texts.items()}


def render_index(out_dir: Path, tables: Sequence[int | str], figures: Sequence[tuple[str, str, str]] = ()) -> Path:
    """Write `out_dir/README.md`: a claims summary (counts, links) and every table's markdown.

    Reads the rendered `{stem}.json` / `{stem}.md`; a table not rendered yet is listed as such.
    `figures`: (label, stem, title) of figures with claims of their own (Figure 6), listed
    after the tables with their `{stem}.png` shown; skipped when not rendered.
    """
    out_dir = Path(out_dir)
    summary, sections = [], []
    for table_id in tables:
        spec = table_spec(table_id)
        doc_path, md_path = out_dir / f"{spec.stem}.json", out_dir / f"{spec.stem}.md"
        if not doc_path.exists() or not md_path.exists():
            summary.append({"table": _heading(spec), "title": spec.title, HELD: "", NOT_HELD: "", INCONCLUSIVE: "",
                            NOT_EVALUABLE: "", "files": f"not rendered yet (python -m repro.table {spec.id.removeprefix('table')})"})
            continue
        counts = count_statuses(json.loads(doc_path.read_text("utf-8"))["claims"])
        links = " ".join(f"[{ext}]({spec.stem}.{ext})" for ext in ("md", "tex", "csv", "json"))
        summary.append({"table": f"[{_heading(spec)}](#{_anchor(spec)})", "title": spec.title, **counts, "files": links})
        sections.append(md_path.read_text("utf-8").rstrip("\n"))
    for label, stem, title in figures:
        doc_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
        if not doc_path.exists() or not md_path.exists():
            continue
        counts = count_statuses(json.loads(doc_path.read_text("utf-8"))["claims"])
        md = md_path.read_text("utf-8").rstrip("\n")
        anchor = _anchor_of(md.splitlines()[0].lstrip("# "))
        links = " ".join(f"[{ext}]({stem}.{ext})" for ext in ("md", "png", "pdf", "csv", "json"))
        summary.append({"table": f"[{label}](#{anchor})", "title": title, **counts, "files": links})
        sections.append(f"{md}\n\n![{label}]({stem}.png)")
    frame = pd.DataFrame(summary, columns=["table", "title", HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUABLE, "files"])
    totals = {k: int(pd.to_numeric(frame[k], errors="coerce").fillna(0).sum())
              for k in (HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUABLE)}
    text = "\n\n".join([
        "# Results: MT-Diffusion reproduction",
        "Each table puts our numbers beside the paper's (Chen et al., ICLR 2024) and marks every "
        "claim the paper makes about it as held, not held, inconclusive or not evaluable on our numbers: "
        "a claim is a test of the difference between our cells (paired over images where the rows score the "
        "same images, else an unpaired bootstrap); held or not held when the difference's 95% interval lies on "
        "one side of zero, inconclusive when it contains zero. "
        "Regenerate with `make tables`.",
        "## Claims summary",
        frame.to_markdown(index=False, disable_numparse=True),
        f"Total: {totals[HELD]} held, {totals[NOT_HELD]} not held, {totals[INCONCLUSIVE]} inconclusive, "
        f"{totals[NOT_EVALUABLE]} not evaluable.",
        "## Verdicts with their confidence",
        _verdict_list(out_dir, tables, figures),
        *sections,
    ]) + "\n"
    return atomic_write_text(out_dir / "README.md", text)


def _verdict_list(out_dir: Path, tables: Sequence[int | str], figures: Sequence[tuple[str, str, str]]) -> str:
    """Every claim's verdict with the tightest statement of its confidence: per comparison the
    difference, its 95% interval and p-value (from the rendered JSON)."""
    lines = []
    stems = [(_heading(table_spec(t)), table_spec(t).stem) for t in tables] + [(label, stem) for label, stem, _ in figures]
    for label, stem in stems:
        doc_path = out_dir / f"{stem}.json"
        if not doc_path.exists():
            continue
        for c in json.loads(doc_path.read_text("utf-8"))["claims"]:
            tests = [x for x in c.get("comparisons", []) if "p_value" in x]
            conf = ""
            if tests:
                worst = max(tests, key=lambda x: x["p_value"])
                conf = (f" ({len(tests)} comparison{'s' if len(tests) > 1 else ''}; largest p = "
                        f"{worst['p_value']:.3g}: {worst['a'][0]}/{worst['a'][1]} vs {worst['b'][0]}/{worst['b'][1]}, "
                        f"diff {worst['difference']:+.4g} [{worst['low']:+.4g}, {worst['high']:+.4g}])")
            lines.append(f"- {label}: **{c['status']}**: {md_escape(c['text'])}{md_escape(conf)}")
    return "\n".join(lines) or "(no claims rendered yet)"


def _anchor(spec: TableSpec) -> str:
    """GitHub's anchor of the section heading written by _markdown."""
    return _anchor_of(f"{_heading(spec)}: {spec.title}")


def _anchor_of(heading: str) -> str:
    """GitHub's anchor of a markdown heading's text."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


# ----------------------------------------------------------------------------- replacing a table's files together

STAGING = ".staging-"   # out_dir/.staging-<stem>-<pid>: a table's files while they are rendered


def table_files(out_dir: Path, stem: str) -> list[Path]:
    """Every file of table `stem` under `out_dir`: stem.{md,tex,csv,json}, metrics/stem.json,
    figures/stem_*, curves/stem_* (what one run of `python -m repro.table` writes)."""
    out_dir = Path(out_dir)
    found = [*out_dir.glob(f"{stem}.*"), *out_dir.glob(f"metrics/{stem}.json"),
             *out_dir.glob(f"figures/{stem}_*"), *out_dir.glob(f"curves/{stem}_*")]
    return sorted(p for p in found if p.is_file())


@contextlib.contextmanager
def staged(out_dir: Path, stem: str) -> Iterator[Path]:
    """A folder to render table `stem` into; on success its files replace the table's files in
    `out_dir` together (renames on one filesystem, a few milliseconds) and the table's files
    it did not write (a removed row's figure) go. A failure or a kill while rendering, the
    slow part, leaves `out_dir` with the previous complete set; the staging folder of a killed
    run is removed by the next run of that table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob(f"{STAGING}{stem}-*"):     # left by a killed run
        if old.is_dir() and not _alive(old.name.rsplit("-", 1)[-1]):
            shutil.rmtree(old, ignore_errors=True)
    stage = out_dir / f"{STAGING}{stem}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        new = {p.relative_to(stage) for p in table_files(stage, stem)}
        for rel in sorted(new):
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(stage / rel, out_dir / rel)
        for old in table_files(out_dir, stem):
            if old.relative_to(out_dir) not in new:
                old.unlink()
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True

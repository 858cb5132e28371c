"""Render one table of results beside the paper's numbers: tableN.{md,tex,csv,json}, and the
results page (README.md) over every rendered table.

render_table checks our results against the table's spec (columns, rows, provenance), picks
the best of our numbers per column and decides the paper's claims on our numbers
(repro.report.claims); given the cells' per-image data or bootstrap replicates
(repro.report.cells), each claim is a test instead: held / not held / inconclusive, with the
difference, its interval and p-value. The four formats' text is repro/report/table_formats.py's;
replacing a table's files together is repro/report/staging.py's.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from repro.errors import UserError
from repro.io import atomic_write_text
from repro.report.cells import CellData, claim_verdict
from repro.report.claims import HELD, INCONCLUSIVE, NOT_EVALUABLE, NOT_HELD, count_statuses, evaluate_claims
from repro.report.escape import md_escape
from repro.report.learning import LastDoubling, learning_note, learning_records
from repro.report.paper import TableSpec, table_spec
from repro.report.provenance import row_provenance
from repro.report.table_formats import _heading, _json, _latex, _long, _markdown, _View

# Provenance fields every row with results must carry (config key and wall time may be
# unknown, e.g. for numbers aggregated over several jobs).
REQUIRED = ("profile", "dataset", "n_samples", "feature_extractor", "git_commit")


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

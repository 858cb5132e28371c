"""Evaluate the paper's claims about a table against a results frame.

A claim is a sentence of the paper (Chen et al., ICLR 2024) plus a `check` written in the
small vocabulary documented in `benchmarks/metrics.yaml` (each table's claims are in the
`table:` block of its spec, benchmarks/<stem>.yaml):

    lt / le / gt / ge / better   row vs row, for every listed column (or every pair of rows)
    increasing / decreasing      along the listed columns, for every listed row

A check expands into atomic comparisons `a OP b` between two cells. The claim is
  - "not held"      if any comparison whose cells are both present fails (a universal
                    statement with a counterexample is false whatever else is missing);
  - "not evaluable" otherwise, if some needed row or cell is missing or NaN;
  - "held"          if every comparison could be made and holds.

A claim is plain data and `evaluate_claim(spec, claim, ours)` is a pure function of the results
frame it is given: evaluating a claim per reading of a table (one frame per reading, e.g. per
seed or per profile) is one call per frame, with the claim's `text` as the key to join on.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import pandas as pd

from repro.errors import UserError
from repro.report.paper import TableSpec, table_spec

HELD, NOT_HELD, NOT_EVALUABLE = "held", "not held", "not evaluable"
INCONCLUSIVE = "inconclusive"   # a test's interval contains no difference (repro.report.cells)

COMPARE_OPS: dict[str, tuple[Callable[[float, float], bool], str]] = {
    "lt": (operator.lt, "<"),
    "le": (operator.le, "<="),
    "gt": (operator.gt, ">"),
    "ge": (operator.ge, ">="),
}
PAIR_OPS = (*COMPARE_OPS, "better")
MONOTONE_OPS = {"increasing": "lt", "decreasing": "gt"}


@dataclass(frozen=True)
class Comparison:
    """One atomic `a OP b`: cell (a_row, a_col) against cell (b_row, b_col)."""

    group: str  # what the detail line groups it under, e.g. "MT-Diffusion vs SDEdit-"
    a: tuple[str, str]
    b: tuple[str, str]
    op: str  # a key of COMPARE_OPS
    label: str  # the column, e.g. "FID"; for monotone checks the right-hand column
    chain: bool = False  # monotone link: printed as "Mask-5 0.03 < Mask-10 0.07 < ..."


def _columns(spec: TableSpec, columns: Any, claim: str) -> list[str]:
    cols = spec.column_names if columns == "all" else list(columns or [])
    unknown = [c for c in cols if c not in spec.column_names]
    if not cols or unknown:
        raise UserError(f"claim {claim!r}: columns {unknown or cols} not among {spec.column_names}")
    return cols


def expand(spec: TableSpec, claim: dict) -> list[Comparison]:
    """Turn one claim's `check` into its atomic comparisons (validating names and ops)."""
    text, check = claim["text"], claim["check"]
    op = check.get("op")
    cols = _columns(spec, check.get("columns"), text)
    if op in PAIR_OPS:
        if "pairs" in check:
            pairs = [tuple(p) for p in check["pairs"]]
        elif "left" in check and "right" in check:
            pairs = [(check["left"], check["right"])]
        else:
            raise UserError(f"claim {text!r}: op {op} needs left/right or pairs")
        out = []
        for left, right in pairs:
            for col in cols:
                # "better" reads the direction of each column: lower_better -> "<".
                atom_op = op if op != "better" else ("lt" if spec.column(col).lower_is_better else "gt")
                out.append(Comparison(f"{left} vs {right}", (left, col), (right, col), atom_op, col))
        return out
    if op in MONOTONE_OPS:
        rows = spec.row_names if check.get("rows") == "all" else list(check.get("rows") or [])
        if not rows or len(cols) < 2:
            raise UserError(f"claim {text!r}: {op} needs rows and at least two columns")
        return [
            Comparison(row, (row, c0), (row, c1), MONOTONE_OPS[op], c1, chain=True)
            for row in rows
            for c0, c1 in zip(cols, cols[1:])
        ]
    raise UserError(f"claim {text!r}: unknown op {op!r}; use one of {[*PAIR_OPS, *MONOTONE_OPS]}")


def _cell(ours: pd.DataFrame, row: str, col: str) -> tuple[float | None, str | None]:
    """The value of a cell, or None and why it is missing."""
    if row not in ours.index:
        return None, f"row {row} absent"
    if col not in ours.columns:
        return None, f"column {col} absent"
    value = ours.at[row, col]
    if pd.isna(value):
        return None, f"{row}/{col} is NaN"
    return float(value), None


def _show(spec: TableSpec, col: str, a: float, b: float) -> tuple[str, str]:
    """Both numbers at the paper's precision, with more digits when that would hide a difference."""
    fa, fb = spec.column(col).fmt(a), spec.column(col).fmt(b)
    if fa == fb and a != b:
        fa, fb = f"{a:.6g}", f"{b:.6g}"
    return fa, fb


def evaluate_claim(spec: TableSpec, claim: dict, ours: pd.DataFrame) -> dict:
    """One claim -> {text, status, detail}; detail is one line with the numbers compared."""
    if claim.get("check") is None:
        return {"text": claim["text"], "status": NOT_EVALUABLE, "detail": claim.get("reason", "no check given")}
    groups: dict[str, str] = {}  # group -> its text so far
    last_col: dict[str, str] = {}  # chains: the column a group's text ends with
    missing: list[str] = []
    failed = total = 0
    for cmp in expand(spec, claim):
        a, why_a = _cell(ours, *cmp.a)
        b, why_b = _cell(ours, *cmp.b)
        total += 1
        if why_a or why_b:
            missing.extend(w for w in (why_a, why_b) if w and w not in missing)
            continue
        fn, sym = COMPARE_OPS[cmp.op]
        fa, fb = _show(spec, cmp.a[1], a, b)
        holds = fn(a, b)
        failed += not holds
        mark = "" if holds else " [fails]"
        text = groups.get(cmp.group)
        if cmp.chain:
            # Extend the row's chain; start a new one after a gap left by a missing cell.
            if last_col.get(cmp.group) != cmp.a[1]:
                text = (text + ", " if text else "") + f"{cmp.a[1]} {fa}"
            text += f" {sym} {cmp.b[1]} {fb}{mark}"
            last_col[cmp.group] = cmp.b[1]
        else:
            text = (text + ", " if text else "") + f"{cmp.label} {fa} {sym} {fb}{mark}"
        groups[cmp.group] = text
    compared = "; ".join(f"{g}: {text}" for g, text in groups.items())
    status = NOT_HELD if failed else NOT_EVALUABLE if missing else HELD
    head = [f"{failed} of {total} comparisons fail"] if failed else []
    head += [", ".join(missing)] if missing else []
    detail = ". ".join(head + ([compared] if compared else []))
    return {"text": claim["text"], "status": status, "detail": detail}


def evaluate_claims(
    table_id: int | str, ours: pd.DataFrame, claims: Sequence[dict] | None = None
) -> list[dict]:
    """Evaluate `claims` (default: the paper's claims of `table_id`) on the results frame `ours`.

    `ours` has one row per model (index = the paper's row ids) and one column per metric.
    Returns a list of {text, status: held | not held | not evaluable, detail}.
    """
    spec = table_spec(table_id)
    if ours.index.has_duplicates:
        raise UserError(f"{spec.id}: duplicated result rows {sorted(set(ours.index[ours.index.duplicated()]))}")
    return [evaluate_claim(spec, c, ours) for c in (spec.claims if claims is None else claims)]


def curve_claims(frame: pd.DataFrame, ours: str, baseline: str, metrics: Sequence[str] = ("top1", "top5")
                 ) -> list[dict]:
    """Figure 6's two statements (Sec. 4.2) on our accuracy curves, per metric: `ours` is above
    `baseline` at every common iteration, and the gap between them narrows with finetuning.

    `frame` is long form: series, iteration and one column per metric. Returns the same
    {text, status, detail} records as `evaluate_claims`.
    """
    a = frame[frame.series == ours].set_index("iteration")
    b = frame[frame.series == baseline].set_index("iteration")
    steps = sorted(set(a.index) & set(b.index))
    out = []
    for k in metrics:
        gap = a.loc[steps, k] - b.loc[steps, k]
        above = bool((gap > 0).all()) if steps else False
        out.append({"text": f"{ours} above {baseline} at every iteration ({k})",
                    "status": HELD if above else NOT_HELD,
                    "detail": ", ".join(f"{s}: {a.at[s, k]:.3f} vs {b.at[s, k]:.3f}" for s in steps)})
        # Narrowing is about the distance between the curves, whichever is on top: a gap of
        # -0.34 that becomes -0.35 has widened.
        narrows = bool(len(steps) > 1 and abs(gap.iloc[-1]) < abs(gap.iloc[0]))
        out.append({"text": f"the {k} gap narrows with finetuning",
                    "status": HELD if narrows else NOT_HELD,
                    "detail": f"gap {gap.iloc[0]:+.3f} at iteration {steps[0]}, {gap.iloc[-1]:+.3f} at {steps[-1]}"
                    if steps else "no common iterations"})
    return out


def count_statuses(results: Sequence[dict]) -> dict[str, int]:
    """{held: n, not held: n, inconclusive: n, not evaluable: n} of a list of claim results."""
    counts = {HELD: 0, NOT_HELD: 0, INCONCLUSIVE: 0, NOT_EVALUABLE: 0}
    for r in results:
        counts[r["status"]] += 1
    return counts

"""Has a row learned at the table's budget? The relative gain of its metric over the last doubling
of training, read off the table's efficiency curve (metric at each EMA snapshot, ending at the
table's own number; repro.plan.efficiency_plan).

Issue 11 fixes the criterion: a budget at which the baselines have learned is one where the
last doubling of training steps improves FID / LPIPS by under 10%. So for every row with
snapshots: its value at half the budget (the last snapshot at or before it) against its value
at the budget, the gain `(v_half - v) / |v_half|` for a lower-is-better metric (its negative
for higher-is-better), and "learned at this budget" when it is under `LEARNED_GAIN`, else
"still learning". A negative gain (worse after more training) counts as learned: more steps
did not help. Point values only: a sentence about the budget, not a claim test. Pure
functions of the curve frame (no I/O).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import pandas as pd

from repro.report.paper import Column

LEARNED_GAIN = 0.10                     # issue 11: under 10% over the last doubling = learned
LEARNING_METRICS = ("FID", "LPIPS")     # the metrics issue 11 judges a budget by; else every column
LEARNED, STILL_LEARNING = "learned at this budget", "still learning"


@dataclass(frozen=True)
class LastDoubling:
    """One row's metric over its last doubling of training: value at `step_half` and at `step`."""

    row: str
    column: str
    step_half: int
    step: int
    value_half: float
    value: float
    gain: float       # relative improvement, positive = better at `step`

    @property
    def learned(self) -> bool:
        return self.gain < LEARNED_GAIN


def relative_gain(value_half: float, value: float, column: Column) -> float:
    """Improvement from `value_half` to `value` relative to `value_half`, in the column's better direction."""
    if value_half == 0 or not (math.isfinite(value_half) and math.isfinite(value)):
        return float("nan")
    change = (value_half - value) if column.lower_is_better else (value - value_half)
    return change / abs(value_half)


def last_doublings(curves: pd.DataFrame, columns: Sequence[Column],
                   metrics: Sequence[str] = LEARNING_METRICS) -> list[LastDoubling]:
    """Per row of `curves` (long form: row, training_step, one column per metric, as
    tables/curves/<key>_efficiency.csv) and per judged column: its last doubling. The columns
    judged are those whose metric is in `metrics` (all columns if none is). A row without a
    point at or before half its last step, or with a missing value there, gets none."""
    judged = [c for c in columns if c.metric in metrics] or list(columns)
    out = []
    for row, curve in curves.groupby("row", sort=False):
        curve = curve.sort_values("training_step")
        step = int(curve.training_step.iloc[-1])
        before = curve[curve.training_step <= step / 2]
        if before.empty:
            continue
        half, last = before.iloc[-1], curve.iloc[-1]
        for c in judged:
            gain = relative_gain(float(half[c.name]), float(last[c.name]), c)
            if math.isfinite(gain):
                out.append(LastDoubling(str(row), c.name, int(half.training_step), step, float(half[c.name]),
                                        float(last[c.name]), gain))
    return out


def row_learned(doublings: Sequence[LastDoubling]) -> dict[str, bool]:
    """Per row: learned when every judged column gained under `LEARNED_GAIN` in the last doubling."""
    out: dict[str, bool] = {}
    for d in doublings:
        out[d.row] = out.get(d.row, True) and d.learned
    return out


def learning_note(doublings: Sequence[LastDoubling], columns: Sequence[Column]) -> str:
    """The caption's sentence: for each row, its metric over the last doubling and the verdict."""
    if not doublings:
        return ""
    fmt = {c.name: c for c in columns}
    learned = row_learned(doublings)
    parts = []
    for row, verdict in learned.items():
        ds = [d for d in doublings if d.row == row]
        values = ", ".join(f"{d.column} {fmt[d.column].fmt(d.value_half)} -> {fmt[d.column].fmt(d.value)} "
                           f"({d.gain:+.1%})" for d in ds)
        parts.append(f"{row}: {values}, steps {ds[0].step_half} -> {ds[0].step}: "
                     f"{LEARNED if verdict else STILL_LEARNING}")
    return (f"Has each row learned? Its metric over the last doubling of training (EMA snapshots; relative gain, "
            f"under {LEARNED_GAIN:.0%} = {LEARNED}): " + "; ".join(parts) + ".")


def learning_records(doublings: Sequence[LastDoubling]) -> list[dict]:
    """The JSON form: one record per (row, column), with its verdict."""
    return [{**asdict(d), "learned": d.learned, "verdict": LEARNED if d.learned else STILL_LEARNING}
            for d in doublings]

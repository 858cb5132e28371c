"""Each table cell with what its interval and its claim tests need, and the claims judged on them.

A cell's number is one of three kinds, and its uncertainty follows from the kind:

- **mean** over per-image scores (LPIPS per image, cosine per pair): `items` [N] holds the
  scores; interval: BCa bootstrap over images (`uncertainty.bootstrap_ci`).
- **pooled** over images (Table 4's accuracies and IoU come from one confusion matrix
  summed over the test set, not a mean of per-image scores): `items` [N, C, C] holds each
  image's confusion matrix and `pooled` names the score; interval: percentile bootstrap
  over images, recomputing the pooled score from the resampled images' summed matrix.
  DiffusionMTL's metrics are pooled the same way: `items` [N, D] holds each image's meter
  state and `pooled` is "dense:<column>" or a delta_m layout (repro.metrics.dense.pooled_score).
- **replicates** (FID, sFID, IS, Precision, Recall: set statistics of a generated sample):
  `replicates` [B] holds the metric recomputed on B resamples of the generated samples
  against the fixed reference (`repro.metrics.fidelity.generation_metrics_with_replicates`);
  interval: their 2.5 / 97.5 percentiles.

Comparing two cells (`compare_cells`):

- **paired** when both hold per-image `items` of the same length: the rows scored the same
  images (Table 1's rows restore the same masked test images, Table 4's translate the same
  photos, the representation rows score the same samples). Means: `uncertainty.paired_comparison`
  (BCa interval of the mean difference, Wilcoxon's p). Pooled: a percentile bootstrap
  over images of the difference of the pooled scores (the same resampled images on both
  sides), p from the bootstrap distribution.
- **unpaired** otherwise (generation rows draw independent samples): the difference of the
  two cells' independent bootstrap replicates, percentile interval, p from that distribution
  (two-sided: twice the smaller tail mass at 0).

A claim over several comparisons ("for every mask count", "every row increases") combines
their verdicts: all held -> held, any not held -> not held, else inconclusive (not
evaluable only when no comparison could be made at all).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

from repro.metrics.dense import DELTA_M_PREFIX, POOLED_PREFIX, pooled_score
from repro.metrics.segmentation import segmentation_scores
from repro.report.claims import COMPARE_OPS, HELD, NOT_EVALUABLE, NOT_HELD, expand
from repro.report.paper import TableSpec
from repro.report.uncertainty import CONFIDENCE, INCONCLUSIVE, Interval, bootstrap_ci, paired_comparison, verdict

POOLED_RESAMPLES = 2000   # each resample recomputes the pooled score from a summed confusion matrix


@dataclass(frozen=True)
class CellData:
    """One cell's number and what its uncertainty is computed from (see the module docstring)."""

    estimate: float
    items: np.ndarray | None = None        # per-image scores [N] or per-image confusion matrices [N, C, C]
    pooled: str | None = None              # the pooled score of `items` (a segmentation_scores key); None: mean
    replicates: np.ndarray | None = None   # bootstrap replicates of the estimate [B]

    @property
    def kind(self) -> str:
        return "replicates" if self.items is None else "pooled" if self.pooled else "mean"


@dataclass(frozen=True)
class CellComparison:
    """Cell a minus cell b: the difference's interval, a two-sided p-value, the test used."""

    difference: Interval
    p_value: float
    test: str
    n: int


def _pooled(items: np.ndarray, name: str) -> float:
    if name.startswith((POOLED_PREFIX, DELTA_M_PREFIX)):   # DiffusionMTL's meters (repro.metrics.dense)
        return pooled_score(name, items.sum(axis=0, dtype=np.float64))
    return segmentation_scores(items.sum(axis=0))[name]


def _percentile(values: np.ndarray, estimate: float, confidence: float, method: str) -> Interval:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Interval(estimate, float("nan"), float("nan"), confidence, method)
    lo, hi = np.quantile(finite, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(lo), float(hi), confidence, method)


def _pooled_bootstrap(fn, n: int, estimate: float, confidence: float, n_resamples: int, seed: int
                      ) -> tuple[Interval, np.ndarray]:
    res = stats.bootstrap((np.arange(n),), lambda idx: fn(np.asarray(idx, dtype=np.int64)), vectorized=False,
                          method="percentile", confidence_level=confidence, n_resamples=n_resamples,
                          random_state=np.random.default_rng(seed))
    dist = np.asarray(res.bootstrap_distribution, dtype=np.float64)
    return _percentile(dist, estimate, confidence, "percentile bootstrap over images"), dist


def cell_interval(cell: CellData, *, confidence: float = CONFIDENCE, n_resamples: int = POOLED_RESAMPLES,
                  seed: int = 0) -> Interval:
    """The cell's `confidence` interval (method by kind, module docstring)."""
    if not np.isfinite(cell.estimate):
        return Interval(cell.estimate, float("nan"), float("nan"), confidence, "none")
    if cell.kind == "replicates":
        if cell.replicates is None or len(cell.replicates) == 0:
            return Interval(cell.estimate, float("nan"), float("nan"), confidence, "none")
        return _percentile(np.asarray(cell.replicates, dtype=np.float64), cell.estimate, confidence,
                           "percentile bootstrap over generated samples")
    items = np.asarray(cell.items)
    if len(items) < 2:
        return Interval(cell.estimate, float("nan"), float("nan"), confidence, "none")
    if cell.kind == "mean":
        return bootstrap_ci(items, confidence=confidence, seed=seed)
    return _pooled_bootstrap(lambda idx: _pooled(items[idx], cell.pooled), len(items), cell.estimate, confidence,
                             n_resamples, seed)[0]


def column_intervals(cells: Mapping[str, CellData], columns: Sequence[str]) -> tuple[dict, dict]:
    """({column: [low, high] or None}, {column: method}) of a row's cells: what an evaluation
    job stores beside its values (None where a column has no finite interval)."""
    intervals, methods = {}, {}
    for column in columns:
        ci = cell_interval(cells[column]) if column in cells else None
        finite = ci is not None and np.isfinite(ci.low) and np.isfinite(ci.high)
        intervals[column] = [ci.low, ci.high] if finite else None
        if finite:
            methods[column] = ci.method
    return intervals, methods


def _two_sided_p(dist: np.ndarray) -> float:
    d = dist[np.isfinite(dist)]
    if len(d) == 0:
        return float("nan")
    if np.all(d == 0):
        return 1.0
    # (1 + count) / (B + 1): a bootstrap p-value is never 0 with finitely many resamples.
    tail = min(np.sum(d <= 0), np.sum(d >= 0))
    return float(min(1.0, 2 * (1 + tail) / (len(d) + 1)))


def compare_cells(a: CellData, b: CellData, *, confidence: float = CONFIDENCE,
                  n_resamples: int = POOLED_RESAMPLES, seed: int = 0) -> CellComparison | None:
    """a - b with its interval and p (paired or unpaired, module docstring); None if either lacks data."""
    if not (np.isfinite(a.estimate) and np.isfinite(b.estimate)):
        return None
    if a.items is not None and b.items is not None and len(a.items) == len(b.items) and len(a.items) > 1:
        if a.kind == b.kind == "mean":
            c = paired_comparison(a.items, b.items, confidence=confidence, seed=seed)
            return CellComparison(c.difference, c.p_value, "paired bootstrap (BCa) over images, Wilcoxon p", c.n)
        if a.kind == b.kind == "pooled":
            ia, ib = np.asarray(a.items), np.asarray(b.items)
            interval, dist = _pooled_bootstrap(lambda idx: _pooled(ia[idx], a.pooled) - _pooled(ib[idx], b.pooled),
                                               len(ia), a.estimate - b.estimate, confidence, n_resamples, seed)
            return CellComparison(interval, _two_sided_p(dist), "paired percentile bootstrap over images", len(ia))
    if a.replicates is None or b.replicates is None or len(a.replicates) == 0 or len(b.replicates) == 0:
        return None
    n = min(len(a.replicates), len(b.replicates))
    # Independent samples, independent resamples: a's b-th replicate minus b's is a draw of the difference.
    dist = np.asarray(a.replicates[:n], dtype=np.float64) - np.asarray(b.replicates[:n], dtype=np.float64)
    interval = _percentile(dist, a.estimate - b.estimate, confidence, "unpaired bootstrap of the difference")
    return CellComparison(interval, _two_sided_p(dist), "unpaired bootstrap of the difference (independent samples)", n)


def combine_verdicts(verdicts: list[str]) -> str:
    """All held -> held; any not held -> not held; none evaluable -> not evaluable; else inconclusive."""
    if not verdicts or all(v == NOT_EVALUABLE for v in verdicts):
        return NOT_EVALUABLE
    if any(v == NOT_HELD for v in verdicts):
        return NOT_HELD
    if all(v == HELD for v in verdicts):
        return HELD
    return INCONCLUSIVE


def claim_verdict(spec: TableSpec, claim: dict, cells: Mapping[tuple[str, str], CellData], *,
                  confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """One claim judged with uncertainty -> {text, status, detail, comparisons}.

    `cells` maps (row, column) to its CellData; status is held / not held / inconclusive /
    not evaluable (module docstring); each comparison records the difference a - b, its
    interval, p-value, test and verdict, and the detail line prints them.
    """
    if claim.get("check") is None:
        return {"text": claim["text"], "status": NOT_EVALUABLE, "detail": claim.get("reason", "no check given"),
                "comparisons": []}
    records, parts = [], []
    for cmp in expand(spec, claim):
        a, b = cells.get(cmp.a), cells.get(cmp.b)
        c = compare_cells(a, b, confidence=confidence, seed=seed) if a is not None and b is not None else None
        v = verdict(c.difference if c else None, cmp.op)
        sym = COMPARE_OPS[cmp.op][1]
        head = f"{cmp.a[0]}/{cmp.a[1]} {sym} {cmp.b[0]}/{cmp.b[1]}"
        if c is None:
            parts.append(f"{head}: not evaluable")
            records.append({"a": list(cmp.a), "b": list(cmp.b), "op": cmp.op, "verdict": v})
            continue
        d = c.difference
        parts.append(f"{head}: diff {d.estimate:+.4g} [{d.low:+.4g}, {d.high:+.4g}], p={c.p_value:.3g} -> {v}")
        records.append({"a": list(cmp.a), "b": list(cmp.b), "op": cmp.op, "verdict": v, "difference": d.estimate,
                        "low": d.low, "high": d.high, "p_value": c.p_value, "test": c.test, "n": c.n})
    status = combine_verdicts([r["verdict"] for r in records])
    tests = sorted({r["test"] for r in records if "test" in r})
    detail = (f"{int(confidence * 100)}% intervals of a - b ({'; '.join(tests) or 'no test'}). " + "; ".join(parts))
    return {"text": claim["text"], "status": status, "detail": detail, "comparisons": records}


def cells_from_arrays(columns: list[str], values: Mapping[str, float], arrays: Mapping[str, np.ndarray]
                      ) -> dict[str, CellData]:
    """Rebuild a row's cells from its result values and the arrays of `arrays_of_cells` (npz round trip)."""
    out = {}
    for i, col in enumerate(columns):
        estimate = float("nan") if values.get(col) is None else float(values[col])
        kind = str(arrays[f"kind_{i}"]) if f"kind_{i}" in arrays else ""
        if kind == "mean":
            out[col] = CellData(estimate, items=np.asarray(arrays[f"data_{i}"]))
        elif kind.startswith("pooled:"):
            out[col] = CellData(estimate, items=np.asarray(arrays[f"data_{i}"]), pooled=kind.removeprefix("pooled:"))
        elif kind == "replicates":
            out[col] = CellData(estimate, replicates=np.asarray(arrays[f"data_{i}"]))
        else:
            out[col] = CellData(estimate)
    return out


def arrays_of_cells(columns: list[str], cells: Mapping[str, CellData]) -> dict[str, np.ndarray]:
    """The arrays a row's cells need, keyed by column index (npz-safe names; `cells_from_arrays` reads them)."""
    arrays: dict[str, np.ndarray] = {"columns": np.array(columns)}
    for i, col in enumerate(columns):
        cell = cells.get(col)
        if cell is None or (cell.items is None and cell.replicates is None):
            continue
        if cell.items is not None:
            arrays[f"kind_{i}"] = np.array("mean" if cell.pooled is None else f"pooled:{cell.pooled}")
            arrays[f"data_{i}"] = np.asarray(cell.items)
        else:
            arrays[f"kind_{i}"] = np.array("replicates")
            arrays[f"data_{i}"] = np.asarray(cell.replicates, dtype=np.float64)
    return arrays

"""Figure 6's accuracy curves with their uncertainty: a binomial interval per point, tests per claim.

Each point of a curve is an accuracy of k correct out of n test images: its 95% interval
is Wilson's score interval (`scipy.stats.binomtest(...).proportion_ci`), which unlike the
normal approximation stays inside [0, 1] at the small n of the embedded profiles.

The two statements of Sec. 4.2 (repro.report.claims.curve_claims gives their point
version) are tested with a parametric bootstrap: each series' accuracy at each iteration
is redrawn as Binomial(n, observed accuracy) / n, independently. The classifier jobs keep
no per-image correctness, so the pairing of the two series on the same images cannot be
used; treating them as independent overstates the variance of their difference, so the
verdicts err towards "inconclusive", never towards "held". A point at accuracy 0 or 1 has
no binomial spread: its bootstrap interval is that point.

- "ours above the baseline at every iteration": per common iteration, the interval of
  ours - baseline, verdict "gt"; combined as in repro.report.cells (all held -> held, any
  not held -> not held, else inconclusive).
- "the gap narrows": the interval of |gap at the last iteration| - |gap at the first|,
  verdict "lt".
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from repro.report.cells import combine_verdicts
from repro.report.uncertainty import CONFIDENCE, Interval, verdict

CURVE_RESAMPLES = 9999


def accuracy_interval(accuracy: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson's score interval of an accuracy measured on n images."""
    k = int(round(accuracy * n))
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def with_intervals(frame: pd.DataFrame, n: int, metrics: Sequence[str] = ("top1", "top5")) -> pd.DataFrame:
    """The long-form curves frame plus `<metric>_low` / `<metric>_high` columns."""
    out = frame.copy()
    for k in metrics:
        bounds = [accuracy_interval(v, n) for v in out[k]]
        out[f"{k}_low"] = [b[0] for b in bounds]
        out[f"{k}_high"] = [b[1] for b in bounds]
    return out


def _draws(p: float, n: int, rng: np.random.Generator, b: int) -> np.ndarray:
    return rng.binomial(n, float(np.clip(p, 0.0, 1.0)), size=b) / n


def _interval(dist: np.ndarray, estimate: float, confidence: float) -> Interval:
    lo, hi = np.quantile(dist, [(1 - confidence) / 2, (1 + confidence) / 2])
    return Interval(estimate, float(lo), float(hi), confidence, "parametric bootstrap (binomial)")


def curve_claim_verdicts(frame: pd.DataFrame, ours: str, baseline: str, n: int,
                         metrics: Sequence[str] = ("top1", "top5"), *, confidence: float = CONFIDENCE,
                         n_resamples: int = CURVE_RESAMPLES, seed: int = 0) -> list[dict]:
    """Figure 6's claims as tests (module docstring): the records of `curve_claims` with
    status held / not held / inconclusive / not evaluable and each comparison's interval."""
    rng = np.random.default_rng(seed)
    a = frame[frame.series == ours].set_index("iteration")
    b = frame[frame.series == baseline].set_index("iteration")
    steps = sorted(set(a.index) & set(b.index))
    out = []
    for k in metrics:
        draws = {s: (_draws(a.at[s, k], n, rng, n_resamples), _draws(b.at[s, k], n, rng, n_resamples)) for s in steps}
        verdicts, parts = [], []
        for s in steps:
            d = _interval(draws[s][0] - draws[s][1], float(a.at[s, k] - b.at[s, k]), confidence)
            v = verdict(d, "gt")
            verdicts.append(v)
            parts.append(f"{s}: {a.at[s, k]:.3f} vs {b.at[s, k]:.3f}, diff [{d.low:+.3f}, {d.high:+.3f}] -> {v}")
        out.append({"text": f"{ours} above {baseline} at every iteration ({k})",
                    "status": combine_verdicts(verdicts),
                    "detail": f"{int(confidence * 100)}% intervals, n={n} images per point; " + "; ".join(parts)})
        if len(steps) < 2:
            out.append({"text": f"the {k} gap narrows with finetuning", "status": combine_verdicts([]),
                        "detail": "fewer than two common iterations"})
            continue
        first, last = steps[0], steps[-1]
        gap = lambda s: draws[s][0] - draws[s][1]
        change = np.abs(gap(last)) - np.abs(gap(first))
        estimate = abs(float(a.at[last, k] - b.at[last, k])) - abs(float(a.at[first, k] - b.at[first, k]))
        d = _interval(change, estimate, confidence)
        v = verdict(d, "lt")
        out.append({"text": f"the {k} gap narrows with finetuning", "status": v,
                    "detail": f"|gap| at iteration {last} minus at {first}: {estimate:+.3f} "
                              f"[{d.low:+.3f}, {d.high:+.3f}] ({int(confidence * 100)}% parametric bootstrap, "
                              f"n={n} images per point) -> {v}"})
    return out

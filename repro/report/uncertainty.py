"""Uncertainty of the tables' numbers: confidence intervals, paired tests, three-valued verdicts.

Pure functions on arrays (no I/O). Every interval is a 95% interval by default.

- A cell that averages a per-image score (LPIPS over the evaluation images, accuracy over
  test images): `bootstrap_ci`, scipy's bootstrap over the images (BCa by default).
- A claim "row A beats row B" on the same images: `paired_comparison`, a paired bootstrap
  interval of the mean per-image difference and Wilcoxon's signed-rank p-value.
- FID (and sFID) is not a mean over images: `fid_interval` resamples the generated
  samples' features with replacement and recomputes FID against the *fixed* reference
  statistics (the reference set is the same for every row, so its own noise cancels in
  row-vs-row comparisons). Each resample costs a matrix square root, hence a cap
  (`MAX_FID_RESAMPLES`), and the percentile method (BCa would need one FID per sample for
  its jackknife). Resampling with replacement repeats samples, which lowers the
  feature diversity and raises FID a little, so the interval leans high; it measures the
  variability due to the finite generated set only.
- Seed replicates (whole train-sample-evaluate runs with different seeds): `seed_spread`.
- `verdict`: "held" when a comparison's interval lies entirely on the side the paper
  claims, "not held" when it lies entirely on the other side, "inconclusive" when it
  contains no difference (and "not evaluable" without an interval).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from scipy import stats

from repro.errors import UserError
from repro.metrics.fidelity import frechet_distance, gaussian_statistics
from repro.report.claims import HELD, INCONCLUSIVE, NOT_EVALUABLE, NOT_HELD

CONFIDENCE = 0.95
N_RESAMPLES = 9999          # scipy's default number of bootstrap resamples
MAX_FID_RESAMPLES = 500     # each FID resample is a D x D matrix square root
VERDICTS = (HELD, NOT_HELD, INCONCLUSIVE, NOT_EVALUABLE)
# A claim about the difference a - b of two cells: the direction it says that difference has.
CLAIM_SIGNS = {"lt": -1, "le": -1, "gt": 1, "ge": 1}


@dataclass(frozen=True)
class Interval:
    """A point estimate with its confidence interval ``[low, high]``."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str


@dataclass(frozen=True)
class PairedComparison:
    """Mean of ``a - b`` over paired items, its bootstrap interval and Wilcoxon's two-sided p-value."""

    difference: Interval
    p_value: float
    n: int


@dataclass(frozen=True)
class Spread:
    """Across seed replicates: mean, sample standard deviation, the t-interval of the mean, range."""

    n: int
    mean: float
    std: float
    low: float
    high: float
    min: float
    max: float


def _values(values, what: str, at_least: int = 2) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(x) < at_least or not np.all(np.isfinite(x)):
        raise UserError(f"{what}: need at least {at_least} finite values, got {len(x)} "
                        f"({int(np.sum(~np.isfinite(x)))} not finite)")
    return x


def bootstrap_ci(values, statistic: Callable[[np.ndarray], float] = np.mean, *, confidence: float = CONFIDENCE,
                 n_resamples: int = N_RESAMPLES, method: str = "BCa", seed: int = 0) -> Interval:
    """Bootstrap interval of ``statistic`` over per-item ``values`` (e.g. LPIPS per image).

    ``statistic`` must accept an ``axis`` keyword (as numpy's reductions do) so that scipy
    can evaluate all resamples at once. Seeded: the same inputs give the same interval.
    """
    x = _values(values, "bootstrap interval")
    estimate = float(statistic(x, axis=-1))
    if np.ptp(x) == 0:  # every resample equals the estimate; scipy's BCa is undefined there
        return Interval(estimate, estimate, estimate, confidence, method)
    res = stats.bootstrap((x,), statistic, confidence_level=confidence, n_resamples=n_resamples,
                          method=method, random_state=np.random.default_rng(seed), vectorized=True)
    ci = res.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), confidence, method)


def paired_comparison(a, b, *, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES,
                      method: str = "BCa", seed: int = 0) -> PairedComparison:
    """Row ``a`` against row ``b`` on the same items (``a[i]`` and ``b[i]`` score item i).

    The interval is the bootstrap interval of the mean difference (resampling items,
    so the pairing is kept); the p-value is Wilcoxon's signed-rank test of a symmetric
    difference around 0 (1.0 when every difference is 0).
    """
    a, b = _values(a, "paired comparison (a)"), _values(b, "paired comparison (b)")
    if a.shape != b.shape:
        raise UserError(f"paired comparison needs scores of the same items: {len(a)} vs {len(b)} values")
    d = a - b
    interval = bootstrap_ci(d, confidence=confidence, n_resamples=n_resamples, method=method, seed=seed)
    p = 1.0 if np.all(d == 0) else float(stats.wilcoxon(d).pvalue)
    return PairedComparison(interval, p, len(d))


def fid_interval(features, ref_mu: np.ndarray, ref_sigma: np.ndarray, *, confidence: float = CONFIDENCE,
                 n_resamples: int = 200, seed: int = 0) -> Interval:
    """FID of generated ``features`` [N, D] against fixed reference statistics, with its
    percentile bootstrap interval over the generated samples (see the module docstring)."""
    feats = torch.as_tensor(np.asarray(features, dtype=np.float64))
    if feats.ndim != 2 or len(feats) < 2:
        raise UserError(f"FID interval: features must be [N >= 2, D], got {tuple(feats.shape)}")
    if not 1 <= n_resamples <= MAX_FID_RESAMPLES:
        raise UserError(f"FID interval: n_resamples must be in 1..{MAX_FID_RESAMPLES} (each is a matrix square "
                        f"root), got {n_resamples}")

    def fid(idx: np.ndarray) -> float:
        mu, sigma = gaussian_statistics(feats[np.asarray(idx, dtype=np.int64)])
        return frechet_distance(mu, sigma, ref_mu, ref_sigma)

    estimate = fid(np.arange(len(feats)))
    res = stats.bootstrap((np.arange(len(feats)),), fid, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed), vectorized=False)
    ci = res.confidence_interval
    return Interval(estimate, float(ci.low), float(ci.high), confidence, "percentile")


def seed_spread(values, confidence: float = CONFIDENCE) -> Spread:
    """Spread of one number over seed replicates; the interval is Student's t for the mean."""
    x = _values(values, "seed spread", at_least=1)
    mean = float(x.mean())
    if len(x) == 1:
        return Spread(1, mean, float("nan"), float("nan"), float("nan"), mean, mean)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df=len(x) - 1)) * std / np.sqrt(len(x))
    return Spread(len(x), mean, std, mean - half, mean + half, float(x.min()), float(x.max()))


def verdict(difference: Interval | None, op: str) -> str:
    """The claim ``a OP b`` judged on the interval of ``a - b`` (``op`` as in `repro.report.claims`).

    "held": the interval lies on the claimed side of 0 (strictly for lt / gt; for le / ge
    it may touch 0); "not held": it lies strictly on the other side; "inconclusive":
    it straddles 0; "not evaluable": no interval (a missing cell).
    """
    if op not in CLAIM_SIGNS:
        raise UserError(f"unknown claim comparison {op!r}; choose one of {', '.join(CLAIM_SIGNS)}")
    if difference is None or not (np.isfinite(difference.low) and np.isfinite(difference.high)):
        return NOT_EVALUABLE
    sign, strict = CLAIM_SIGNS[op], op in ("lt", "gt")
    # oriented so that the claim says "the difference is positive"
    low, high = sorted((sign * difference.low, sign * difference.high))
    if low > 0 or (not strict and low >= 0):
        return HELD
    if high < 0:
        return NOT_HELD
    return INCONCLUSIVE

"""Confidence intervals, paired comparisons and verdicts on constructed data with known answers."""

import numpy as np
import pytest
from scipy import stats

from repro.errors import UserError
from repro.report.uncertainty import (
    INCONCLUSIVE, Interval, bootstrap_ci, fid_interval, paired_comparison, seed_spread, verdict,
)
from repro.report.claims import HELD, NOT_EVALUABLE, NOT_HELD

REPS = 200


def coverage_is_nominal(covered: int, reps: int = REPS, nominal: float = 0.95) -> bool:
    """Binomial tolerance: the count is not far out in either tail of Binomial(reps, nominal)."""
    return stats.binomtest(covered, reps, nominal).pvalue > 0.001


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_intervals_cover_a_known_mean_at_the_nominal_rate(method):
    rng = np.random.default_rng(0)
    true_mean, covered, too_narrow = 0.3, 0, 0
    for rep in range(REPS):
        x = rng.normal(true_mean, 1.0, size=60)
        ci = bootstrap_ci(x, method=method, n_resamples=999, seed=rep)
        assert ci.low < ci.estimate < ci.high and ci.estimate == pytest.approx(x.mean())
        covered += ci.low <= true_mean <= ci.high
        # the same intervals at half their width: the check must reject these
        half = (ci.high - ci.low) / 4
        too_narrow += ci.estimate - half <= true_mean <= ci.estimate + half
    assert coverage_is_nominal(covered), covered
    assert not coverage_is_nominal(too_narrow), too_narrow


def test_paired_comparison_covers_the_true_difference():
    rng = np.random.default_rng(1)
    covered = 0
    for rep in range(REPS):
        item = rng.normal(0, 2.0, size=80)          # per-image difficulty shared by both rows
        a = item + rng.normal(0.0, 0.3, size=80)
        b = item + 0.1 + rng.normal(0.0, 0.3, size=80)
        c = paired_comparison(a, b, n_resamples=999, seed=rep)
        covered += c.difference.low <= -0.1 <= c.difference.high
    assert coverage_is_nominal(covered), covered


def test_pairing_matters_and_p_values():
    rng = np.random.default_rng(2)
    item = rng.normal(0, 5.0, size=100)
    a, b = item + 0.2 + rng.normal(0, 0.1, 100), item + rng.normal(0, 0.1, 100)
    c = paired_comparison(a, b, seed=0)
    assert c.difference.low > 0 and c.p_value < 1e-6 and c.n == 100
    # unpaired, the shared per-item spread would drown a difference of 0.2
    assert stats.mannwhitneyu(a, b).pvalue > 0.05
    same = paired_comparison(a, a.copy())
    assert same.p_value == 1.0 and same.difference.low == same.difference.high == 0
    with pytest.raises(UserError, match="same items"):
        paired_comparison(a, b[:-1])


def test_fid_interval():
    rng = np.random.default_rng(3)
    D, shift = 4, 1.0
    ref_mu, ref_sigma = np.zeros(D), np.eye(D)
    true_fid = D * shift**2                           # equal covariances: FID = |mu1 - mu2|^2
    covered, widths = 0, {}
    for rep in range(20):
        feats = rng.normal(shift, 1.0, size=(1000, D))
        ci = fid_interval(feats, ref_mu, ref_sigma, n_resamples=100, seed=rep)
        covered += ci.low <= true_fid <= ci.high
        assert ci.method == "percentile" and ci.low < ci.high
    assert covered >= 15                              # about 19 of 20 for a nominal 95% interval
    for n in (200, 3200):
        ci = fid_interval(rng.normal(shift, 1.0, size=(n, D)), ref_mu, ref_sigma, n_resamples=100)
        widths[n] = ci.high - ci.low
    assert widths[3200] < widths[200] / 2             # ~ 1 / sqrt(n)
    a = fid_interval(feats, ref_mu, ref_sigma, n_resamples=50, seed=7)
    assert a == fid_interval(feats, ref_mu, ref_sigma, n_resamples=50, seed=7)
    with pytest.raises(UserError, match="n_resamples"):
        fid_interval(feats, ref_mu, ref_sigma, n_resamples=10_000)


def test_seed_spread_by_hand():
    s = seed_spread([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std, s.min, s.max) == (3, 2.0, 1.0, 1.0, 3.0)
    half = 4.302652729911275 / np.sqrt(3)            # t_{0.975, 2}
    assert (s.low, s.high) == (pytest.approx(2 - half), pytest.approx(2 + half))
    one = seed_spread([5.0])
    assert one.mean == 5.0 and np.isnan(one.std) and np.isnan(one.low)


@pytest.mark.parametrize("low, high, op, expected", [
    (-0.5, -0.1, "lt", HELD),          # a - b surely negative: a < b holds
    (0.1, 0.4, "lt", NOT_HELD),
    (-0.2, 0.3, "lt", INCONCLUSIVE),
    (0.1, 0.4, "gt", HELD),
    (-0.5, -0.1, "gt", NOT_HELD),
    (-0.2, 0.3, "gt", INCONCLUSIVE),
    (0.0, 0.3, "ge", HELD),            # may touch 0 for a non-strict claim
    (0.0, 0.3, "gt", INCONCLUSIVE),
    (-0.3, 0.0, "le", HELD),
    (-0.3, 0.0, "lt", INCONCLUSIVE),
    (float("nan"), float("nan"), "lt", NOT_EVALUABLE),
])
def test_verdicts(low, high, op, expected):
    assert verdict(Interval((low + high) / 2, low, high, 0.95, "BCa"), op) == expected


def test_verdict_edge_cases():
    assert verdict(None, "gt") == NOT_EVALUABLE
    with pytest.raises(UserError):
        verdict(Interval(0, -1, 1, 0.95, "BCa"), "better")
    # end to end: a constructed row pair where the claim "a < b" holds, one where it fails
    rng = np.random.default_rng(5)
    base = rng.normal(0, 1, 200)
    better = paired_comparison(base - 0.5 + rng.normal(0, 0.1, 200), base, seed=0).difference
    worse = paired_comparison(base + 0.5 + rng.normal(0, 0.1, 200), base, seed=0).difference
    tie = paired_comparison(base + rng.normal(0, 0.1, 200), base, seed=0).difference
    assert (verdict(better, "lt"), verdict(worse, "lt"), verdict(tie, "lt")) == (HELD, NOT_HELD, INCONCLUSIVE)

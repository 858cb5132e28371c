"""Figure 6's curves with uncertainty: Wilson intervals against the closed form, claim tests on constructed curves."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from repro.report.accuracy_curves import accuracy_interval, curve_claim_verdicts, with_intervals
from repro.report.claims import HELD, NOT_HELD
from repro.report.uncertainty import INCONCLUSIVE


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson's score interval, written out (an independent implementation)."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 16), (1, 16), (8, 16), (16, 16), (37, 100)])
def test_wilson_interval(k, n):
    assert accuracy_interval(k / n, n) == pytest.approx(wilson(k, n), abs=1e-9)


def curves(ours: list[float], base: list[float]) -> pd.DataFrame:
    rows = [{"series": s, "iteration": 10 * i, "top1": v, "top5": v}
            for s, vals in (("ours", ours), ("base", base)) for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("ours, base, n, above, narrows", [
    ([0.6, 0.7, 0.75], [0.2, 0.5, 0.7], 1000, HELD, HELD),              # clear gap that closes
    ([0.2, 0.5, 0.7], [0.6, 0.7, 0.75], 1000, NOT_HELD, HELD),          # below, gap closes
    ([0.5, 0.5, 0.5], [0.48, 0.49, 0.3], 50, INCONCLUSIVE, INCONCLUSIVE),  # n too small to tell
    ([0.6, 0.6, 0.9], [0.5, 0.5, 0.1], 1000, HELD, NOT_HELD),           # gap widens
])
def test_curve_claims(ours, base, n, above, narrows):
    claims = curve_claim_verdicts(curves(ours, base), "ours", "base", n, metrics=("top1",), n_resamples=2000)
    assert [c["status"] for c in claims] == [above, narrows], [c["detail"] for c in claims]


def test_with_intervals_adds_bounds_around_each_point():
    frame = with_intervals(curves([0.5, 0.6], [0.4, 0.45]), 16)
    assert (frame.top1_low <= frame.top1).all() and (frame.top1 <= frame.top1_high).all()
    assert list(frame.columns[-4:]) == ["top1_low", "top1_high", "top5_low", "top5_high"]

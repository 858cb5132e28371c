"""Aggregation-weight readings: the closed form of atil against the process's recursion,
the bounded reading's bound, and eq. 4's marginal by Monte-Carlo under the bounded weights."""

import numpy as np
import pytest
import torch

from repro.diffusion import MTProcess, make_betas
from repro.diffusion.aggregation import ATIL_BOUND, WEIGHT_KINDS, aggregation_weights, atil_from_weights
from repro.errors import UserError

GRIDS = [("cosine", 1000), ("linear", 1000), ("cosine", 20), ("linear", 50)]


@pytest.mark.parametrize("schedule, T", GRIDS)
@pytest.mark.parametrize("kind", WEIGHT_KINDS)
def test_closed_form_atil_equals_the_recursion(kind, schedule, T):
    betas = make_betas(schedule, T)
    w = aggregation_weights(kind, T, betas=betas)
    recursion = MTProcess(betas, w[None]).atil[0].numpy()
    np.testing.assert_allclose(atil_from_weights(w, betas), recursion, rtol=1e-9, atol=1e-12)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(recursion))


@pytest.mark.parametrize("schedule, T", GRIDS)
@pytest.mark.parametrize("bound", [ATIL_BOUND, 0.25, 3.0])
def test_bounded_weights_reach_exactly_the_bound(schedule, T, bound):
    betas = make_betas(schedule, T)
    w = aggregation_weights("bounded", T, bound, betas=betas)
    atil = MTProcess(betas, w[None]).atil[0].numpy()
    assert atil.max() == pytest.approx(bound, rel=1e-12)
    assert np.all(atil >= 0) and np.all(atil <= bound * (1 + 1e-12))
    # the paper's shape, one scale factor: w = c k / (T - k) with c > 0
    paper = aggregation_weights("paper", T)
    assert w[0] == 0 and np.all(np.diff(w) > 0)
    np.testing.assert_allclose(w[1:] / paper[1:], w[1] / paper[1], rtol=1e-12)
    # the paper's weights are far outside the bound: the reading changes something
    assert MTProcess(betas, paper[None]).atil.max() > 5 * ATIL_BOUND


def test_bounded_weights_through_the_config_path():
    for schedule in ("cosine", "linear"):
        process = MTProcess.from_config(schedule, 1000, "bounded", 2, weight_value=1.0)
        assert process.atil.max().item() == pytest.approx(1.0, rel=1e-12)
        # respacing keeps the marginals, hence the bound, at the kept steps
        spaced = MTProcess.from_config(schedule, 1000, "bounded", 2, respacing=25)
        assert spaced.atil.max().item() <= 1.0 + 1e-12


def test_bounded_weights_need_a_schedule_and_a_positive_bound():
    with pytest.raises(UserError, match="betas"):
        aggregation_weights("bounded", 10)
    with pytest.raises(UserError, match="positive"):
        aggregation_weights("bounded", 50, 0.0, betas=make_betas("linear", 50))
    np.testing.assert_array_equal(aggregation_weights("bounded", 1, betas=np.array([0.5])), [0.0])


@pytest.mark.parametrize("schedule, T", [("cosine", 20), ("linear", 50)])
def test_chain_of_eq3_matches_marginal_eq4_with_bounded_weights(schedule, T):
    n, d = 50_000, 2
    process = MTProcess.from_config(schedule, T, "bounded", 1)
    g = torch.Generator().manual_seed(1)
    z0 = torch.tensor([0.5, -1.0], dtype=torch.float64).expand(n, d)
    e = [torch.tensor([1.0, -0.5], dtype=torch.float64).expand(n, d)]
    z = z0
    for k in range(T):
        z = process.step(z, e, k, torch.randn(n, d, generator=g, dtype=torch.float64))
        mean, var = process.q_mean_var(z0[:1], [x[:1] for x in e], k)
        assert torch.all((z.mean(0) - mean[0]).abs() < 5 * (var[0] / n).sqrt()), k
        assert torch.all((z.var(0) - var[0]).abs() < 5 * var[0] * np.sqrt(2 / (n - 1))), k
    assert process.atil.max() == pytest.approx(1.0)

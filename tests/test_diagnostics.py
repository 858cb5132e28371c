"""Held-out eps MSE per timestep bucket (repro.diffusion.diagnostics) against constructed
noise predictors whose error per bucket, per region and per head is known in closed form."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.diffusion import MTProcess
from repro.diffusion.diagnostics import bucket_edges, eps_mse_by_step
from repro.errors import UserError


def test_bucket_edges_are_the_issues_hundreds_at_T_1000():
    assert bucket_edges(1000).tolist() == list(range(0, 1001, 100))
    assert bucket_edges(25, 10).tolist() == [0, 2, 5, 8, 10, 12, 15, 18, 20, 22, 25]   # round half to even
    with pytest.raises(UserError):
        bucket_edges(5, 10)


class KnownError:
    """An eps predictor that knows z_0 (handed in as a network input) and so the true noise,
    then adds a known error: ``scale[bucket] * (2 inside the region, 1 outside)`` on every
    element; its modality head predicts the modality data plus 0.5."""

    def __init__(self, process: MTProcess, scale: list[float], edges: np.ndarray, region: torch.Tensor | None):
        self.process, self.scale, self.edges, self.region = process, scale, edges, region
        self.seen_k: list[torch.Tensor] = []

    def __call__(self, z_t, t, e, *, z0, inside):
        k = t.long()   # full grid: the network timestep is the step
        self.seen_k.append(k)
        eps = self.process.eps_from_z0(z_t, z0, e, k)
        bucket = torch.as_tensor(np.searchsorted(self.edges, k.numpy(), side="right") - 1)
        s = torch.tensor(self.scale, dtype=z_t.dtype)[bucket].reshape(-1, 1, 1, 1)
        delta = s * (1 + inside)
        return eps + delta, {"m": e[0] + 0.5}, None


@pytest.mark.parametrize("weights", ["zero", "paper"])
def test_per_bucket_region_and_head_errors_are_the_constructed_ones(weights):
    T, B = 50, 5
    process = MTProcess.from_config("cosine", T, weights, n_modalities=1)
    g = torch.Generator().manual_seed(0)
    n, res = 12, 8
    z0 = torch.rand(n, 3, res, res, generator=g) * 2 - 1
    inside = (torch.rand(n, 1, res, res, generator=g) < 0.3).float()
    x = {"m": z0 * (1 - inside)}
    edges = bucket_edges(T, B)
    scale = [0.1, 0.2, 0.3, 0.5, 1.0]
    model = KnownError(process, scale, edges, inside)
    records = eps_mse_by_step(model, process, z0, x, {"m": lambda v: v}, {"m": "continuous"},
                              torch.Generator().manual_seed(1), regions={"inside": inside, "outside": 1 - inside},
                              buckets=B, batch_size=5, net_inputs={"z0": z0, "inside": inside})
    frac = float(inside.mean())
    assert [(r["k_lo"], r["k_hi"], r["n"]) for r in records] == [(0, 10, n), (10, 20, n), (20, 30, n), (30, 40, n),
                                                                  (40, 50, n)]
    for r, s in zip(records, scale):
        assert r["eps_inside"] == pytest.approx(4 * s**2, rel=1e-4)
        assert r["eps_outside"] == pytest.approx(s**2, rel=1e-4)
        assert r["eps"] == pytest.approx(s**2 * (4 * frac + (1 - frac)), rel=1e-4)
        assert r["m"] == pytest.approx(0.25, rel=1e-5)
    # every image was seen once per bucket, at a step inside that bucket
    k = torch.cat(model.seen_k).reshape(B, n)
    for b in range(B):
        assert ((k[b] >= edges[b]) & (k[b] < edges[b + 1])).all()


def test_an_exact_predictor_scores_zero_and_the_draws_follow_the_seed():
    process = MTProcess.from_config("linear", 40, "zero", n_modalities=0)
    z0 = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(3))

    def exact(z_t, t, e, *, z0):
        return process.eps_from_z0(z_t, z0, e, t.long()), {}

    def run(seed):
        return eps_mse_by_step(exact, process, z0, {}, {}, {}, torch.Generator().manual_seed(seed), buckets=4,
                               batch_size=4, net_inputs={"z0": z0})

    assert all(r["eps"] < 1e-10 for r in run(0))

    def noisy(z_t, t, e, *, z0):   # a predictor that ignores z_t: its error is the noise's square
        return torch.zeros_like(z_t), {}

    a = eps_mse_by_step(noisy, process, z0, {}, {}, {}, torch.Generator().manual_seed(5), buckets=4, batch_size=4,
                        net_inputs={"z0": z0})
    b = eps_mse_by_step(noisy, process, z0, {}, {}, {}, torch.Generator().manual_seed(5), buckets=4, batch_size=4,
                        net_inputs={"z0": z0})
    assert a == b
    assert all(0.5 < r["eps"] < 1.5 for r in a)   # E[eps^2] = 1 over 96 draws per bucket

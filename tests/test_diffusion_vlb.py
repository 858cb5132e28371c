"""L_vlb of the hybrid objective against independent implementations: torch.distributions
and Monte-Carlo for the Gaussian KL, scipy's normal CDF for the discretised decoder,
a numpy restatement of eq. 5 for the whole term, and the stop-gradient on the mean."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from repro.diffusion import MTProcess, training_losses
from repro.diffusion.vlb import discretized_gaussian_log_likelihood, normal_kl, vlb_term
from repro.errors import UserError


def test_normal_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.randn(50, generator=g, dtype=torch.float64), torch.randn(50, generator=g, dtype=torch.float64)
    lv1, lv2 = 2 * torch.randn(50, generator=g, dtype=torch.float64), 2 * torch.randn(50, generator=g, dtype=torch.float64)
    oracle = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                               torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), oracle, rtol=1e-10, atol=1e-12)
    assert torch.all(normal_kl(m1, lv1, m1, lv1).abs() < 1e-12)


def test_normal_kl_matches_monte_carlo():
    m1, s1, m2, s2 = 0.3, 0.7, -0.4, 1.3
    x = stats.norm(m1, s1).rvs(size=400_000, random_state=1)
    samples = stats.norm(m1, s1).logpdf(x) - stats.norm(m2, s2).logpdf(x)
    kl = normal_kl(*(torch.tensor(v, dtype=torch.float64) for v in (m1, 2 * math.log(s1), m2, 2 * math.log(s2))))
    assert abs(kl.item() - samples.mean()) < 5 * samples.std() / math.sqrt(len(samples))


def scipy_discretized_logp(x, mean, scale):
    """The bin of grid value x on 256 levels in [-1, 1], open-ended at both ends."""
    lo = np.where(x <= -1 + 1e-6, -np.inf, x - 1 / 255)
    hi = np.where(x >= 1 - 1e-6, np.inf, x + 1 / 255)
    return np.log(stats.norm.cdf(hi, mean, scale) - stats.norm.cdf(lo, mean, scale))


@pytest.mark.parametrize("scale", [0.004, 0.05, 0.5])
def test_discretized_decoder_matches_scipy(scale):
    rng = np.random.default_rng(0)
    x = np.concatenate([[-1.0, 1.0], rng.integers(0, 256, 200) / 127.5 - 1])
    mean = np.clip(x + rng.normal(0, 2 * scale, x.shape), -1.2, 1.2)
    ours = discretized_gaussian_log_likelihood(torch.tensor(x), torch.tensor(mean),
                                               torch.full(x.shape, math.log(scale), dtype=torch.float64))
    oracle = scipy_discretized_logp(x, mean, scale)
    np.testing.assert_allclose(ours.numpy(), oracle, rtol=1e-6, atol=1e-9)


def test_discretized_decoder_is_a_distribution_over_the_grid():
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, scale in [(0.0, 0.01), (0.93, 0.2), (-1.3, 0.05)]:
        logp = discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mean),
                                                   torch.full_like(grid, math.log(scale)))
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def numpy_vlb(process, z0, z_t, e, k, eps_pred, v):
    """eq. 5 and the learned-range variance restated in numpy, one step k for the whole batch."""
    b = process.betas.numpy()
    a = 1 - b
    abar = np.cumprod(a)
    abar_prev = np.append(1.0, abar[:-1])
    w, atil = process.weights[0].numpy(), process.atil[0].numpy()
    atil_prev = np.append(0.0, atil[:-1])
    btil = b * (1 - abar_prev) / (1 - abar)
    log_btil = np.log(np.append(btil[1], btil[1:]))
    # posterior: DDPM on y = z - atil e, shifted back by atil_{k-1} e
    y_t = z_t - atil[k] * e
    c0 = np.sqrt(abar_prev[k]) * b[k] / (1 - abar[k])
    ct = np.sqrt(a[k]) * (1 - abar_prev[k]) / (1 - abar[k])
    true_mean = c0 * z0 + ct * y_t + atil_prev[k] * e
    model_mean = (z_t - b[k] / np.sqrt(1 - abar[k]) * eps_pred) / np.sqrt(a[k]) - w[k] * e
    frac = (v + 1) / 2
    model_logvar = frac * np.log(b[k]) + (1 - frac) * log_btil[k]
    if k == 0:
        nll = -np.stack([scipy_discretized_logp(x, m, s) for x, m, s in
                         zip(z0.reshape(len(z0), -1), model_mean.reshape(len(z0), -1),
                             np.exp(0.5 * model_logvar).reshape(len(z0), -1))])
        return nll.mean(1) / math.log(2)
    s1, s2 = np.exp(0.5 * log_btil[k]), np.exp(0.5 * model_logvar)
    kl = np.log(s2 / s1) + (s1**2 + (true_mean - model_mean) ** 2) / (2 * s2**2) - 0.5
    return kl.reshape(len(z0), -1).mean(1) / math.log(2)


@pytest.mark.parametrize("k", [0, 1, 37, 99])
def test_vlb_term_matches_a_numpy_restatement(k):
    process = MTProcess.from_config("cosine", 100, "paper", 1)
    rng = np.random.default_rng(k)
    shape = (4, 3, 2, 2)
    z0 = rng.integers(0, 256, shape) / 127.5 - 1
    e = z0 * (rng.random(shape) > 0.5)
    noise = rng.normal(size=shape)
    z_t = process.q_sample(torch.tensor(z0), [torch.tensor(e)], k, torch.tensor(noise)).numpy()
    eps_pred = noise + 0.3 * rng.normal(size=shape)
    v = rng.uniform(-1, 1, shape)
    ours = vlb_term(process, torch.tensor(z0), torch.tensor(z_t), [torch.tensor(e)], torch.full((4,), k),
                    torch.tensor(eps_pred), torch.tensor(v))
    np.testing.assert_allclose(ours.numpy(), numpy_vlb(process, z0, z_t, e, k, eps_pred, v), rtol=1e-6)


def test_vlb_is_zero_for_the_true_posterior_and_trains_only_the_variance():
    process = MTProcess.from_config("linear", 100, "paper", 1)
    g = torch.Generator().manual_seed(0)
    z0, e, noise = (torch.randn(5, 3, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    k = torch.tensor([1, 10, 50, 80, 99])
    z_t = process.q_sample(z0, [e], k, noise)
    # exact eps and v = -1 (log variance = the posterior's): KL = 0
    exact = vlb_term(process, z0, z_t, [e], k, noise, -torch.ones_like(z0))
    assert exact.abs().max().item() < 1e-10

    eps_pred = (noise + 0.1 * torch.randn(z0.shape, generator=g, dtype=torch.float64)).requires_grad_()
    v = torch.zeros_like(z0, requires_grad=True)
    loss = vlb_term(process, z0, z_t, [e], k, eps_pred, v).mean()
    assert loss.item() > 0
    loss.backward()
    assert eps_pred.grad is None                         # stop-gradient: no L_vlb gradient reaches the mean
    assert v.grad is not None and v.grad.abs().sum() > 0  # the variance is what L_vlb trains


def test_training_losses_hybrid_objective():
    process = MTProcess.from_config("cosine", 50, "paper", 1)
    g = torch.Generator().manual_seed(0)
    z0 = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    x = {"mask": z0 * (torch.rand(4, 1, 4, 4, generator=g) > 0.5)}
    scale = torch.nn.Parameter(torch.tensor(0.9))
    var = torch.nn.Parameter(torch.tensor(0.2))

    def model(z, t, e):
        return scale * z, {"mask": z}, var * torch.ones_like(z)

    args = (model, process, z0, x, {"mask": lambda m: m}, {"mask": "continuous"})
    steps, noise = torch.tensor([0, 3, 20, 49]), torch.randn(z0.shape, generator=g)
    plain, parts0 = training_losses(*args, steps=steps, noise=noise)
    hybrid, parts = training_losses(*args, steps=steps, noise=noise, vlb_weight=1.0)
    assert "vlb" not in parts0 and parts["vlb"].item() > 0
    torch.testing.assert_close(hybrid, plain + parts["vlb"])
    # the mean's parameter gets the same gradient with and without L_vlb
    (g_plain,) = torch.autograd.grad(plain, scale)
    g_hybrid_scale, g_hybrid_var = torch.autograd.grad(hybrid, [scale, var])
    torch.testing.assert_close(g_plain, g_hybrid_scale)
    assert g_hybrid_var.abs() > 0
    with pytest.raises(UserError, match="learn_sigma"):
        training_losses(lambda z, t, e: (z, {"mask": z}), *args[1:], steps=steps, noise=noise, vlb_weight=1.0)

"""The forward aggregation process (eq. 3-5) against independent oracles: diffusers'
DDPM scheduler (all weights zero), a Monte-Carlo run of the eq. 3 chain (eq. 4), and
Bayes' rule evaluated on a grid (eq. 5)."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from repro.diffusion import MTProcess, aggregation_weights, make_betas, space_timesteps  # noqa: E402
from repro.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py

DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def ddpm_scheduler(schedule, T=1000):
    return diffusers.DDPMScheduler(
        num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[schedule], beta_start=1e-4, beta_end=0.02,
        variance_type="fixed_small", clip_sample=False,
    )


def paper_process(schedule, T, n_modalities=2):
    return MTProcess.from_config(schedule, T, "paper", n_modalities)


def unrolled_atil(betas, w):
    """The math doc's unrolled form atil_t = sum_{s<=t} w_s sqrt(abar_t / abar_{s-1}) (1-based t)."""
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    return np.array([np.sum(w[: k + 1] * np.sqrt(abar[k] / abar_prev[: k + 1])) for k in range(len(betas))])


# ---------------------------------------------------------------- zero weights = DDPM
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_zero_weights_q_sample_matches_diffusers(schedule):
    sched = ddpm_scheduler(schedule)
    process = MTProcess(make_betas(schedule, 1000), np.zeros((2, 1000)))
    np.testing.assert_allclose(process.abar.numpy(), sched.alphas_cumprod.double().numpy(), rtol=5e-5)  # float32 table
    g = torch.Generator().manual_seed(0)
    z0, noise = torch.randn(2, 6, 3, 4, 4, generator=g)
    e = list(torch.randn(2, 6, 3, 4, 4, generator=g) * 5)  # ignored: every weight is zero
    k = torch.tensor([0, 1, 10, 500, 998, 999])
    ref = sched.add_noise(z0, noise, k)
    torch.testing.assert_close(process.q_sample(z0, e, k, noise), ref, atol=1e-5, rtol=1e-5)
    empty = MTProcess(make_betas(schedule, 1000), np.zeros((0, 1000)))
    torch.testing.assert_close(empty.q_sample(z0, [], k, noise), ref, atol=1e-5, rtol=1e-5)


def diffusers_step_mean_var(sched, eps, t, z_t):
    """Mean and variance of one diffusers DDPM step, from two noise draws (public API only)."""
    outs, noises = [], []
    for seed in (1, 2):
        outs.append(sched.step(eps, t, z_t, generator=torch.Generator().manual_seed(seed)).prev_sample)
        noises.append(torch.randn(z_t.shape, generator=torch.Generator().manual_seed(seed), dtype=z_t.dtype))
    std = ((outs[0] - outs[1]) / (noises[0] - noises[1])).median()
    return outs[0] - std * noises[0], std**2, outs[0]


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("k", [1, 2, 300, 999])
def test_zero_weights_posterior_and_one_step_match_diffusers(schedule, k):
    sched = ddpm_scheduler(schedule)
    process = MTProcess(make_betas(schedule, 1000), np.zeros((1, 1000)))
    g = torch.Generator().manual_seed(k)
    z0, noise = torch.randn(2, 3, 2, 5, 5, generator=g, dtype=torch.float64)
    e = [torch.randn(3, 2, 5, 5, generator=g, dtype=torch.float64)]
    z_t = process.q_sample(z0, e, k, noise)
    eps = process.eps_from_z0(z_t, z0, e, k)
    ref_mean, ref_var, ref_sample = diffusers_step_mean_var(sched, eps, k, z_t)

    mean, var = process.posterior_mean_var(z0, z_t, e, k)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-4, atol=1e-5)
    # diffusers forms 1 - abar in float32, which loses digits near abar = 1 (small k)
    torch.testing.assert_close(var[0, 0, 0, 0].item(), ref_var.item(), rtol=1e-3, atol=0)
    torch.testing.assert_close(process.mean_from_eps(z_t, eps, e, k), ref_mean, rtol=1e-4, atol=1e-5)
    # one ancestral step z_{k-1} = mutil + sqrt(var) noise, with diffusers' noise (seed 1)
    _, log_var = process.model_variance(k, z_t)
    step_noise = torch.randn(z_t.shape, generator=torch.Generator().manual_seed(1), dtype=z_t.dtype)
    ours = process.mean_from_eps(z_t, eps, e, k) + (0.5 * log_var).exp() * step_noise
    torch.testing.assert_close(ours, ref_sample, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- eq. 3 -> eq. 4 (Monte Carlo)
@pytest.mark.parametrize("schedule, T", [("cosine", 20), ("linear", 50)])
def test_chain_of_eq3_matches_marginal_eq4(schedule, T):
    n, d = 50_000, 2
    process = paper_process(schedule, T)
    g = torch.Generator().manual_seed(0)
    z0 = torch.tensor([0.5, -1.0], dtype=torch.float64).expand(n, d)
    e = [torch.tensor([1.0, -0.5], dtype=torch.float64).expand(n, d),
         torch.tensor([-0.2, 0.4], dtype=torch.float64).expand(n, d)]
    z = z0
    for k in range(T):
        z = process.step(z, e, k, torch.randn(n, d, generator=g, dtype=torch.float64))
        mean, var = process.q_mean_var(z0[:1], [x[:1] for x in e], k)
        se_mean = (var[0] / n).sqrt()
        se_var = var[0] * np.sqrt(2 / (n - 1))
        assert torch.all((z.mean(0) - mean[0]).abs() < 5 * se_mean), k
        assert torch.all((z.var(0) - var[0]).abs() < 5 * se_var), k
    # the offsets are large along the chain, so the check above is not vacuous
    assert process.atil.abs().max() > 3


def test_atil_recursion_equals_unrolled_sum():
    for schedule, T in [("cosine", 1000), ("linear", 1000), ("cosine", 20)]:
        process = paper_process(schedule, T, n_modalities=1)
        w = aggregation_weights("paper", T)
        np.testing.assert_allclose(process.atil[0].numpy(), unrolled_atil(make_betas(schedule, T), w), rtol=1e-10)


# ---------------------------------------------------------------- eq. 5 = Bayes' rule on eq. 3, eq. 4
def normal_logpdf(x, mean, var):
    return -0.5 * (x - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var)


@pytest.mark.parametrize("schedule, T, k", [
    ("cosine", 20, 1), ("cosine", 20, 2), ("cosine", 20, 10), ("cosine", 20, 19),
    ("linear", 50, 1), ("linear", 50, 25), ("linear", 50, 49),
    ("linear", 1000, 1), ("cosine", 1000, 999),
])
def test_posterior_eq5_equals_numerical_bayes(schedule, T, k):
    process = paper_process(schedule, T)
    betas = make_betas(schedule, T)
    z0 = 0.4
    e = [torch.tensor([0.7], dtype=torch.float64), torch.tensor([-0.3], dtype=torch.float64)]
    w = aggregation_weights("paper", T)
    atil = unrolled_atil(betas, w)  # eq. 4 coefficients, computed without the process object
    abar = np.cumprod(1 - betas)
    e_sum = 0.7 - 0.3
    # prior q(z_{k-1} | z0, X) from eq. 4 and a z_k drawn from eq. 3
    prior_mean, prior_var = np.sqrt(abar[k - 1]) * z0 + atil[k - 1] * e_sum, 1 - abar[k - 1]
    rng = np.random.default_rng(k)
    z_prev = prior_mean + np.sqrt(prior_var) * rng.standard_normal()
    z_t = np.sqrt(1 - betas[k]) * (z_prev + w[k] * e_sum) + np.sqrt(betas[k]) * rng.standard_normal()

    grid = np.linspace(prior_mean - 12 * np.sqrt(prior_var), prior_mean + 12 * np.sqrt(prior_var), 400_001)
    log_post = normal_logpdf(grid, prior_mean, prior_var) + normal_logpdf(
        z_t, np.sqrt(1 - betas[k]) * (grid + w[k] * e_sum), betas[k]
    )
    p = np.exp(log_post - log_post.max())
    p /= p.sum()
    bayes_mean = np.sum(p * grid)
    bayes_var = np.sum(p * (grid - bayes_mean) ** 2)

    mean, var = process.posterior_mean_var(
        torch.tensor([z0], dtype=torch.float64), torch.tensor([z_t], dtype=torch.float64), e, k
    )
    assert mean.item() == pytest.approx(bayes_mean, abs=1e-6 * np.sqrt(prior_var))
    assert var.item() == pytest.approx(bayes_var, rel=1e-5)


def test_posterior_at_first_step_is_the_clean_sample():
    """At k = 0 (paper t = 1) z_{t-1} = z_0 is given: point mass at z0."""
    process = paper_process("cosine", 1000)
    g = torch.Generator().manual_seed(3)
    z0, noise = torch.randn(2, 4, 8, generator=g, dtype=torch.float64)
    e = list(torch.randn(2, 4, 8, generator=g, dtype=torch.float64))
    z_t = process.q_sample(z0, e, 0, noise)
    mean, var = process.posterior_mean_var(z0, z_t, e, 0)
    torch.testing.assert_close(mean, z0, rtol=1e-12, atol=1e-12)
    assert torch.all(var == 0)
    torch.testing.assert_close(process.mean_from_eps(z_t, noise, e, 0), z0, rtol=1e-9, atol=1e-9)
    # the log variance used for sampling stays finite (clipped to the k = 1 value, as ADM)
    _, log_var = process.model_variance(0, z_t)
    assert torch.all(log_var == process.btil[1].log())


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_eq5_forms_and_eq4_inversions_agree(schedule):
    """mutil with the true eps (eq. 5) = Bayes-form posterior mean; z0/eps round trips."""
    process = MTProcess.from_config(schedule, 1000, "paper", 2)
    g = torch.Generator().manual_seed(1)
    z0, noise = torch.randn(2, 16, 3, 4, generator=g, dtype=torch.float64)
    e = list(torch.randn(2, 16, 3, 4, generator=g, dtype=torch.float64))
    k = torch.tensor([0, 1, 2, 5, 50, 100, 300, 500, 700, 900, 950, 980, 990, 997, 998, 999])
    z_t = process.q_sample(z0, e, k, noise)
    mean, _ = process.posterior_mean_var(z0, z_t, e, k)
    torch.testing.assert_close(process.mean_from_eps(z_t, noise, e, k), mean, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(process.eps_from_z0(z_t, z0, e, k), noise, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(process.z0_from_eps(z_t, noise, e, k)[:12], z0[:12], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- respacing
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_respacing_to_full_grid_is_identity(schedule):
    process = paper_process(schedule, 1000)
    same = process.respace(range(1000))
    for name, buf in process.buffers().items():
        torch.testing.assert_close(same.buffers()[name], buf, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("spec", ["ddim50", "10,15,20", 7, "1"])
def test_respaced_marginals_equal_original_at_kept_steps(spec):
    process = MTProcess(make_betas("cosine", 300), np.stack([aggregation_weights("paper", 300),
                                                             aggregation_weights("constant", 300, 0.3)]))
    kept = space_timesteps(300, spec)
    small = process.respace(kept)
    assert small.num_steps == len(kept)
    assert small.timesteps.tolist() == kept
    torch.testing.assert_close(small.abar, process.abar[kept], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(small.atil, process.atil[:, kept], rtol=1e-10, atol=1e-12)
    # respacing a respaced process composes the grids
    ends = sorted({kept[0], kept[-1]})
    twice = small.respace(sorted({0, len(kept) - 1}))
    assert twice.timesteps.tolist() == ends
    torch.testing.assert_close(twice.atil, process.atil[:, ends], rtol=1e-10, atol=1e-12)


def test_respaced_transition_is_the_composition_of_eq3_steps():
    """One respaced step equals the original eq. 3 steps it skips, in mean and variance."""
    process = paper_process("linear", 100)
    kept = [3, 10, 40, 99]
    small = process.respace(kept)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    e = list(torch.randn(2, 5, 2, generator=g, dtype=torch.float64))
    zero = torch.zeros_like(z)
    for j in range(1, len(kept)):
        mean, var = z, 0.0
        for k in range(kept[j - 1] + 1, kept[j] + 1):
            mean = process.step(mean, e, k, zero)
            var = (1 - process.betas[k].item()) * var + process.betas[k].item()
        torch.testing.assert_close(small.step(z, e, j, zero), mean, rtol=1e-10, atol=1e-10)
        assert small.betas[j].item() == pytest.approx(var, rel=1e-12)


def test_bad_respacing_and_constructor_inputs():
    process = paper_process("cosine", 10)
    with pytest.raises(UserError):
        process.respace([])
    with pytest.raises(UserError):
        process.respace([3, 10])
    with pytest.raises(UserError):
        MTProcess(np.array([0.1, 1.0]), np.zeros((0, 2)))
    with pytest.raises(UserError):
        MTProcess(np.array([0.1, 0.2]), np.zeros((1, 3)))
    with pytest.raises(UserError):
        MTProcess.from_config("cosine", 10, "paper", 1, respacing="ddim7")
    with pytest.raises(ValueError):
        process.q_sample(torch.zeros(1, 2), [], 0, torch.zeros(1, 2))  # 2 modalities expected


def test_from_config_respacing_and_modalities():
    process = MTProcess.from_config("cosine", 1000, "constant", 3, weight_value=0.5, respacing="ddim25")
    assert process.n_modalities == 3 and process.num_steps == 25
    assert process.timesteps.tolist() == list(range(0, 1000, 40))
    full = MTProcess.from_config("cosine", 1000, "constant", 3, weight_value=0.5)
    torch.testing.assert_close(process.atil, full.atil[:, ::40], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- finiteness at T = 1000
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_no_inf_or_nan_with_paper_weights(schedule):
    process = paper_process(schedule, 1000)
    for name, buf in process.buffers().items():
        assert torch.all(torch.isfinite(buf.double())), name
    g = torch.Generator().manual_seed(0)
    k = torch.arange(1000)
    z0, noise = torch.randn(2, 1000, 3, 2, 2, generator=g)
    e = list(torch.randn(2, 1000, 3, 2, 2, generator=g))
    z_t = process.q_sample(z0, e, k, noise)
    outs = [z_t, *process.q_mean_var(z0, e, k), *process.posterior_mean_var(z0, z_t, e, k),
            process.mean_from_eps(z_t, noise, e, k), process.z0_from_eps(z_t, noise, e, k),
            process.eps_from_z0(z_t, z0, e, k), *process.model_variance(k, z_t),
            *process.model_variance(k, z_t, torch.rand(z_t.shape, generator=g) * 2 - 1)]
    for out in outs:
        assert torch.all(torch.isfinite(out))

"""Samplers (Algorithm 1, DDIM, SDEdit, guidance) against diffusers' schedulers, an
analytic Gaussian-data oracle, and step-by-step checks of Algorithm 1's loop."""

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from repro.diffusion import (  # noqa: E402
    Modality, MTProcess, aggregation_weights, algorithm1, ddim_sample, make_betas, sdedit, space_timesteps,
)
from repro.errors import UserError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


def abar_table(schedule, T=1000):
    return torch.tensor(np.cumprod(1 - make_betas(schedule, T)))


def toy_eps(abar):
    """A fixed, deterministic, nonlinear noise predictor that keeps samples O(1)."""

    def eps(z, t):
        a = abar[torch.as_tensor(t).long()].to(z.dtype)
        a = a.reshape(-1, *[1] * (z.ndim - 1)) if a.ndim else a
        return (1 - a).sqrt() * z / (0.25 * a + 1 - a) + 0.05 * torch.sin(3 * z)

    return eps


class Recorder:
    """Model wrapper that records every call's inputs."""

    def __init__(self, eps_fn, preds_fn=lambda call, z: {}, var_fn=None):
        self.eps_fn, self.preds_fn, self.var_fn = eps_fn, preds_fn, var_fn
        self.z, self.t, self.e = [], [], []

    def __call__(self, z, t, e):
        self.z.append(z.clone())
        self.t.append(t.clone())
        self.e.append([x.clone() for x in e])
        out = (self.eps_fn(z, t), self.preds_fn(len(self.z) - 1, z))
        return out if self.var_fn is None else (*out, self.var_fn(z, t))


def unrolled_atil(betas, w):
    abar = np.cumprod(1 - betas)
    abar_prev = np.append(1.0, abar[:-1])
    return np.array([np.sum(w[: k + 1] * np.sqrt(abar[k] / abar_prev[: k + 1])) for k in range(len(betas))])


# ---------------------------------------------------------------- zero weights = DDPM (diffusers)
@pytest.mark.parametrize("schedule, n_steps, atol", [
    ("linear", 1000, 1e-4),
    ("cosine", 1000, 1.5e-3),  # diffusers' float32 x0-form arithmetic near abar ~ 1e-9
    ("linear", 50, 1e-4),
    ("cosine", 50, 1e-4),
])
def test_ancestral_loop_matches_diffusers_ddpm(schedule, n_steps, atol):
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[schedule],
                                    variance_type="fixed_small", clip_sample=False)
    sched.set_timesteps(n_steps)
    eps = toy_eps(abar_table(schedule))
    shape = (2, 3, 6, 6)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    for t in sched.timesteps:
        x = sched.step(eps(x, t), t, x, generator=g).prev_sample

    # one modality, known and nonzero, but with zero weights: must be exactly DDPM
    process = MTProcess(make_betas(schedule, 1000), np.zeros((1, 1000)))
    if n_steps != 1000:
        process = process.respace(space_timesteps(1000, f"ddim{n_steps}"))
    known = Modality("m", encode=lambda v: v, known=torch.full(shape, 3.0))
    z, _ = algorithm1(lambda z, t, e: (eps(z, t), {}), process, shape, [known],
                            generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z, x, atol=atol, rtol=0)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_eta0_matches_diffusers_ddim(schedule):
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=DIFFUSERS_NAME[schedule],
                                    clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    sched.set_timesteps(50)
    eps = toy_eps(abar_table(schedule))
    shape = (2, 3, 6, 6)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    for t in sched.timesteps:
        x = sched.step(eps(x, t), t, x, eta=0.0).prev_sample
    process = MTProcess.from_config(schedule, 1000, "zero", 0, respacing="ddim50")
    z, _ = ddim_sample(lambda z, t, e: (eps(z, t), {}), process, shape, [],
                       generator=torch.Generator().manual_seed(0), eta=0.0)
    torch.testing.assert_close(z, x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("k", [1, 400, 999])
def test_learned_range_step_matches_diffusers(k):
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    variance_type="learned_range", clip_sample=False)
    eps = toy_eps(abar_table("cosine"))
    v = lambda z, t: torch.tanh(z)  # noqa: E731  (interpolation value in [-1, 1])
    shape = (2, 3, 4, 4)
    z_start = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    ref = sched.step(torch.cat([eps(z_start, k), v(z_start, k)], dim=1), k, z_start,
                     generator=torch.Generator().manual_seed(9)).prev_sample
    model = Recorder(eps, var_fn=v)
    process = MTProcess(make_betas("cosine", 1000), np.zeros((0, 1000)))
    algorithm1(model, process, shape, [], generator=torch.Generator().manual_seed(9),
                     start_step=k, z_start=z_start)
    torch.testing.assert_close(model.z[1], ref, atol=1e-5, rtol=1e-4)  # z_{k-1} = input of the next call


# ---------------------------------------------------------------- MT sampling: analytic oracle
MU, S2 = 0.3, 0.25  # data z_0 ~ N(MU, S2) per element


def gaussian_oracle(schedule, T, w, e_value):
    """Exact E[eps | z_t, X] for Gaussian data under eq. 4, from coefficients computed here."""
    betas = make_betas(schedule, T)
    abar = torch.tensor(np.cumprod(1 - betas))
    atil = torch.tensor(unrolled_atil(betas, w))

    def model(z, t, e):
        a, c = abar[t].reshape(-1, 1), atil[t].reshape(-1, 1)
        mean, var = a.sqrt() * MU + c * e_value, a * S2 + 1 - a
        return (1 - a).sqrt() * (z - mean) / var, {}

    return model


@pytest.mark.parametrize("sampler, respacing, prior, e_value", [
    ("ancestral", None, "shifted", 0.5),
    ("ancestral", "250", "paper", 0.0),
    ("ancestral", "250", "shifted", -0.2),
    ("ddim", "100", "shifted", 0.5),
])
def test_mt_samplers_recover_gaussian_data(sampler, respacing, prior, e_value):
    T, n = 1000, 20_000
    w = aggregation_weights("paper", T)
    process = MTProcess(make_betas("linear", T), w[None])
    if respacing:
        process = process.respace(space_timesteps(T, respacing))
    modality = Modality("m", encode=lambda v: v, known=torch.full((n, 1), e_value, dtype=torch.float64))
    run = algorithm1 if sampler == "ancestral" else ddim_sample
    z, x = run(gaussian_oracle("linear", T, w, e_value), process, (n, 1), [modality], prior=prior,
               generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    se = np.sqrt(S2 / n)
    assert abs(z.mean().item() - MU) < 5 * se + 0.01
    assert abs(z.var().item() - S2) < 0.02
    assert torch.equal(x["m"], modality.known)


def test_paper_prior_is_wrong_when_the_offset_is_large():
    """Documents the open point of the math doc: Algorithm 1's N(0, I) start ignores the
    eq. 4 offset atil_T e, which under the paper's weights (linear, T=1000) is ~4500 e."""
    T, n = 1000, 4000
    w = aggregation_weights("paper", T)
    process = MTProcess(make_betas("linear", T), w[None])
    modality = Modality("m", encode=lambda v: v, known=torch.full((n, 1), 0.5, dtype=torch.float64))
    z, _ = algorithm1(gaussian_oracle("linear", T, w, 0.5), process, (n, 1), [modality], prior="paper",
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(z.mean().item() - MU) > 1.0


def test_ddim_eta1_equals_ancestral():
    process = MTProcess.from_config("cosine", 200, "paper", 2, respacing=40)
    shape = (2, 3, 4, 4)
    eps = toy_eps(abar_table("cosine", 200))
    preds = lambda call, z: {"y": torch.tanh(z + call)}  # noqa: E731
    mods = [Modality("a", encode=lambda v: 0.5 * v, known=torch.ones(shape, dtype=torch.float64)),
            Modality("y", encode=lambda v: v, init=torch.zeros(shape, dtype=torch.float64))]
    kw = dict(prior="shifted", dtype=torch.float64)
    z1, x1 = algorithm1(Recorder(eps, preds), process, shape, mods,
                              generator=torch.Generator().manual_seed(3), **kw)
    z2, x2 = ddim_sample(Recorder(eps, preds), process, shape, mods, generator=torch.Generator().manual_seed(3),
                         eta=1.0, **kw)
    torch.testing.assert_close(z2, z1, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(x2["y"], x1["y"], rtol=1e-9, atol=1e-9)


def test_clip_denoised_is_a_no_op_inside_the_box():
    """With an oracle for a point mass z0* in [-1, 1], clipping changes nothing and both recover z0*."""
    T = 100
    w = aggregation_weights("paper", T)
    process = MTProcess(make_betas("cosine", T), w[None])
    shape = (2, 1, 3, 3)
    z0_star = torch.linspace(-0.9, 0.9, 18, dtype=torch.float64).reshape(shape)
    betas = make_betas("cosine", T)
    abar, atil = torch.tensor(np.cumprod(1 - betas)), torch.tensor(unrolled_atil(betas, w))
    e_value = 0.7

    def oracle(z, t, e):
        a, c = abar[t].reshape(-1, 1, 1, 1), atil[t].reshape(-1, 1, 1, 1)
        return (z - a.sqrt() * z0_star - c * e_value) / (1 - a).sqrt(), {}

    mod = Modality("m", encode=lambda v: v, known=torch.full(shape, e_value, dtype=torch.float64))
    out = [algorithm1(oracle, process, shape, [mod], clip_denoised=clip, prior="shifted",
                            generator=torch.Generator().manual_seed(0), dtype=torch.float64)[0]
           for clip in (False, True)]
    torch.testing.assert_close(out[1], out[0], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[0], z0_star, rtol=1e-6, atol=1e-6)
    # and clipping acts when the implied z_0 leaves the box: one step from k = 80
    k = 80
    far = lambda z, t: 1.5 * oracle(z, t, None)[0]  # noqa: E731
    z_start = 3 * torch.randn(shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    steps = []
    for clip in (False, True):
        model = Recorder(far)
        algorithm1(model, process, shape, [mod], clip_denoised=clip, start_step=k, z_start=z_start,
                         generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        steps.append(model.z[1])
    e = [mod.known]
    z0_hat = process.z0_from_eps(z_start, far(z_start, torch.tensor([k, k])), e, k)
    assert z0_hat.abs().max() > 1.5
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = process.posterior_mean_var(z0_hat.clamp(-1, 1), z_start, e, k)[0] + process.btil[k].sqrt() * noise
    torch.testing.assert_close(steps[1], expected, rtol=1e-9, atol=1e-9)
    assert (steps[0] - steps[1]).abs().max() > 1e-2


# ---------------------------------------------------------------- Algorithm 1, line by line
def test_algorithm1_encodes_current_data_and_updates_unknown_modalities():
    process = MTProcess.from_config("linear", 100, "constant", 2, weight_value=0.3, respacing=5)
    shape = (2, 1, 2, 2)
    known = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    init = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    enc_a, enc_y = (lambda v: 2 * v), (lambda v: v - 1)
    preds = lambda call, z: {"y": torch.full(shape, float(call)), "a": torch.full(shape, 99.0)}  # noqa: E731
    model = Recorder(lambda z, t: 0.1 * z, preds)
    mods = [Modality("a", enc_a, known=known), Modality("y", enc_y, init=init)]
    _, x = algorithm1(model, process, shape, mods, generator=torch.Generator().manual_seed(0))
    assert len(model.z) == 5
    assert [t.tolist() for t in model.t] == [[t, t] for t in process.timesteps.flip(0).tolist()]
    torch.testing.assert_close(model.e[0][1], enc_y(init))
    for call in range(1, 5):
        torch.testing.assert_close(model.e[call][0], enc_a(known))  # known data stays fixed
        torch.testing.assert_close(model.e[call][1], enc_y(torch.full(shape, call - 1.0)))  # previous prediction
    assert torch.equal(x["a"], known) and torch.equal(x["y"], torch.full(shape, 4.0))


def test_last_step_uses_the_encodings_from_before_the_update():
    process = MTProcess.from_config("linear", 100, "constant", 1, weight_value=0.3)
    shape = (2, 1, 2, 2)
    z_start = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    init = torch.randn(shape, generator=torch.Generator().manual_seed(2))
    eps_fn = lambda z, t: torch.sin(z)  # noqa: E731
    model = Recorder(eps_fn, lambda call, z: {"y": torch.full(shape, 5.0)})
    z, _ = algorithm1(model, process, shape, [Modality("y", lambda v: v, init=init)],
                            generator=torch.Generator().manual_seed(0), start_step=0, z_start=z_start)
    torch.testing.assert_close(z, process.mean_from_eps(z_start, eps_fn(z_start, 0), [init], 0))


def test_priors_and_seeds():
    process = MTProcess.from_config("cosine", 50, "paper", 1)
    shape = (3, 2, 2)
    e_data = torch.full(shape, 0.4)
    first = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    eps = toy_eps(abar_table("cosine", 50))
    for prior, expected in [("paper", first),
                            ("shifted", first + process.offset([e_data], 49, first))]:
        model = Recorder(eps)
        algorithm1(model, process, shape, [Modality("m", lambda v: v, known=e_data)], prior=prior,
                         generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(model.z[0], expected)
    run = lambda seed: algorithm1(lambda z, t, e: (eps(z, t), {}), process, shape,  # noqa: E731
                                        [Modality("m", lambda v: v, known=e_data)],
                                        generator=torch.Generator().manual_seed(seed))[0]
    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))


def test_sdedit_starts_from_the_perturbed_guide():
    process = MTProcess.from_config("linear", 100, "zero", 0)
    shape = (2, 3, 4, 4)
    guide = torch.rand(shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
    model = Recorder(toy_eps(abar_table("linear", 100)))
    z, _ = sdedit(model, process, guide, 0.3, torch.Generator().manual_seed(4))
    k0 = 29
    n = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.z[0], process.abar[k0].sqrt().float() * guide
                               + process.one_minus_abar[k0].sqrt().float() * n)
    assert len(model.z) == k0 + 1 and model.t[0].tolist() == [k0, k0]
    assert torch.all(torch.isfinite(z))
    with pytest.raises(UserError):
        sdedit(model, process, guide, 0.001, torch.Generator())


# ---------------------------------------------------------------- classifier guidance
@pytest.mark.parametrize("sampler", [algorithm1, ddim_sample])
def test_guidance_scale_zero_is_bit_exact(sampler):
    process = MTProcess.from_config("cosine", 100, "paper", 1, respacing=20)
    shape = (2, 3, 4, 4)
    eps = toy_eps(abar_table("cosine", 100))
    model = lambda z, t, e: (eps(z, t), {"y": torch.tanh(z)})  # noqa: E731
    mods = [Modality("y", lambda v: v, init=torch.zeros(shape))]
    guidance = lambda z, t: torch.cos(z) + t.reshape(-1, 1, 1, 1) / 100  # noqa: E731
    plain, xp = sampler(model, process, shape, mods, prior="shifted", generator=torch.Generator().manual_seed(0))
    guided, xg = sampler(model, process, shape, mods, prior="shifted", generator=torch.Generator().manual_seed(0),
                         guidance=guidance, guidance_scale=0.0)
    assert torch.equal(plain, guided) and torch.equal(xp["y"], xg["y"])
    shifted, _ = sampler(model, process, shape, mods, prior="shifted", generator=torch.Generator().manual_seed(0),
                         guidance=guidance, guidance_scale=1.0)
    assert not torch.allclose(plain, shifted)


@pytest.mark.parametrize("learned", [False, True])
def test_constant_guidance_shifts_the_mean_by_scale_var_grad(learned):
    process = MTProcess.from_config("linear", 100, "paper", 1)
    shape = (2, 3, 4, 4)
    k, scale = 40, 2.5
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    z_start = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    var_fn = (lambda z, t: torch.tanh(z)) if learned else None
    mods = [Modality("m", lambda v: v, known=torch.full(shape, 0.2, dtype=torch.float64))]
    runs = []
    for guidance in (None, lambda z, t: grad):
        model = Recorder(toy_eps(abar_table("linear", 100)), var_fn=var_fn)
        algorithm1(model, process, shape, mods, generator=torch.Generator().manual_seed(0), start_step=k,
                         z_start=z_start, guidance=guidance, guidance_scale=scale, dtype=torch.float64)
        runs.append(model.z[1])  # z_{k-1}
    var, _ = process.model_variance(k, z_start, var_fn(z_start, None) if learned else None)
    torch.testing.assert_close(runs[1] - runs[0], scale * var * grad, rtol=1e-9, atol=1e-12)


def test_ddim_guidance_follows_condition_score():
    """ADM: eps <- eps - sqrt(1 - abar) * scale * grad, then the DDIM (eta = 0) update."""
    process = MTProcess.from_config("linear", 100, "paper", 1, respacing=10)
    shape = (2, 1, 3, 3)
    j, scale = 6, 1.5
    grad = torch.randn(shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    z_start = torch.randn(shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    mods = [Modality("m", lambda v: v, known=torch.full(shape, 0.2, dtype=torch.float64))]
    runs = []
    for guidance in (None, lambda z, t: grad):
        model = Recorder(toy_eps(abar_table("linear", 100)))
        ddim_sample(model, process, shape, mods, generator=torch.Generator().manual_seed(0), start_step=j,
                    z_start=z_start, guidance=guidance, guidance_scale=scale, dtype=torch.float64)
        runs.append(model.z[1])
    a, a_prev = process.abar[j].item(), process.abar_prev[j].item()
    d_eps = -np.sqrt(1 - a) * scale * grad
    # z_{k-1} is affine in eps: d/d eps = sqrt(1 - abar_prev) - sqrt(abar_prev / abar) sqrt(1 - abar)
    expected = (np.sqrt(1 - a_prev) - np.sqrt(a_prev / a) * np.sqrt(1 - a)) * d_eps
    torch.testing.assert_close(runs[1] - runs[0], expected, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------- robustness
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_sampler_outputs_finite_with_paper_weights_at_T1000(schedule):
    process = MTProcess.from_config(schedule, 1000, "paper", 2)
    shape = (2, 1, 4, 4)
    eps = toy_eps(abar_table(schedule))
    model = lambda z, t, e: (eps(z, t), {"y": torch.tanh(z)})  # noqa: E731
    mods = [Modality("a", lambda v: v, known=torch.ones(shape)), Modality("y", lambda v: v, init=torch.zeros(shape))]
    for prior in ("paper", "shifted"):
        z, x = algorithm1(model, process, shape, mods, prior=prior, generator=torch.Generator().manual_seed(0),
                                clip_denoised=prior == "paper")
        assert torch.all(torch.isfinite(z)) and torch.all(torch.isfinite(x["y"]))
    z, _ = ddim_sample(model, process.respace(space_timesteps(1000, 50)), shape, mods, prior="shifted",
                       generator=torch.Generator().manual_seed(0), eta=0.5, progress=True)
    assert torch.all(torch.isfinite(z))


def test_bad_sampler_inputs():
    process = MTProcess.from_config("cosine", 10, "zero", 1)
    model = lambda z, t, e: (z, {})  # noqa: E731
    with pytest.raises(UserError):
        algorithm1(model, process, (1, 2), [Modality("m", lambda v: v, known=torch.zeros(1, 2))],
                         prior="gaussian", generator=torch.Generator())
    with pytest.raises(UserError):
        algorithm1(model, process, (1, 2), [Modality("m", lambda v: v)], generator=torch.Generator())
    with pytest.raises(UserError):
        algorithm1(model, process, (1, 2), [Modality("m", lambda v: v, known=torch.zeros(1, 2))],
                         start_step=10, generator=torch.Generator())

"""Noise schedules, respacing grids and aggregation weights against independent oracles:
diffusers' schedulers and hand-computed grids."""

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers")

from repro.diffusion import aggregation_weights, make_betas, space_timesteps  # noqa: E402
from repro.errors import UserError  # noqa: E402


@pytest.mark.parametrize(
    "name, T, kwargs",
    [
        ("linear", 1000, dict(beta_schedule="linear", beta_start=1e-4, beta_end=0.02)),
        # guided-diffusion rescales the linear schedule by 1000/T
        ("linear", 100, dict(beta_schedule="linear", beta_start=1e-3, beta_end=0.2)),
        ("cosine", 1000, dict(beta_schedule="squaredcos_cap_v2")),
        ("cosine", 50, dict(beta_schedule="squaredcos_cap_v2")),
    ],
)
def test_betas_match_diffusers(name, T, kwargs):
    ours = make_betas(name, T)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, **kwargs).betas.double().numpy()
    assert ours.dtype == np.float64 and ours.shape == (T,)
    # diffusers builds the table in float32
    np.testing.assert_allclose(ours, ref, rtol=2e-6, atol=1e-9)


def test_cosine_schedule_is_capped_and_follows_alpha_bar():
    betas = make_betas("cosine", 1000)
    assert betas.max() == pytest.approx(0.999)
    # abar(k) = f((k+1)/T) / f(0) wherever the cap is not active
    f = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2  # noqa: E731
    k = np.arange(900)
    np.testing.assert_allclose(np.cumprod(1 - betas)[k], f((k + 1) / 1000) / f(0), rtol=1e-10)


def test_bad_schedule_inputs():
    with pytest.raises(UserError):
        make_betas("quadratic", 1000)
    with pytest.raises(UserError):
        make_betas("cosine", 0)
    with pytest.raises(UserError):
        make_betas("linear", 20)  # last beta would be 1


def test_ddim_grid_matches_diffusers_leading_spacing():
    sched = diffusers.DDIMScheduler(num_train_timesteps=1000, steps_offset=0, timestep_spacing="leading")
    for n in (10, 50, 250):
        sched.set_timesteps(n)
        assert space_timesteps(1000, f"ddim{n}") == sorted(sched.timesteps.tolist())


def test_section_counts_by_hand():
    # two sections of 5 steps: 2 steps -> {0, 4}; 3 steps -> {5, 7, 9}
    assert space_timesteps(10, "2,3") == [0, 4, 5, 7, 9]
    # uneven split: sections of 4 and 3 steps (0..3, 4..6)
    assert space_timesteps(7, "2,2") == [0, 3, 4, 6]
    assert space_timesteps(1000, 4) == [0, 333, 666, 999]
    assert space_timesteps(1000, "4") == [0, 333, 666, 999]
    assert space_timesteps(10, 10) == list(range(10))
    assert space_timesteps(10, 1) == [0]
    grid = space_timesteps(300, "10,15,20")
    assert len(grid) == 45
    assert {0, 99, 100, 199, 200, 299} <= set(grid)
    assert grid[:10] == list(range(0, 100, 11))


@pytest.mark.parametrize("spec", ["ddim7", "ddimx", "abc", "5,20", "0", ""])
def test_bad_respacing_specs(spec):
    with pytest.raises(UserError):
        space_timesteps(10, spec)


def test_paper_weights_by_hand():
    w = aggregation_weights("paper", 1000)
    assert w.dtype == np.float64 and w.shape == (1000,)
    assert np.all(np.isfinite(w))
    assert w[0] == 0.0
    assert w[1] == pytest.approx(1 / 999)
    assert w[500] == pytest.approx(1.0)
    assert w[999] == pytest.approx(999.0)
    np.testing.assert_allclose(aggregation_weights("paper", 4), [0, 1 / 3, 1, 3])
    assert np.all(np.diff(w) > 0)


def test_constant_and_zero_weights():
    np.testing.assert_array_equal(aggregation_weights("constant", 5, 0.25), np.full(5, 0.25))
    np.testing.assert_array_equal(aggregation_weights("constant", 3), np.ones(3))
    np.testing.assert_array_equal(aggregation_weights("zero", 4), np.zeros(4))
    with pytest.raises(UserError):
        aggregation_weights("linear", 10)


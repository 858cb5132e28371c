"""What MT-Diffusion-X's network receives at sampling (Table 1's restorations) against what it
received in training: the masked image on the extra channels, the timesteps, the class / null
inputs, and the noisy state z_t (issue 11: "is it the budget or a defect in the conditional path?").

1. The real code paths, on the same test images: `repro.jobs.train.diffusion_step` (training)
   and `MaskedImageTask.sample` (Table 1's sampling job), both calling a recording network.
2. Monte-Carlo: with a noise predictor that knows z_0 (the ideal network), the state the
   sampler hands the network at every respaced step must follow eq. 4, the distribution of
   z_t in training at that timestep, under every aggregation-weight reading; computed here
   independently of MTProcess (abar by cumprod, atil by Theorem 2's closed form).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.config import compose
from repro.data.masks import apply_mask
from repro.data.pixels import to_uint8
from repro.data.registry import load_images
from repro.diffusion import MTProcess, make_betas, space_timesteps
from repro.diffusion.aggregation import aggregation_weights, atil_from_weights
from repro.diffusion.sampling import Modality, algorithm1
from repro.jobs.sample import sampling_process
from repro.jobs.train import diffusion_step
from repro.jobs.trained import build_diffusion
from repro.plan import train_job


class Recording(torch.nn.Module):
    """The network, with every call's inputs kept."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, z_t, t, e=(), **kw):
        self.calls.append({"z": z_t.clone(), "t": t.clone(), "e": [v.clone() for v in e], "kw": dict(kw)})
        return self.model(z_t, t, e, **kw)


@pytest.fixture
def tiny_table1(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # the tiny data is made under the working directory
    return compose("1", "tiny", overrides=["diffusion.weights=zero"])


def test_training_and_sampling_show_the_network_the_same_kind_of_inputs(tiny_table1):
    cfg = tiny_table1
    train_cfg = train_job(cfg, "mt_x").config
    task, model, process = build_diffusion(train_cfg)
    model.eval()
    rec = Recording(model)
    # --- training: one step of Algorithm 2 on the test images (so both paths see the same data)
    test = load_images(cfg.data, "test")
    encoders = task.encoders(model, "X")
    step = diffusion_step(rec, task, process, test, 0.1, encoders, {"masked": "continuous"}, batch_size=16)
    step(torch.Generator().manual_seed(0), lambda v: v)
    (tr,) = rec.calls
    rec.calls.clear()
    # --- sampling: Table 1's MT-Diffusion row, 5 patches, through the task's own sampler
    smp_cfg = {"row": {"name": "MT-Diffusion", "method": "mt_restore"}, "data": dict(cfg.data), "seed": 0,
               "eval": {"n_images": 16, "composite": False}, "diffusion": {"prior": "paper"},
               "sample": {"steps": cfg.sample.steps, "clip_denoised": True, "batch_size": 16}}
    respaced = sampling_process(train_cfg, 1, cfg.sample.steps)
    arrays = task.sample(smp_cfg, rec, respaced, "5")
    calls = rec.calls
    assert len(calls) == respaced.num_steps

    # timesteps: the respaced steps are the original grid's indices, last first, the dtype training uses
    grid = space_timesteps(int(cfg.diffusion.T), cfg.sample.steps)
    assert [int(c["t"][0]) for c in calls] == grid[::-1]
    assert all(c["t"].dtype == tr["t"].dtype and (c["t"] == c["t"][0]).all() for c in calls)
    assert int(tr["t"].min()) >= 0 and int(tr["t"].max()) < cfg.diffusion.T

    # no class or other keyword input in either path
    assert tr["kw"] == {} and all(c["kw"] == {} for c in calls)

    # the extra channels: the masked test image, zero in the patches, the image elsewhere, the
    # same at every step; in training, the masked copy of z_0 in the same form
    (cond,) = calls[0]["e"]
    assert all(torch.equal(c["e"][0], cond) for c in calls)
    originals = test.images(np.arange(16))
    mask = torch.as_tensor(arrays["mask"])[:, None].float()
    assert torch.equal(cond, apply_mask(originals, mask))
    assert np.array_equal(arrays["masked"], to_uint8(cond))   # what the table shows is what the network saw
    (cond_tr,) = tr["e"]
    z0_tr = test.images(torch.randint(len(test), (16,), generator=torch.Generator().manual_seed(0)))
    assert cond_tr.dtype == cond.dtype and cond_tr.shape == cond.shape
    assert torch.equal(cond_tr, torch.where(cond_tr != 0, z0_tr, 0.0))   # the image, zeros in the patches
    assert float(cond.abs().max()) <= 1 and float(cond_tr.abs().max()) <= 1

    # z at the first sampled step: N(0, I) (prior paper, zero weights), as training's z at t = T-1
    # is sqrt(abar) z_0 + sqrt(1 - abar) eps with abar ~ 0 there
    z_first = calls[0]["z"]
    assert abs(float(z_first.mean())) < 0.1 and abs(float(z_first.std()) - 1) < 0.1


def _marginal(schedule: str, T: int, weights: str, k: np.ndarray):
    """Eq. 4's coefficients at steps k, independently: sqrt(abar), atil, sqrt(1 - abar)."""
    betas = make_betas(schedule, T)
    abar = np.cumprod(1 - betas)
    atil = atil_from_weights(aggregation_weights(weights, T, betas=betas), betas)
    return np.sqrt(abar[k]), atil[k], np.sqrt(1 - abar[k])


@pytest.mark.parametrize("weights,prior", [("zero", "paper"), ("paper", "shifted"), ("bounded", "shifted"),
                                           ("constant", "shifted")])
def test_with_the_ideal_network_the_sampler_feeds_it_the_training_distribution(weights, prior):
    """z at every respaced step ~ eq. 4 given z_0 and e: mean and standard deviation per element
    over 4000 chains, within 5 standard errors."""
    T, steps, n = 200, 8, 4000
    g = torch.Generator().manual_seed(0)
    z0 = torch.tensor([0.7, -0.4, 0.1]).reshape(1, 3, 1, 1).expand(n, 3, 1, 1).contiguous()
    e = torch.tensor([0.0, 0.9, -0.6]).reshape(1, 3, 1, 1).expand(n, 3, 1, 1).contiguous()   # 0 = masked pixel
    full = MTProcess.from_config("cosine", T, weights, 1)
    process = full.respace(space_timesteps(T, steps))
    seen = []

    def ideal(z_t, t, es):
        seen.append((int(t[0]), z_t.clone()))
        k = int(torch.searchsorted(process.timesteps, t[:1]))
        return process.eps_from_z0(z_t, z0, es, k), {}

    algorithm1(ideal, process, z0.shape, [Modality("m", lambda v: v, known=e)], prior=prior, generator=g)
    for t, z in seen:
        a, c, s = (float(v) for v in _marginal("cosine", T, weights, np.array(t)))
        mean = a * z0[0] + c * e[0]
        se = s / np.sqrt(n)
        assert torch.all((z.mean(0) - mean).abs() < 5 * se + 1e-9), (t, z.mean(0).flatten(), mean.flatten())
        assert torch.all((z.std(0) - s).abs() < 5 * s / np.sqrt(2 * n) + 1e-9), t


def test_the_papers_prior_with_the_papers_weights_starts_far_from_the_training_distribution():
    """The known reading, not a defect of the code: Algorithm 1's line 1 (z_T ~ N(0, I)) misses
    eq. 4's offset atil_T e, which is hundreds of times the noise with the paper's weights."""
    a, c, s = _marginal("cosine", 1000, "paper", np.array(990))
    assert c > 500 * s

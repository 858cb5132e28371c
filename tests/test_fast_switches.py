"""The spec's speed switches reach the jobs: unet.use_sdpa / use_checkpoint / channels_last
on every network the jobs build, train.autocast and sample.autocast around the passes; and
the job keys change with them (absent switches leave today's keys alone)."""
from __future__ import annotations

import pytest
import torch

from repro.nn.precision import autocast

from repro.config import compose
from repro.errors import UserError
from repro.jobs.trained import build_diffusion
from repro.jobs.train import diffusion_step
from repro.nn.attention import AttentionBlock
from repro.nn.blocks import ResBlock
from repro.nn.precision import precision_of
from repro.plan import plan, train_job


def _train_config(*overrides: str) -> dict:
    return dict(train_job(compose("3", "tiny", overrides=overrides), "mt_x").config)


def test_unet_switches_reach_every_block():
    config = _train_config("+unet.use_sdpa=true", "+unet.use_checkpoint=true", "+unet.channels_last=true")
    _, model, _ = build_diffusion(config)
    attn = [m for m in model.modules() if isinstance(m, AttentionBlock)]
    res = [m for m in model.modules() if isinstance(m, ResBlock)]
    assert attn and res
    assert all(m.use_sdpa and m.use_checkpoint for m in attn) and all(m.use_checkpoint for m in res)
    convs = [p for p in model.parameters() if p.dim() == 4]
    assert all(p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in convs
               if p.shape[2] * p.shape[3] > 1)
    _, plain, _ = build_diffusion(_train_config())
    assert not any(m.use_sdpa or m.use_checkpoint for m in plain.modules() if isinstance(m, AttentionBlock))


def test_bad_switch_values_are_user_errors():
    with pytest.raises(UserError, match="unet.use_sdpa"):
        build_diffusion(_train_config("+unet.use_sdpa=yes"))
    with pytest.raises(UserError, match="choose none or bf16"):
        precision_of("fp16")
    assert precision_of(None) == precision_of("none") == "fp32" and precision_of("bf16") == "bf16"


def test_keys_change_with_the_switches_and_not_without():
    base = compose("3", "tiny")
    jobs = {r.job.key for r in plan(base)}
    assert jobs == {r.job.key for r in plan(compose("3", "tiny"))}
    bf16 = compose("3", "tiny", overrides=["+train.autocast=bf16"])
    assert train_job(bf16, "mt_x").key != train_job(base, "mt_x").key
    assert train_job(bf16, "mt_x").config["train"]["autocast"] == "bf16"
    sdpa = compose("3", "tiny", overrides=["+unet.use_sdpa=true"])
    assert train_job(sdpa, "mt_x").key != train_job(base, "mt_x").key
    sampled = compose("3", "tiny", overrides=["+sample.autocast=bf16"])
    gen = lambda cfg: plan(cfg)[0].job.deps["samples"]   # noqa: E731
    assert gen(sampled).key != gen(base).key and gen(sampled).deps["model"].key == gen(base).deps["model"].key


class _Data:
    """A tiny labelled image set in the training data's interface."""

    def __init__(self, n: int, res: int):
        g = torch.Generator().manual_seed(1)
        self._images = torch.rand(n, 3, res, res, generator=g) * 2 - 1
        self.labels = torch.randint(0, 10, (n,), generator=g).numpy()

    def __len__(self) -> int:
        return len(self._images)

    def images(self, idx):
        return self._images[idx]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_train_step_under_autocast_keeps_fp32_master_weights(precision):
    """bf16 autocast computes the loss in bf16 matmuls: close to fp32's (bf16 has an 8-bit
    mantissa), not equal; parameters and gradients stay float32."""
    config = _train_config()
    losses = {}
    for p in ("fp32", precision):
        torch.manual_seed(0)
        task, model, process = build_diffusion(config)
        with torch.no_grad():   # ADM zero-initialises output layers: a fresh network's loss reads no matmul
            for q in model.parameters():
                q.add_(0.05 * torch.randn(q.shape))
        enc = task.encoders(model, config["model"]["variant"])
        kinds = {k: v for k, v in task.kinds.items() if k in enc}
        step = diffusion_step(model, task, process, _Data(8, config["data"]["resolution"]), 0.1, enc, kinds, 4)
        with autocast("cpu", p):   # as repro.jobs.harness.fit applies train.autocast around a step
            loss, _ = step(torch.Generator().manual_seed(3), lambda v: v)
        loss = loss.float()
        loss.backward()
        assert loss.dtype == torch.float32
        assert all(q.dtype == torch.float32 and q.grad is not None and q.grad.dtype == torch.float32
                   for q in model.parameters() if q.grad is not None)
        losses[p] = loss.item()
    assert losses[precision] == pytest.approx(losses["fp32"], rel=5e-2)
    if precision == "bf16":
        assert losses["bf16"] != losses["fp32"]

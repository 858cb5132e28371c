"""MT-Diffusion heads and the multi-task model (Section 2.2.3)."""
from __future__ import annotations


import pytest
import torch

from repro.errors import UserError
from repro.nn import (
    EncoderUNetModel,
    MTDiffusionModel,
    OutputBlockHead,
    PooledLinearHead,
    PooledMLPHead,
    UNetModel,
    unet_from_flags,
)

import helpers
from helpers import load_layout, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_unet(**kw) -> UNetModel:
    """Attention at the lowest resolution only."""
    return helpers.tiny_unet(**{"attention_resolutions": (4,), **kw})


def test_output_block_head_is_zero_at_init_and_a_copy_of_the_unet_output_block():
    torch.manual_seed(0)
    head = OutputBlockHead(32, 5)
    h = torch.randn(2, 32, 8, 8)
    assert torch.equal(head(h), torch.zeros(2, 5, 8, 8))
    # Same layout as UNetModel.out: a trained output block copies over and computes the same.
    unet = randomize_(tiny_unet()).eval()
    copy = OutputBlockHead(32, 3)
    copy.load_state_dict(unet.out.state_dict(), strict=True)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([4, 40])
    out, taps = unet(x, t, return_features=True)
    assert torch.allclose(copy(taps["final"]), out)


def test_pooled_heads_against_hand_computation():
    torch.manual_seed(0)
    h = torch.randn(4, 8, 3, 5)
    pooled = h.mean(dim=(2, 3))
    lin = PooledLinearHead(8, 6)
    assert torch.allclose(lin(h), pooled @ lin.fc.weight.T + lin.fc.bias, atol=1e-6)
    mlp = PooledMLPHead(8, 16, 6)
    l1, l2 = mlp.mlp[0], mlp.mlp[2]
    ref = torch.clamp(pooled @ l1.weight.T + l1.bias, min=0) @ l2.weight.T + l2.bias
    assert torch.allclose(mlp(h), ref, atol=1e-6)
    # Pooling: invariant to permuting pixels, sensitive to the pooled mean.
    perm = torch.randperm(15)
    shuffled = h.flatten(2)[..., perm].reshape_as(h)
    assert torch.allclose(mlp(shuffled), mlp(h), atol=1e-6)
    assert not torch.allclose(mlp(h + 1.0), mlp(h))


def test_u_variant_ignores_encodings_and_reads_taps():
    backbone = tiny_unet()
    model = MTDiffusionModel(backbone, {
        "image": (OutputBlockHead(32, 3), "final"),
        "label": (PooledLinearHead(64, 10), "middle"),
        "clip": (PooledMLPHead(64, 24, 12), "middle"),
    })
    randomize_(model).eval()
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([7, 70])
    eps, preds, var = model(z, t, [torch.randn(2, 3, 8, 8)])
    eps2, preds2, _ = model(z, t, [torch.randn(2, 3, 8, 8)])
    eps3, _, _ = model(z, t)
    assert var is None and eps.shape == (2, 3, 8, 8)
    assert torch.equal(eps, eps2) and torch.equal(eps, eps3)
    assert all(torch.equal(preds[k], preds2[k]) for k in preds)
    assert {k: tuple(v.shape) for k, v in preds.items()} == {
        "image": (2, 3, 8, 8), "label": (2, 10), "clip": (2, 12)}
    # Oracle: the backbone's own taps fed through the heads.
    out, taps = backbone(z, t, return_features=True)
    assert torch.allclose(eps, out)
    assert torch.allclose(preds["label"], model.heads["label"](taps["middle"]))
    assert torch.allclose(preds["image"], model.heads["image"](taps["final"]))


def test_x_variant_conditions_on_encodings_and_splits_learned_sigma():
    backbone = tiny_unet(out_channels=6, extra_in_channels=4, num_classes=5)
    model = randomize_(MTDiffusionModel(backbone, {"mask": (OutputBlockHead(32, 3), "final")})).eval()
    assert model.conditions_on_encodings and model.learn_sigma
    z, t, y = torch.randn(2, 3, 8, 8), torch.tensor([7, 70]), torch.tensor([0, 4])
    e = [torch.randn(2, 3, 8, 8), torch.randn(2, 1, 8, 8)]
    eps, preds, var = model(z, t, e, y=y)
    full = backbone(z, t, y=y, cond=torch.cat(e, dim=1))
    assert torch.allclose(eps, full[:, :3]) and torch.allclose(var, full[:, 3:])
    other, _, _ = model(z, t, [torch.randn_like(e[0]), e[1]], y=y)
    assert not torch.allclose(eps, other)
    assert preds["mask"].shape == (2, 3, 8, 8)
    with pytest.raises(ValueError):
        model(z, t, [], y=y)


def test_classifier_head_on_eps_gets_timesteps_and_gradients_reach_everything():
    backbone = tiny_unet()
    torch.manual_seed(0)
    clf = EncoderUNetModel(8, 3, 16, 10, 1, (4,), channel_mult=(1, 2, 2), num_head_channels=8,
                           use_scale_shift_norm=True, resblock_updown=True, pool="attention")
    model = randomize_(MTDiffusionModel(backbone, {"label": (clf, "eps")}))
    z, t = torch.randn(2, 3, 8, 8), torch.tensor([7, 70])
    eps, preds, _ = model(z, t)
    assert torch.allclose(preds["label"], clf(eps, t))
    (eps.square().mean() + torch.nn.functional.cross_entropy(preds["label"], torch.tensor([1, 2]))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_backbone_loads_a_released_checkpoint_inside_the_model():
    layout = load_layout("64x64_diffusion")
    state = {k: torch.full((), float(i)).expand(s) for i, (k, s) in enumerate(layout["state_dict"])}
    with torch.device("meta"):
        backbone = unet_from_flags(layout["flags"])
        model = MTDiffusionModel(backbone, {"image": (OutputBlockHead(192, 3), "final"),
                                            "label": (PooledLinearHead(768, 1000), "middle")})
    model.backbone.load_state_dict(state, strict=True, assign=True)
    assert model.backbone.state_dict()["out.2.bias"].reshape(-1)[0].item() == len(state) - 1
    keys = list(model.state_dict())
    assert keys[: len(state)] == ["backbone." + k for k, _ in layout["state_dict"]]
    assert all(k.startswith("heads.") for k in keys[len(state):])


def test_unknown_tap_is_a_user_error():
    with pytest.raises(UserError):
        MTDiffusionModel(tiny_unet(), {"x": (PooledLinearHead(64, 2), "bottleneck")})

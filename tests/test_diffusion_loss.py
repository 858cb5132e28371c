"""The multi-task loss (eq. 6) against hand computation, and one iteration of Algorithm 2."""

import math

import numpy as np
import pytest
import torch

from repro.diffusion import MTProcess, MultiTaskLoss, training_losses
from repro.errors import UserError

LN3 = math.log(3.0)


def test_parts_by_hand():
    eps_pred = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    eps = torch.zeros(2, 2)
    preds = {
        "label": torch.tensor([[0.0, LN3], [0.0, 0.0]]),           # softmax: [1/4, 3/4], [1/2, 1/2]
        "soft": torch.tensor([[0.0, LN3]]),
        "image": torch.tensor([[1.0, -1.0, 0.5]]),
    }
    targets = {
        "label": torch.tensor([1, 0]),
        "soft": torch.tensor([[0.25, 0.75]]),
        "image": torch.tensor([[0.0, 0.0, 0.0]]),
    }
    kinds = {"label": "categorical", "soft": "categorical", "image": "continuous"}
    total, parts = MultiTaskLoss()(eps_pred, eps, preds, targets, kinds)

    eps_part = (1 + 4 + 9 + 16) / 4
    label_part = (-math.log(3 / 4) - math.log(1 / 2)) / 2
    soft_part = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    image_part = (1 + 1 + 0.25) / 3
    assert parts["eps"].item() == pytest.approx(eps_part)
    assert parts["label"].item() == pytest.approx(label_part)
    assert parts["soft"].item() == pytest.approx(soft_part)
    assert parts["image"].item() == pytest.approx(image_part)
    assert total.item() == pytest.approx(eps_part + 0.1 * (label_part + soft_part + image_part))


@pytest.mark.parametrize("lam", [0.0, 0.1, 2.0])
def test_lambda_weights_the_modality_terms(lam):
    eps_pred, eps = torch.ones(3, 4), torch.zeros(3, 4)
    preds, targets = {"x": torch.full((3, 2), 2.0)}, {"x": torch.zeros(3, 2)}
    total, parts = MultiTaskLoss(lam)(eps_pred, eps, preds, targets, {"x": "continuous"})
    assert parts["x"].item() == pytest.approx(4.0)
    assert total.item() == pytest.approx(1.0 + lam * 4.0)


def test_segmentation_ignores_void_pixels():
    # [B=1, C=2, H=1, W=3]: pixel 0 -> class 1 (p = 3/4), pixel 1 void, pixel 2 -> class 0 (p = 1/2)
    logits = torch.tensor([[[[0.0, 5.0, 0.0]], [[LN3, -5.0, 0.0]]]])
    target = torch.tensor([[[1, 255, 0]]])
    _, parts = MultiTaskLoss()(torch.zeros(1), torch.zeros(1), {"seg": logits}, {"seg": target},
                               {"seg": "categorical"})
    assert parts["seg"].item() == pytest.approx((-math.log(3 / 4) - math.log(1 / 2)) / 2)


def test_bad_kinds_and_missing_targets():
    loss = MultiTaskLoss()
    with pytest.raises(UserError):
        loss(torch.zeros(1), torch.zeros(1), {"x": torch.zeros(1)}, {"x": torch.zeros(1)}, {"x": "ordinal"})
    with pytest.raises(UserError):
        loss(torch.zeros(1), torch.zeros(1), {"x": torch.zeros(1)}, {}, {"x": "continuous"})


class ToyModel(torch.nn.Module):
    """eps = a * z_t; a 3-class head on the mean of z_t; records its inputs."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Parameter(torch.tensor(0.5))
        self.head = torch.nn.Linear(1, 3)
        self.calls = []

    def forward(self, z_t, t, e):
        self.calls.append((z_t.detach().clone(), t.clone(), [x.clone() for x in e]))
        logits = self.head(z_t.mean(dim=(1, 2, 3))[:, None])
        return self.a * z_t, {"label": logits, "mask": z_t}


def test_training_losses_is_one_iteration_of_algorithm2():
    process = MTProcess.from_config("cosine", 50, "paper", 2, respacing=10)
    B, shape = 6, (6, 1, 4, 4)
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(shape, generator=g)
    x = {"label": torch.tensor([0, 1, 2, 0, 1, 2]), "mask": torch.randn(shape, generator=g)}
    proj = torch.nn.Parameter(torch.randn(3, 16, generator=g))  # an encoder with weights: must get no gradient
    encoders = {"label": lambda y: (proj[y]).reshape(shape), "mask": lambda m: m}
    kinds = {"label": "categorical", "mask": "continuous"}
    model = ToyModel()

    total, parts = training_losses(model, process, z0, x, encoders, kinds, lam=0.1,
                                   generator=torch.Generator().manual_seed(7))
    # replay the random draws in Algorithm 2's order: steps, then noise
    replay = torch.Generator().manual_seed(7)
    k = torch.randint(0, process.num_steps, (B,), generator=replay)
    noise = torch.randn(shape, generator=replay)
    e = [proj[x["label"]].reshape(shape).detach(), x["mask"]]
    z_t, t_model, e_seen = model.calls[0]
    torch.testing.assert_close(z_t, process.q_sample(z0, e, k, noise))
    assert torch.equal(t_model, process.timesteps[k])  # the network sees original timesteps
    assert all(not v.requires_grad for v in e_seen)

    logits = model.head(z_t.mean(dim=(1, 2, 3))[:, None])
    expected = (
        ((0.5 * z_t - noise) ** 2).mean()
        + 0.1 * (torch.nn.functional.cross_entropy(logits, x["label"]) + ((z_t - x["mask"]) ** 2).mean())
    )
    torch.testing.assert_close(total, expected)
    assert set(parts) == {"eps", "label", "mask"}

    total.backward()
    assert model.a.grad is not None and model.head.weight.grad is not None
    assert proj.grad is None


def test_training_losses_is_seeded_and_covers_all_steps():
    process = MTProcess.from_config("linear", 100, "paper", 0)
    z0 = torch.randn(64, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    model = lambda z, t, e: (z, {})  # noqa: E731
    def run(seed):
        return training_losses(model, process, z0, {}, {}, {}, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(3)[0], run(3)[0])
    assert not torch.equal(run(3)[0], run(4)[0])
    steps = []
    recorder = lambda z, t, e: (steps.append(t) or (z, {}))  # noqa: E731
    for seed in range(20):
        training_losses(recorder, process, z0, {}, {}, {}, generator=torch.Generator().manual_seed(seed))
    seen = torch.cat(steps)
    assert seen.min() == 0 and seen.max() == 99
    assert np.unique(seen.numpy()).size > 90  # uniform over 100 steps: 1280 draws hit nearly all

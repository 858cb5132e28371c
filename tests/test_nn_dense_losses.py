"""DiffusionMTL's partial-label loss: per-task terms by hand, the T/#labels and auxiliary weights,
no gradient from unlabelled tasks, and the optimiser's poly schedule."""
from __future__ import annotations

import math

import pytest
import torch

from repro.nn.dense_losses import (
    PASCAL_LOSS_WEIGHTS,
    balanced_saliency_loss,
    cross_entropy_loss,
    depth_loss,
    edge_loss,
    labelled_rows,
    normals_loss,
    partial_label_loss,
)
from repro.nn.dense_optim import dense_optimizer, poly_schedule
from repro.nn.dense_trunk import PASCAL_TASK_CHANNELS
from repro.nn.diffusionmtl import build_dense_model

LN2 = math.log(2)
PASCAL = tuple(PASCAL_TASK_CHANNELS)


def _row(values) -> torch.Tensor:  # one image, one row of pixels
    return torch.tensor([[values]])


def test_task_losses_by_hand():
    # CE: logits (0, ln 3) -> p(1) = 3/4; GT 1, 0, ignore -> (ln(4/3) + ln 4) / 2
    logits = torch.tensor([[0.0, math.log(3)]]).T.reshape(1, 2, 1, 1).expand(1, 2, 1, 3)
    assert cross_entropy_loss(logits, _row([1, 0, 255])).item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)
    # saliency: 1 positive, 2 negatives (one ignored pixel): w_pos = 2/3; zero logits -> ln 2 each
    sal = balanced_saliency_loss(torch.zeros(1, 2, 1, 4), _row([1, 0, 0, 255]))
    assert sal.item() == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) * LN2 / 3)
    # normals: (2,0,0) -> (1,0,0) vs (0,0,1): L1 2; exact pixel 0; 255 and zero-vector pixels ignored
    pred = torch.tensor([[2.0, 0, 0], [0, 0, 3], [1, 1, 1], [1, 0, 0]]).T.reshape(1, 3, 1, 4)
    gt = torch.tensor([[0.0, 0, 1], [0, 0, 1], [255, 255, 255], [0, 0, 0]]).T.reshape(1, 3, 1, 4)
    assert normals_loss(pred, gt).item() == pytest.approx(1.0)
    # edge: zero logits, GT 1, 0, 0, ignore -> (0.95 + 0.05 + 0.05) ln 2 / 3
    assert edge_loss(torch.zeros(1, 1, 1, 4), _row([1, 0, 0, 255])).item() == pytest.approx(0.35 * LN2)
    # depth: errors 1 and 3, GT 0 ignored
    assert depth_loss(torch.tensor([[[[1.0, 5.0, 7.0]]]]), _row([2.0, 2.0, 0.0])).item() == pytest.approx(2.0)
    # an image whose target is all ignore contributes 0, not nan
    assert cross_entropy_loss(torch.zeros(1, 7, 1, 2), _row([255, 255])).item() == 0.0


def test_rescaling_auxiliary_term_and_unread_targets():
    tasks, B = ("semseg", "edge"), 2
    labelled = torch.tensor([[True, True], [False, True]])
    rows = labelled_rows(labelled, tasks)
    assert rows["semseg"].tolist() == [0] and rows["edge"].tolist() == [0, 1]
    final = {"semseg": torch.zeros(1, 2, 1, 1), "edge": torch.zeros(2, 1, 1, 1)}
    prelim = {"semseg": torch.zeros(2, 2, 1, 1), "edge": torch.zeros(2, 1, 1, 1)}
    # image 1 has no semseg label: its target is garbage that must never be read
    targets = {"semseg": torch.tensor([1, 99]).reshape(2, 1, 1), "edge": torch.ones(2, 1, 1)}
    weights = {"semseg": 1.0, "edge": 50.0}
    total, parts = partial_label_loss(final, prelim, targets, labelled, tasks, weights)
    image0 = (2 / 2) * (1.0 * 1.5 * LN2 + 50.0 * 1.5 * 0.95 * LN2) / B   # T / n_lab = 1
    image1 = (2 / 1) * (50.0 * 1.5 * 0.95 * LN2) / B                       # T / n_lab = 2
    assert total.item() == pytest.approx(image0 + image1)
    assert parts["semseg"].item() == pytest.approx(1.5 * LN2 / B)
    no_aux, _ = partial_label_loss(final, {}, targets, labelled, tasks, weights)  # baselines: no auxiliary term
    assert no_aux.item() == pytest.approx((image0 + image1) / 1.5)


def test_a_task_without_labels_contributes_no_gradient():
    torch.manual_seed(0)
    model = build_dense_model("feature", PASCAL_TASK_CHANNELS, width=16)
    B, size = 3, 32
    labelled = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 1, 0], [1, 1, 0, 0, 0]], dtype=torch.bool)  # no edge label
    targets = {"semseg": torch.randint(0, 21, (B, size, size)), "human_parts": torch.randint(0, 7, (B, size, size)),
               "sal": torch.randint(0, 2, (B, size, size)), "normals": torch.randn(B, 3, size, size),
               "edge": torch.randint(0, 2, (B, size, size))}
    out = model(torch.randn(B, 3, size, size), rows=labelled_rows(labelled, PASCAL))
    total, parts = partial_label_loss(out.final, out.preliminary, targets, labelled, PASCAL, PASCAL_LOSS_WEIGHTS)
    assert set(parts) == {"semseg", "human_parts", "sal", "normals"}
    total.backward()

    def grads(module):
        return [p.grad for p in module.parameters()]

    edge_params = [model.mtdnet.input_convs["edge"], model.mtdnet.stacks["edge"], model.mtdnet.heads["edge"],
                   model.trunk.features["edge"], model.trunk.predictions["edge"]]
    for module in edge_params:
        assert all(g is None or not g.any() for g in grads(module))
    for task in ("semseg", "normals"):  # labelled tasks do learn, including their preliminary head (auxiliary loss)
        assert model.mtdnet.input_convs[task].weight.grad.abs().sum() > 0
        assert model.trunk.predictions[task].weight.grad.abs().sum() > 0


def test_adam_and_poly_schedule_per_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = dense_optimizer([p])
    assert opt.defaults["lr"] == 2e-5 and opt.defaults["weight_decay"] == 1e-6 and len(opt.param_groups) == 1
    sched = poly_schedule(opt)
    lrs = []
    for _ in range(101):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    for e in (0, 1, 50, 99, 100):
        assert lrs[e] == pytest.approx(2e-5 * (1 - e / 100) ** 0.9, rel=1e-6, abs=1e-15)

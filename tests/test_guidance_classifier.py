"""Classifier guidance through a real ADM classifier and U-Net (Tables 2-3's _g rows)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repro.diffusion import MTProcess
from repro.diffusion import classifier_guidance
from repro.tasks.generation import generate
from repro.tasks.image_label import ImageLabelTask, build_classifier

from helpers import TINY_HEAD, TINY_UNET, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    task = ImageLabelTask(16, 10, variant="adm_cond")
    model = randomize_(task.build_model(TINY_UNET, "adm_cond"), seed=1, scale=0.05).eval().requires_grad_(False)
    classifier = randomize_(build_classifier(TINY_HEAD, 16, 10), seed=2, scale=0.5).eval().requires_grad_(False)
    return task, model, classifier


def test_gradient_matches_finite_differences(nets):
    """grad_z log p(y | z, t) against a central difference along random directions (float32, so 1%)."""
    _, _, classifier = nets
    g = torch.Generator().manual_seed(0)
    z, t, y = torch.randn(3, 3, 16, 16, generator=g), torch.tensor([5, 40, 90]), torch.tensor([1, 4, 7])
    grad = classifier_guidance(classifier, y)(z.clone(), t)
    f = lambda x: F.log_softmax(classifier(x, t), -1)[torch.arange(3), y].double().sum()  # noqa: E731
    for _ in range(3):
        v = torch.randn(z.shape, generator=g)
        h = 1e-2
        numeric = (f(z + h * v) - f(z - h * v)) / (2 * h)
        analytic = (grad.double() * v).sum()
        assert abs(analytic - numeric) <= 1e-2 * abs(numeric) + 1e-4, (analytic, numeric)
    wrong = classifier_guidance(classifier, (y + 1) % 10)(z.clone(), t)
    assert not torch.allclose(wrong, grad)            # the target class matters


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_scale_zero_reproduces_unguided_sampling_exactly(nets, sampler):
    task, model, classifier = nets
    process = MTProcess.from_config("cosine", 100, "paper", 0, respacing=5)
    kw = dict(n=4, batch_size=4, resolution=16, seed=7, sampler=sampler, progress=False)
    plain, y0 = generate(task, "adm_cond", model, process, **kw)
    zero, y1 = generate(task, "adm_cond", model, process, classifier=classifier, guidance_scale=0.0, **kw)
    guided, _ = generate(task, "adm_cond", model, process, classifier=classifier, guidance_scale=3.0, **kw)
    assert torch.equal(plain, zero) and torch.equal(y0, y1)
    assert not torch.equal(plain, guided)

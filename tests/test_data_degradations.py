"""Graded degradations of real images: identity at 0, deterministic, ordered by strength."""

import pytest
import torch

from repro.data.degradations import DEGRADATIONS, degrade
from repro.data.embedded import generate_embedded
from repro.data.pixels import to_model_space
from repro.errors import UserError

STRENGTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@pytest.fixture(scope="module")
def images():
    return to_model_space(generate_embedded(64, seed=3, resolution=32).images)


@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradations_are_ordered_by_strength_under_pixel_mse(images, kind):
    mse = []
    for s in STRENGTHS:
        out = degrade(images, kind, s, torch.Generator().manual_seed(0))
        assert out.shape == images.shape and out.dtype == images.dtype
        assert out.min() >= -1 and out.max() <= 1
        mse.append((out - images).pow(2).mean().item())
    assert mse[0] == 0.0                                   # strength 0 is the identity
    assert all(b > a * 1.1 for a, b in zip(mse, mse[1:])), mse   # and each step degrades visibly more


@pytest.mark.parametrize("kind", ["noise", "shuffle", "blobs"])
def test_degradations_are_deterministic_given_the_generator(images, kind):
    a = degrade(images, kind, 0.5, torch.Generator().manual_seed(1))
    b = degrade(images, kind, 0.5, torch.Generator().manual_seed(1))
    c = degrade(images, kind, 0.5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_shuffle_keeps_the_pixels_and_moves_the_patches(images):
    out = degrade(images, "shuffle", 1.0, torch.Generator().manual_seed(0))
    # a permutation of patches: the multiset of pixel values of every image is unchanged
    torch.testing.assert_close(out.flatten(1).sort(dim=1).values, images.flatten(1).sort(dim=1).values)
    patch = images[:, :, :8, :8].flatten(1)
    # every patch moved at strength 1: almost no top-left patch stays (equal patches of flat sky may)
    assert (out[:, :, :8, :8].flatten(1) == patch).all(dim=1).float().mean() < 0.2


def test_bad_inputs(images):
    with pytest.raises(UserError, match="strength"):
        degrade(images, "blur", 1.5, torch.Generator())
    with pytest.raises(UserError, match="unknown degradation"):
        degrade(images, "jpeg", 0.5, torch.Generator())
    with pytest.raises(UserError, match="float images"):
        degrade(images[0], "noise", 0.5, torch.Generator())


@pytest.mark.slow
def test_embedded_feature_network_orders_the_degradations_by_fid():
    """FID of degraded test images against the training set grows with strength for every kind.

    The network is trained with the smoke profile's recipe, shortened (200 steps of 64 on
    1000 images, ~30 s): the tiny profile's 20 steps leave it near chance (measured: it
    ranks colour blobs at strength 0.5 above strength 1). Strengths 0.75 and 1 of patch
    shuffling score alike (both scramble every object), so the grades are 0, 1/4, 1/2, 1.
    """
    from repro.metrics.feature_net import train_feature_net
    from repro.metrics.fidelity import frechet_distance, gaussian_statistics

    train = generate_embedded(1000, seed=1234, resolution=32, stream=0)
    test = to_model_space(generate_embedded(500, seed=1234, resolution=32, stream=1).images)
    net, _ = train_feature_net(train.images, train.labels, steps=200, batch_size=64, lr=0.002, seed=0,
                               progress=False)
    with torch.no_grad():
        ref = gaussian_statistics(net.pooled(to_model_space(train.images)))
        for kind in sorted(DEGRADATIONS):
            fid = [frechet_distance(*gaussian_statistics(net.pooled(degrade(test, kind, s, torch.Generator().manual_seed(0)))), *ref)
                   for s in (0.0, 0.25, 0.5, 1.0)]
            assert all(b > a for a, b in zip(fid, fid[1:])), (kind, fid)

"""Random patch masks (Section 4.1 / Appendix E.2): geometry, clipping, counts, overlaps, coverage."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from repro.data import apply_mask, random_patch_masks
from repro.errors import UserError


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _union_by_hand(corners, count: int, patch: int, res: int) -> set[tuple[int, int]]:
    """Masked pixels as a set, pixel by pixel: rows x..x+patch-1 and cols y..y+patch-1 inside the image."""
    return {
        (r, c)
        for x, y in corners[:count].tolist()
        for r in range(x, x + patch)
        for c in range(y, y + patch)
        if r < res and c < res
    }


def _masked_set(mask: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, torch.nonzero(mask[0] == 0).tolist()))


def test_hand_checked_single_patch():
    # Replicate the documented draw: corners = randint(0, res, (n, m, 2)) from the same generator.
    res, patch = 8, 3
    mask = random_patch_masks(1, res, 1, _gen(0), patch=patch)
    x, y = torch.randint(0, res, (1, 1, 2), generator=_gen(0))[0, 0].tolist()
    assert mask.shape == (1, 1, res, res) and mask.dtype == torch.float32
    assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
    expected = torch.ones(res, res)
    for r in range(res):
        for c in range(res):
            if x <= r < x + patch and y <= c < y + patch:
                expected[r, c] = 0.0
    assert torch.equal(mask[0, 0], expected)
    assert (mask == 0).sum() == min(patch, res - x) * min(patch, res - y)


def test_fixed_counts_match_union_of_patches():
    n, res, m, patch = 64, 16, 4, 5
    masks = random_patch_masks(n, res, m, _gen(1), patch=patch)
    corners = torch.randint(0, res, (n, m, 2), generator=_gen(1))
    for i in range(n):
        assert _masked_set(masks[i]) == _union_by_hand(corners[i], m, patch, res)


def test_clipping_at_the_border():
    # with patch == res every patch from (x, y) covers exactly [x:res, y:res]: always clipped
    n, res = 50, 12
    masks = random_patch_masks(n, res, 1, _gen(2), patch=res)
    corners = torch.randint(0, res, (n, 1, 2), generator=_gen(2))
    for i in range(n):
        x, y = corners[i, 0].tolist()
        assert (masks[i, 0] == 0).sum() == (res - x) * (res - y)
        assert (masks[i, 0, x:, y:] == 0).all()
    # and corners really do fall near the border at the default patch size
    assert (corners > res - res // 4).any()


def test_count_range_and_overlaps():
    n, res, patch, lo, hi = 300, 32, 8, 2, 6
    masks = random_patch_masks(n, res, (lo, hi), _gen(3), patch=patch)
    g = _gen(3)
    counts = torch.randint(lo, hi + 1, (n,), generator=g)
    corners = torch.randint(0, res, (n, hi, 2), generator=g)
    assert counts.min() == lo and counts.max() == hi, "both ends of U{lo..hi} drawn"
    overlapping = 0
    for i in range(n):
        union = _union_by_hand(corners[i], int(counts[i]), patch, res)
        assert _masked_set(masks[i]) == union
        clipped_areas = sum(len(_union_by_hand(corners[i, k : k + 1], 1, patch, res)) for k in range(int(counts[i])))
        overlapping += clipped_areas > len(union)
    assert overlapping > 0, "the sample must contain overlapping patches (they are allowed)"


def test_count_distribution_is_uniform():
    # 1-pixel patches on a large image: the masked-pixel count is m except for rare collisions
    n, lo, hi = 2000, 0, 10
    masks = random_patch_masks(n, 64, (lo, hi), _gen(4), patch=1)
    m = (masks == 0).flatten(1).sum(1).numpy()
    assert m.min() >= lo and m.max() <= hi
    freq = np.bincount(m, minlength=hi + 1) / n
    np.testing.assert_allclose(freq, 1 / (hi - lo + 1), atol=0.025)
    assert (m == 0).any(), "m = 0 (an unmasked image) is part of the training range"


def test_masked_fraction_grows_with_m_and_matches_analytic_coverage():
    """E[masked fraction] = mean over pixels of 1 - (1 - q)^m, q = P(one patch covers the pixel)."""
    res, patch, n = 64, 16, 200
    # a patch covers pixel r iff its corner x is in [r - patch + 1, r] intersected with [0, res)
    per_axis = np.array([min(r, res - 1) - max(r - patch + 1, 0) + 1 for r in range(res)]) / res
    q = per_axis[:, None] * per_axis[None, :]
    fractions = []
    for seed, m in enumerate((5, 10, 15, 20)):
        measured = (random_patch_masks(n, res, m, _gen(10 + seed)) == 0).float().mean().item()
        expected = (1 - (1 - q) ** m).mean()
        assert abs(measured - expected) < 0.02, (m, measured, expected)
        fractions.append(measured)
    assert all(a < b for a, b in zip(fractions, fractions[1:]))


def test_default_patch_is_a_quarter_of_the_resolution():
    a = random_patch_masks(10, 64, 3, _gen(5))
    b = random_patch_masks(10, 64, 3, _gen(5), patch=16)
    assert torch.equal(a, b)
    assert not torch.equal(a, random_patch_masks(10, 64, 3, _gen(5), patch=15))


def test_deterministic_from_generator():
    assert torch.equal(random_patch_masks(20, 32, (0, 10), _gen(6)), random_patch_masks(20, 32, (0, 10), _gen(6)))
    assert not torch.equal(random_patch_masks(20, 32, (0, 10), _gen(6)), random_patch_masks(20, 32, (0, 10), _gen(7)))


def test_apply_mask_zeroes_exactly_the_masked_pixels():
    images = torch.rand(6, 3, 16, 16, generator=_gen(8)) * 2 - 1
    mask = random_patch_masks(6, 16, 3, _gen(9))
    out = apply_mask(images, mask)
    hidden = (mask == 0).expand_as(images)
    assert (out[hidden] == 0).all()
    assert torch.equal(out[~hidden], images[~hidden])
    with pytest.raises(UserError):
        apply_mask(images, mask[:, :, :8])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(n=-1, resolution=16, num_patches=2),
        dict(n=2, resolution=16, num_patches=-1),
        dict(n=2, resolution=16, num_patches=(5, 2)),
        dict(n=2, resolution=16, num_patches=(-1, 2)),
        dict(n=2, resolution=16, num_patches=2, patch=17),
        dict(n=2, resolution=16, num_patches=2, patch=0),
        dict(n=2, resolution=2, num_patches=2),  # default patch 2 // 4 = 0
    ],
)
def test_invalid_arguments_are_user_errors(kwargs):
    with pytest.raises(UserError):
        random_patch_masks(generator=_gen(0), **kwargs)


def test_zero_masks_and_zero_patches():
    assert random_patch_masks(0, 16, (0, 10), _gen(0)).shape == (0, 1, 16, 16)
    assert (random_patch_masks(3, 16, 0, _gen(0)) == 1).all()

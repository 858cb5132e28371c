"""Random patch masks of the masked-image task (Section 4.1, Appendix E.2).

"We randomly sample patches ... and mask them out with zero pixel-values. These patches are
placed randomly so they might overlap with each other." Training draws m ~ U{0..10} patches of
16x16 on 64x64 images; Table 1 evaluates recovery with m in {5, 10, 15, 20}.

Convention: mask 1 = pixel kept, 0 = pixel masked. A patch with top-left corner (x, y), x the
row and y the column, both uniform over the image, covers rows x : min(x + patch, res) and
columns y : min(y + patch, res), so patches near the border are clipped, not shifted.
"""
from __future__ import annotations

import torch

from repro.errors import UserError


def random_patch_masks(
    n: int,
    resolution: int,
    num_patches: int | tuple[int, int],
    generator: torch.Generator,
    patch: int | None = None,
) -> torch.Tensor:
    """Masks [n, 1, res, res] (float, 1 = kept) with `num_patches` square zero patches each.

    num_patches: an int m gives exactly m patches per image; a pair (lo, hi) draws
    m ~ U{lo, ..., hi} per image (training uses (0, 10)). patch: side length, default res // 4
    (16 at 64, as in the paper).

    Draws, in this order from `generator`: the counts (only for a pair, `torch.randint(lo, hi + 1,
    (n,))`), then the corners `torch.randint(0, res, (n, max_m, 2))`; image i uses its first m_i.
    The masks are on `generator.device`.
    """
    patch = resolution // 4 if patch is None else patch
    device = generator.device  # masks live where their randomness does (CPU or GPU)
    if n < 0:
        raise UserError(f"number of masks must be >= 0, got {n}")
    if resolution <= 0:
        raise UserError(f"mask resolution must be positive, got {resolution}")
    if not 1 <= patch <= resolution:
        raise UserError(f"mask patch side must be in [1, resolution={resolution}], got {patch}")
    if isinstance(num_patches, int):
        if num_patches < 0:
            raise UserError(f"number of mask patches must be >= 0, got {num_patches}")
        counts = torch.full((n,), num_patches, dtype=torch.long, device=device)
    else:
        lo, hi = num_patches
        if not 0 <= lo <= hi:
            raise UserError(f"mask patch count range must satisfy 0 <= lo <= hi, got ({lo}, {hi})")
        counts = torch.randint(lo, hi + 1, (n,), generator=generator, device=device)
    max_m = int(counts.max()) if n else 0
    corners = torch.randint(0, resolution, (n, max_m, 2), generator=generator, device=device)

    pos = torch.arange(resolution, device=device)
    masked = torch.zeros(n, resolution, resolution, dtype=torch.bool, device=device)
    for k in range(max_m):  # one patch slot at a time: memory stays O(n * res^2)
        x, y = corners[:, k, 0, None], corners[:, k, 1, None]
        rows = (pos >= x) & (pos < x + patch)  # [n, res]; slicing past the border clips
        cols = (pos >= y) & (pos < y + patch)
        active = (k < counts)[:, None, None]
        masked |= rows[:, :, None] & cols[:, None, :] & active
    return (~masked).float()[:, None]


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Set masked pixels (mask 0) of `images` [n, C, H, W] in [-1, 1] to 0, the paper's "zero pixel-value"."""
    if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[0] != images.shape[0] or mask.shape[2:] != images.shape[2:]:
        raise UserError(f"mask of shape {tuple(mask.shape)} does not fit images of shape {tuple(images.shape)}: expected [n, 1, H, W]")
    return torch.where(mask > 0.5, images, torch.zeros((), dtype=images.dtype, device=images.device))

"""Graded degradations of real images: reference rows that say what a metric's numbers mean.

A table at the embedded profiles scores its rows with a small feature network trained
here (`repro.metrics.feature_net`), so "FID 52" has no meaning of its own. Scoring real
test images degraded by a known amount gives the scale: real vs real is the floor, and
each degradation traces how the metric grows with its strength. Four kinds, each
destroying a different property of the images:

    blur      Gaussian blur, sigma = strength * MAX_BLUR_SIGMA * size / 32 (fine detail)
    noise     additive Gaussian noise, std = strength * MAX_NOISE_STD (pixel statistics)
    shuffle   a fraction ``strength`` of the 4x4 grid of patches permuted (global layout,
              local statistics kept)
    blobs     blended towards smooth random colour blobs, weight = strength (content:
              at strength 1 nothing of the image is left, the look of an untrained
              diffusion model's samples)

Images are float [N, 3, H, W] in [-1, 1] (`repro.data.pixels`); every function returns
that and is deterministic given its ``generator``. Strength 0 returns the images
unchanged; the strengths are nested where randomness is involved (the same generator
seed moves a superset of patches at a higher strength, draws the same noise and blobs),
so the degradation grows with strength on every image, not only on average.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.transforms.functional import gaussian_blur

from repro.errors import UserError

MAX_BLUR_SIGMA = 2.0     # pixels at 32x32 (scaled with the image size): shapes dissolve at strength 1
MAX_NOISE_STD = 0.5      # a quarter of the [-1, 1] range
SHUFFLE_GRID = 4         # patches per side
BLOB_GRID = 4            # colour lattice of the blobs, upsampled bicubically

Degradation = Callable[[Tensor, float, torch.Generator], Tensor]


def _check(images: Tensor, strength: float) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
        raise UserError(f"degradations take float images [N, 3, H, W] in [-1, 1], got {images.dtype} {tuple(images.shape)}")
    if not 0.0 <= float(strength) <= 1.0:
        raise UserError(f"degradation strength must lie in [0, 1], got {strength}")


def blur(images: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Gaussian blur with sigma proportional to the strength (``generator`` unused: blur is deterministic)."""
    _check(images, strength)
    sigma = float(strength) * MAX_BLUR_SIGMA * images.shape[-1] / 32
    if sigma <= 0:
        return images.clone()
    radius = max(1, int(3 * sigma + 0.5))
    # (reflect padding at the borders; the clamp removes float rounding above 1)
    return gaussian_blur(images, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma]).clamp(-1, 1)


def noise(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Additive Gaussian noise, clipped back into [-1, 1]."""
    _check(images, strength)
    eps = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=generator.device).to(images.device)
    return (images + float(strength) * MAX_NOISE_STD * eps).clamp(-1, 1)


def shuffle(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Move ``round(strength * G^2)`` of the ``G x G`` patches (G = `SHUFFLE_GRID`), per image.

    Each image draws a random order of its patches; the first m of that order are moved
    one place along a cycle, so every chosen patch leaves its place (m = 1 moves nothing:
    a single patch cannot be exchanged with itself).
    """
    _check(images, strength)
    n, c, h, w = images.shape
    g = SHUFFLE_GRID
    if h % g or w % g:
        raise UserError(f"patch shuffling needs image sides divisible by {g}, got {h}x{w}")
    m = round(float(strength) * g * g)
    ph, pw = h // g, w // g
    patches = images.reshape(n, c, g, ph, g, pw).permute(0, 2, 4, 1, 3, 5).reshape(n, g * g, c, ph, pw)
    out = patches.clone()
    for i in range(n):
        order = torch.randperm(g * g, generator=generator, device=generator.device).to(images.device)
        if m >= 2:
            chosen = order[:m]
            out[i, chosen] = patches[i, chosen.roll(1)]
    return out.reshape(n, g, g, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)


def blobs(images: Tensor, strength: float, generator: torch.Generator) -> Tensor:
    """Blend towards smooth random colour blobs: ``(1 - s) x + s b``, ``b`` bicubic-upsampled uniform colours."""
    _check(images, strength)
    n, _, h, w = images.shape
    lattice = torch.rand((n, 3, BLOB_GRID, BLOB_GRID), generator=generator, dtype=images.dtype,
                         device=generator.device).to(images.device) * 2 - 1
    field = F.interpolate(lattice, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)
    s = float(strength)
    return (1 - s) * images + s * field


DEGRADATIONS: dict[str, Degradation] = {"blur": blur, "noise": noise, "shuffle": shuffle, "blobs": blobs}


def degrade(images: Tensor, kind: str, strength: float, generator: torch.Generator) -> Tensor:
    """``images`` degraded by the named kind at ``strength`` in [0, 1]."""
    if kind not in DEGRADATIONS:
        raise UserError(f"unknown degradation {kind!r}; choose one of {', '.join(DEGRADATIONS)}")
    return DEGRADATIONS[kind](images, strength, generator)

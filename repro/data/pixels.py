"""Pixel conventions shared by every dataset: uint8 HWC on disk, float CHW in [-1, 1] for models.

ADM (Dhariwal & Nichol, 2021), which MT-Diffusion builds on, maps a byte b to b / 127.5 - 1;
every loader in `repro.data` uses this one mapping so that "zero pixel-values" (Section 4.1)
means the same thing everywhere: 0.0 in model space, i.e. mid-grey.
"""
from __future__ import annotations

import numpy as np
import torch

from repro.errors import UserError


def to_model_space(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1]."""
    if isinstance(images, np.ndarray) and not images.flags.writeable:
        images = images.copy()  # PIL hands out read-only arrays; torch warns on those
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"expected uint8 pixels, got {x.dtype}")
    return (x.movedim(-1, -3).float() / 127.5 - 1.0).contiguous()


UINT8_ROUNDINGS = ("round", "truncate")


def to_uint8(images: torch.Tensor, rounding: str = "round") -> np.ndarray:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3], clipped; inverse of `to_model_space`.

    ``rounding="round"`` (ours) takes the nearest byte, so ``to_model_space`` then
    ``to_uint8`` gives back every byte. ``"truncate"`` is ADM's export (guided-diffusion's
    sampling scripts scale by 127.5, clamp and cast, and the cast drops the fraction):
    about half of all pixels land one level lower than rounding puts them, a bias of
    -0.5 levels that matters when samples are scored against ADM's reference batches.
    """
    if rounding not in UINT8_ROUNDINGS:
        raise UserError(f"unknown uint8 rounding {rounding!r}; choose one of {', '.join(UINT8_ROUNDINGS)}")
    x = (images.detach().float().cpu() + 1.0) * 127.5
    x = (x.round() if rounding == "round" else x).clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).contiguous().numpy()


def colorize(ids: np.ndarray | torch.Tensor, palette: np.ndarray, ignore_color: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Class-id map [..., H, W] -> RGB uint8 [..., H, W, 3]; ids outside the palette get `ignore_color`.

    Table 4 translates photos into *label images*; they live in RGB space like any photo.
    """
    ids = np.asarray(ids)
    lut = np.tile(np.asarray(ignore_color, dtype=np.uint8), (256, 1))
    lut[: len(palette)] = palette
    return lut[ids.astype(np.int64).clip(0, 255)]


def nearest_palette_ids(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """RGB [..., H, W, 3] -> id of the nearest palette colour [..., H, W] (int64).

    Generated label images are never exactly on the palette; decoding to the nearest colour
    is how pix2pix-style photo->labels scores (per-pixel / per-class accuracy, IoU) are read.
    """
    rgb = np.asarray(rgb, dtype=np.float32)
    pal = np.asarray(palette, dtype=np.float32)
    # |a - b|^2 = |a|^2 - 2 a.b + |b|^2; |a|^2 is the same for every candidate, so drop it.
    score = -2.0 * rgb @ pal.T + (pal**2).sum(axis=1)
    return score.argmin(axis=-1).astype(np.int64)


def image_size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    """A configured image size: int n means n x n (as pix2pix's 256), a pair means (H, W)."""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if h <= 0 or w <= 0:
        raise UserError(f"image size must be positive, got {size}")
    return int(h), int(w)

"""Masked-image restoration: Algorithm 1 conditioned on the masked image, then compositing.

Table 1's MT-Diffusion rows and Table 3's MT-Diffusion* rows restore masked images with
MT-Diffusion-X: the masked image is the known modality of Algorithm 1 (conditional
generation), and `composite` keeps the unmasked pixels exactly ("keeping the unmasked
region unchanged"): ``mask * masked + (1 - mask) * z_0``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from repro.diffusion.process import MTProcess
from repro.diffusion.sampling import Guidance, Modality, algorithm1


def composite(restored: Tensor, masked: Tensor, mask: Tensor) -> Tensor:
    """The known pixels (mask = 1) from the masked image, the rest from the restoration."""
    return mask * masked + (1 - mask) * restored


def restore_masked(model: Callable, process: MTProcess, masked: Tensor, mask: Tensor, name: str,
                   encode: Callable[[Tensor], Tensor], *, generator: torch.Generator, prior: str = "paper",
                   clip_denoised: bool = True, composite_known: bool = True, guidance: Guidance | None = None,
                   guidance_scale: float = 0.0, progress: bool = False) -> Tensor:
    """Restored images in [-1, 1]: Algorithm 1 with modality `name` known (= `masked`), clamped,
    then composited with the known pixels when `composite_known`."""
    z, _ = algorithm1(model, process, tuple(masked.shape), [Modality(name, encode, known=masked)],
                      prior=prior, generator=generator, clip_denoised=clip_denoised, guidance=guidance,
                      guidance_scale=guidance_scale, progress=progress)
    z = z.clamp(-1, 1)
    return composite(z, masked, mask) if composite_known else z

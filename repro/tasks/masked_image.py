"""Masked-image training (Section 4.1, Appendix E.2) and Table 1's restoration rows.

z_0 is the clean image; the one extra modality x is the same image with m random square
patches set to zero, m ~ U{0..10}; its encoder is the identity (it lives in pixel space)
and its decoder a copy of the U-Net output block on the final features.

Variants (Table 2): `adm` (no modality: plain DDPM), `U` (eps(z_t, t): the modality only
enters through the forward aggregation and the loss), `X` (eps(z_t, X, t): the masked
image also enters the network on extra input channels).
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from repro.data.masks import apply_mask, random_patch_masks
from repro.data.pixels import to_uint8
from repro.data.registry import load_images
from repro.diffusion import MTProcess, restore_masked, sdedit
from repro.diffusion.restoration import composite as keep_known
from repro.errors import UserError
from repro.nn import MTDiffusionModel, OutputBlockHead
from repro.tasks.backbone import build_unet
from repro.tasks.base import BatchRunner, Task, register

VARIANTS = ("adm", "U", "X")
MODALITY = "masked"


def identity(x: Tensor) -> Tensor:
    return x


@register
class MaskedImageTask(Task):
    """How a batch of images becomes (z_0, X), which network models it, how rows sample."""

    name = "masked_image"
    variants = VARIANTS
    samples_kind = "restorations"
    kinds = {MODALITY: "continuous"}

    def __init__(self, resolution: int, train_patches: tuple[int, int] = (0, 10), patch_fraction: float = 0.25):
        self.resolution = resolution
        self.train_patches = tuple(train_patches)
        self.patch = max(1, round(resolution * patch_fraction))

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "MaskedImageTask":
        t = cfg["task"]
        return cls(cfg["data"]["resolution"], tuple(t["train_patches"]), t["patch_fraction"])

    # --- training -----------------------------------------------------------------------

    def masks(self, n: int, num_patches: int | tuple[int, int], generator: torch.Generator) -> Tensor:
        return random_patch_masks(n, self.resolution, num_patches, generator, patch=self.patch)

    def batch(self, images: Tensor, labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(z_0, X, extra network inputs): the image, its masked copy, nothing else."""
        masked = apply_mask(images, self.masks(len(images), self.train_patches, generator))
        return images, {MODALITY: masked}, {}

    def encoders(self, model: MTDiffusionModel, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        return {} if variant == "adm" else {MODALITY: identity}

    def n_modalities(self, variant: str) -> int:
        return 0 if variant == "adm" else 1

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> MTDiffusionModel:
        self.check_variant(variant)
        backbone = build_unet(unet_cfg, self.resolution, extra_in_channels=3 if variant == "X" else 0)
        heads = {} if variant == "adm" else {MODALITY: (OutputBlockHead(backbone.model_channels, 3), "final")}
        return MTDiffusionModel(backbone, heads)

    # --- Table 1 ------------------------------------------------------------------------

    def sample_parts(self, cfg: Mapping[str, Any]) -> tuple[str, ...]:
        """One part per mask count of the table."""
        return tuple(str(int(m)) for m in cfg["eval"]["mask_counts"])

    def sample(self, cfg: Mapping[str, Any], model: MTDiffusionModel | None, process: MTProcess | None,
               part: str = "all", batches: BatchRunner | None = None) -> dict[str, np.ndarray]:
        """Restorations of the first `eval.n_images` test images with `part` (a mask count) patches.

        The masks depend only on (seed, m), so every row restores the same masked images.
        Returns original / masked / restored (uint8) and the masks. One generator draws the
        noise of every batch in turn; `batches` (the job's checkpoints) saves its state with
        each batch, so a resumed run continues the same stream.
        """
        row, ev, smp = cfg["row"], cfg["eval"], cfg["sample"]
        m = int(part)
        test = load_images(cfg["data"], "test")
        n = min(ev["n_images"], len(test))
        originals = test.images(np.arange(n))
        masks = self.masks(n, m, torch.Generator().manual_seed(cfg["seed"] * 1000 + m))
        masked = apply_mask(originals, masks)
        g = torch.Generator().manual_seed(cfg["seed"] * 7919 + m)
        chunks = range(0, n, smp["batch_size"])
        method = row["method"]
        # Read only the readings this row's restoration uses (repro.plan keys the job on them):
        # the prior is Algorithm 1's, compositing needs a restoration to paste into.
        prior = cfg["diffusion"]["prior"] if method == "mt_restore" else None
        composite = bool(ev["composite"]) if method != "clean_masked" else False
        run_batch = batches or (lambda tag, b, compute, generator: compute())
        restored = torch.cat([
            run_batch(f"restored-m{m}", b, functools.partial(
                restore, method, masked[lo:lo + smp["batch_size"]], masks[lo:lo + smp["batch_size"]],
                model=model, process=process, generator=g, row=row, prior=prior,
                clip_denoised=smp["clip_denoised"], composite=composite), g)
            for b, lo in enumerate(tqdm(chunks, desc=f"{row['name']} m={m}", dynamic_ncols=True,
                                        disable=len(chunks) < 2))])
        return {"original": to_uint8(originals), "masked": to_uint8(masked), "restored": to_uint8(restored),
                "mask": masks[:, 0].to(torch.uint8).numpy()}


def restore(method: str, masked: Tensor, mask: Tensor, *, model: MTDiffusionModel | None,
            process: MTProcess | None, generator: torch.Generator, row: Mapping[str, Any],
            prior: str | None, clip_denoised: bool, composite: bool) -> Tensor:
    """Restored images in [-1, 1] for one of Table 1's rows (`prior`: Algorithm 1's, mt_restore only)."""
    if method == "clean_masked":      # the reference row: the masked image itself
        return masked
    if method == "sdedit":            # SDEdit- (Meng et al.): noise the masked image, denoise unconditionally
        out, _ = sdedit(model, process, masked, row["strength"], generator, clip_denoised=clip_denoised,
                        progress=True)
        out = out.clamp(-1, 1)
        return keep_known(out, masked, mask) if composite else out
    if method == "mt_restore":        # Algorithm 1, conditional: the masked image is the known modality
        return restore_masked(model, process, masked, mask, MODALITY, identity, generator=generator, prior=prior,
                              clip_denoised=clip_denoised, composite_known=composite, progress=True)
    raise UserError(f"unknown restoration method {method!r} (clean_masked, sdedit, mt_restore)")

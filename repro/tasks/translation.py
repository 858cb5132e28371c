"""Image translation (Appendix E.1): Table 4's photo -> labels and night -> day.

MT-Diffusion (the paper's design): the diffusion space holds the *source* image
(z_0 = E(photo), or E(night)); the translation target (the label map, or the day image)
is the one extra modality x, encoded by the same encoder E (e = E(x)), and decoded from
the U-Net's final features by a copy of its output block (GroupNorm, SiLU, zero-init
conv), trained with eq. 6 (continuous modality: squared error). The noise network is
eps_theta(z_t, t) (MT-Diffusion-U): the target enters only through the aggregation.

Translating a source is Algorithm 1 with the roles of known and unknown swapped: z_0 is
known, the modality is not. Every step draws z_k from eq. 4 given the known z_0 and the
current estimate of x, and re-estimates x with the head (`repro.diffusion.sample_known_z`); the
result is the head's estimate at the last (least noisy) step.

Single-task baseline: a conditional ADM with the same backbone and budget that
generates the target as z_0 with the source concatenated on input channels
(eps_theta(z_t, source, t), as SR3 / Palette), sampled with Algorithm 1 without modalities.

Diffusion space: `space: pixel` (embedded profile: identity encoder, the table caption
says so) or `space: kl-f8` (paper profile: LDM's kl-f8 VAE, `repro.nn.autoencoder`).
Label maps are colourised with the dataset's palette to live in image space; generated
maps are read back as classes by nearest palette colour.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from repro.data.pixels import nearest_palette_ids, to_uint8
from repro.data.registry import Pairs, check_pairs, load_pairs
from repro.diffusion import MTProcess, algorithm1, sample_known_z
from repro.errors import UserError
from repro.nn import MTDiffusionModel, OutputBlockHead
from repro.nn.autoencoder import DEFAULT_SCALE, DOWNSAMPLE, LatentCodec, PixelCodec, kl_f8
from repro.tasks.backbone import build_unet
from repro.tasks.base import Task, register

VARIANTS = ("mt", "single")
METHODS = ("mt_translate", "conditional", "ground_truth")
TARGET = "target"
SPACES = ("pixel", "kl-f8")


def identity(x: Tensor) -> Tensor:
    return x


# ----------------------------------------------------------------------------- models


class ConditionedUNet(nn.Module):
    """The single-task baseline: eps_theta(z_t, source, t), the source on extra input channels.

    Called like MTDiffusionModel (z_t, t, e) and returns (eps, {}, None): it has no modality.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, z_t: Tensor, t: Tensor, e=(), cond: Tensor | None = None):
        return self.backbone(z_t, t, cond=cond), {}, None


# ----------------------------------------------------------------------------- the task


@register
class TranslationTask(Task):
    """How a batch of pairs becomes (z_0, X), which network models it, how rows sample.

    `variant` (from `model.variant`) decides which image is z_0 in `batch`.
    """

    name = "translation"
    variants = VARIANTS
    samples_kind = "translations"
    kinds = {TARGET: "continuous"}

    def __init__(self, data: Mapping[str, Any], source: str, target: str, space: str = "pixel",
                 autoencoder: str | None = None, latent_scale: float = DEFAULT_SCALE, variant: str | None = None):
        if space not in SPACES:
            raise UserError(f"unknown diffusion space {space!r}: choose one of {', '.join(SPACES)}")
        check_pairs(data, source, target)
        self.data, self.source, self.target, self.space = dict(data), source, target, space
        self.variant = variant
        self._autoencoder, self._latent_scale, self._codec = autoencoder, latent_scale, None
        if space == "pixel":
            self._codec, self.channels, self.resolution = PixelCodec(), 3, data["resolution"]
        else:
            if data["resolution"] % DOWNSAMPLE:
                raise UserError(f"data.resolution {data['resolution']} must be a multiple of {DOWNSAMPLE} for kl-f8 latents")
            self.channels, self.resolution = 4, data["resolution"] // DOWNSAMPLE

    @property
    def codec(self) -> PixelCodec | LatentCodec:
        """The map between images and the diffusion space, made on first use: planning a job (its
        key, a dry run) builds the task without reading the autoencoder's weights."""
        if self._codec is None:
            self._codec = LatentCodec(kl_f8(self._autoencoder or ""), self._latent_scale)
        return self._codec

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TranslationTask":
        t = cfg["task"]
        return cls(cfg["data"], t["source"], t["target"], t.get("space", "pixel"), t.get("autoencoder"),
                   t.get("latent_scale", DEFAULT_SCALE), (cfg.get("model") or {}).get("variant"))

    # --- training -----------------------------------------------------------------------

    def training_data(self, cfg: Mapping[str, Any], deps: Mapping[str, Any]) -> Pairs:
        return load_pairs(cfg["data"], "train", self.source, self.target)

    def batch(self, pairs: Mapping[str, Tensor], labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(z_0, X, extra network inputs). MT: (E(source), {target: E(target)}, {});
        single-task: (E(target), {}, {cond: E(source)})."""
        src, tgt = self.codec.encode(pairs["source"]), self.codec.encode(pairs["target"])
        if self.variant == "mt":
            return src, {TARGET: tgt}, {}
        if self.variant == "single":
            return tgt, {}, {"cond": src}
        raise UserError(f"translation variant {self.variant!r} is unknown: choose one of {', '.join(VARIANTS)}")

    def encoders(self, model: nn.Module, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        # E is applied once per batch (`batch`), so in the diffusion space it is the identity.
        return {TARGET: identity} if variant == "mt" else {}

    def n_modalities(self, variant: str) -> int:
        return 1 if variant == "mt" else 0

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> nn.Module:
        self.check_variant(variant)
        if variant == "single":
            return ConditionedUNet(build_unet(unet_cfg, self.resolution, channels=self.channels,
                                              extra_in_channels=self.channels))
        backbone = build_unet(unet_cfg, self.resolution, channels=self.channels)
        return MTDiffusionModel(backbone, {TARGET: (OutputBlockHead(backbone.final_channels, self.channels), "final")})

    # --- Table 4 / night2day ------------------------------------------------------------

    def sample(self, cfg: Mapping[str, Any], model: nn.Module | None, process: MTProcess | None,
               part: str = "all", batches=None) -> dict[str, np.ndarray]:
        """Translations of the first `eval.n_images` test sources: source / truth / generated
        (uint8), and for label maps the true and predicted class ids."""
        row, ev, smp = cfg["row"], cfg["eval"], cfg["sample"]
        method = row["method"]
        if method not in METHODS:
            raise UserError(f"unknown translation method {method!r}: choose one of {', '.join(METHODS)}")
        if method != "ground_truth" and model is None:
            raise UserError(f"row {row['name']!r} uses method {method} but names no model")
        test = load_pairs(cfg["data"], "test", self.source, self.target)
        n = min(ev["n_images"], len(test))
        g = torch.Generator().manual_seed(cfg["seed"] * 7919 + 4)
        clip = bool(smp["clip_denoised"]) and self.space == "pixel"
        saved: dict[str, list] = {"source": [], "truth": [], "generated": [], "ids_true": [], "ids_pred": []}
        chunks = range(0, n, smp["batch_size"])
        for lo in tqdm(chunks, desc=row["name"], dynamic_ncols=True, disable=len(chunks) < 2):
            pairs = test.images(np.arange(lo, min(lo + smp["batch_size"], n)))
            generated = pairs["target"] if method == "ground_truth" else self.codec.decode(
                self._translate(method, self.codec.encode(pairs["source"]), model, process, g, clip))
            saved["source"].append(to_uint8(pairs["source"]))
            saved["truth"].append(to_uint8(pairs["target"]))
            saved["generated"].append(to_uint8(generated))
            if test.palette is not None:
                saved["ids_true"].append(pairs["ids"].numpy().astype(np.uint8))
                saved["ids_pred"].append(nearest_palette_ids(saved["generated"][-1], test.palette).astype(np.uint8))
        return {k: np.concatenate(v) for k, v in saved.items() if v}

    def _translate(self, method: str, src: Tensor, model, process: MTProcess, g: torch.Generator,
                   clip: bool) -> Tensor:
        """Neither path reads Algorithm 1's prior: `sample_known_z` has none, and the baseline
        samples with no modality, where `shifted` is `paper` (N(0, I))."""
        if method == "mt_translate":
            # Algorithm 1, line 3: the unknown modality starts from random data.
            x_init = torch.randn(src.shape, generator=g)
            return sample_known_z(model, process, src, x_init, TARGET, g, clip=clip)
        out, _ = algorithm1(functools.partial(model, cond=src), process, tuple(src.shape), [],
                                  prior="paper", generator=g, clip_denoised=clip)
        return out


    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        check_config(cfg)


def check_config(cfg: Mapping[str, Any]) -> None:
    """Fail before any job starts: unknown pairs or space, missing autoencoder or Inception weights."""
    t = cfg["task"]
    if t.get("space", "pixel") not in SPACES:
        raise UserError(f"task.space {t.get('space')!r} is unknown: choose one of {', '.join(SPACES)}")
    check_pairs(cfg["data"], t["source"], t["target"])
    if cfg["table"]["evaluation"] == "translation_fidelity" and cfg["features"]["kind"] == "pretrained":
        from repro.weights import check_weights

        check_weights("inception", cfg["weights"]["inception"])
    if t.get("space") == "kl-f8":
        from repro.weights import check_weights

        check_weights("autoencoder", t.get("autoencoder"))

"""Image translation (Appendix E.1): Table 4's photo -> labels and night -> day.

MT-Diffusion (the paper's design): the diffusion space holds the *source* image
(z_0 = E(photo), or E(night)); the translation target (the label map, or the day image)
is the one extra modality x, encoded by the same encoder E (e = E(x)), and decoded from
the U-Net's final features by a copy of its output block (GroupNorm, SiLU, zero-init
conv), trained with eq. 6 (continuous modality: squared error). The noise network is
eps_theta(z_t, t) (MT-Diffusion-U): the target enters only through the aggregation.

Translating a source is Algorithm 1 with the roles of known and unknown swapped: z_0 is
known, the modality is not. Every step draws z_k from eq. 4 given the known z_0 and the
current estimate of x, and re-estimates x with the head (`translate_known_z`); the
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from repro.data.pixels import colorize, nearest_palette_ids, to_model_space, to_uint8
from repro.diffusion import MTProcess, ancestral_sample
from repro.errors import UserError
from repro.io import atomic_save_npz
from repro.nn import MTDiffusionModel, OutputBlockHead
from repro.nn.autoencoder import DEFAULT_SCALE, DOWNSAMPLE, LatentCodec, PixelCodec, kl_f8
from repro.report.figures import save_triplet_grid
from repro.tasks.backbone import build_unet

VARIANTS = ("mt", "single")
METHODS = ("mt_translate", "conditional", "ground_truth")
TARGET = "target"
SPACES = ("pixel", "kl-f8")
# which (source, target) each dataset holds
PAIRS = {"embedded": {("photo", "labels"), ("night", "day")},
         "cityscapes": {("photo", "labels")},
         "night2day": {("night", "day")}}


def identity(x: Tensor) -> Tensor:
    return x


# ----------------------------------------------------------------------------- data


@dataclass
class Pairs:
    """One split of (source, target) pairs; `images(idx)` gives {"source", "target"[, "ids"]}.

    Images are float [B, 3, H, W] in [-1, 1]; "ids" (label-map targets only) are the class
    ids [B, H, W] (255 = ignored). `labels` is one integer per pair (train.py's batch index).
    """

    get: Callable[[np.ndarray], dict[str, Tensor]]
    labels: np.ndarray
    name: str
    palette: np.ndarray | None = None   # label-map targets: class colours

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, index) -> dict[str, Tensor]:
        return self.get(np.asarray(index))


def load_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    """The (source, target) pairs of `split` ("train" or "test") of the configured dataset."""
    name = data["name"]
    if (source, target) not in PAIRS.get(name, set()):
        raise UserError(f"dataset {name!r} has no {source} -> {target} pairs: choose one of "
                        f"{sorted(f'{s}->{t}' for s, t in PAIRS.get(name, ()))} or another dataset")
    if name == "embedded":
        return _embedded_pairs(data, split, source, target)
    if name == "cityscapes":
        from repro.data.cityscapes import CITYSCAPES_PALETTE, Cityscapes

        ds = Cityscapes(data["root"], data["test_split"] if split == "test" else "train", data["resolution"])
        return _lazy_pairs(ds, data, split, "cityscapes", CITYSCAPES_PALETTE)
    from repro.data.night2day import Night2Day

    ds = Night2Day(data["root"], data["test_split"] if split == "test" else "train", data["resolution"])
    return _lazy_pairs(ds, data, split, "night2day", None)


def _embedded_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    from repro.data.embedded import SEMANTIC_PALETTE, load_split
    from repro.jobs.datasets import embedded_files

    s = load_split(embedded_files(data, split)[split])
    fields = {"photo": s.images, "day": s.images, "night": s.night}
    src = fields[source]
    if target == "labels":
        ids = s.semantic
        tgt = colorize(ids, SEMANTIC_PALETTE)

        def get(i):
            return {"source": to_model_space(src[i]), "target": to_model_space(tgt[i]),
                    "ids": torch.from_numpy(ids[i].astype(np.int64))}
        return Pairs(get, s.labels, f"embedded-{s.resolution}px-{split}", SEMANTIC_PALETTE)
    tgt = fields[target]
    return Pairs(lambda i: {"source": to_model_space(src[i]), "target": to_model_space(tgt[i])},
                 s.labels, f"embedded-{s.resolution}px-{split}")


def _lazy_pairs(ds, data: Mapping[str, Any], split: str, name: str, palette: np.ndarray | None) -> Pairs:
    """Pairs read from disk per batch (the real datasets do not fit in memory at 256 px)."""
    n = len(ds) if split == "train" or data.get("n_test") is None else min(len(ds), data["n_test"])

    def get(index):
        a, b = zip(*(ds[int(k)] for k in index))
        if palette is None:   # night2day: (night, day)
            return {"source": torch.stack(a), "target": torch.stack(b)}
        ids = torch.stack(b)  # Cityscapes: (photo, train ids)
        return {"source": torch.stack(a), "target": to_model_space(colorize(ids.numpy(), palette)), "ids": ids}
    return Pairs(get, np.zeros(n, dtype=np.int64), f"{name}-{data['resolution']}-{split}", palette)


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


@torch.no_grad()
def translate_known_z(model: Callable, process: MTProcess, z0: Tensor, x_init: Tensor,
                      generator: torch.Generator, clip: bool = False) -> Tensor:
    """Algorithm 1 with z_0 known and the modality x unknown; returns the final estimate of x.

    Step k: z_k ~ q(z_k | z_0, x) (eq. 4, with the current estimate of x, which the identity
    encoder maps to e), then x <- D(z_k) from the head. The chain of estimates ends at
    k = 0, where z_k is the barely noised source. `clip` clamps estimates to [-1, 1]
    (pixel space only).
    """
    x = x_init
    for k in range(process.num_steps - 1, -1, -1):
        noise = torch.randn(z0.shape, generator=generator, dtype=z0.dtype)
        z = process.q_sample(z0, [x], k, noise)
        _, preds, *_ = model(z, process.timesteps[k].repeat(len(z0)), [x])
        x = preds[TARGET].clamp(-1, 1) if clip else preds[TARGET]
    return x


# ----------------------------------------------------------------------------- the task


class TranslationTask:
    """How a batch of pairs becomes (z_0, X), which network models it, how rows sample."""

    kinds = {TARGET: "continuous"}

    def __init__(self, data: Mapping[str, Any], source: str, target: str, space: str = "pixel",
                 autoencoder: str | None = None, latent_scale: float = DEFAULT_SCALE):
        if space not in SPACES:
            raise UserError(f"unknown diffusion space {space!r}: choose one of {', '.join(SPACES)}")
        if (source, target) not in PAIRS.get(data["name"], set()):
            load_pairs(data, "train", source, target)  # raises the UserError that names the choices
        self.data, self.source, self.target, self.space = dict(data), source, target, space
        self.variant: str | None = None
        if space == "pixel":
            self.codec, self.channels, self.resolution = PixelCodec(), 3, data["resolution"]
        else:
            if data["resolution"] % DOWNSAMPLE:
                raise UserError(f"data.resolution {data['resolution']} must be a multiple of {DOWNSAMPLE} for kl-f8 latents")
            self.codec = LatentCodec(kl_f8(autoencoder or ""), latent_scale)
            self.channels, self.resolution = 4, data["resolution"] // DOWNSAMPLE

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "TranslationTask":
        t = cfg["task"]
        task = cls(cfg["data"], t["source"], t["target"], t.get("space", "pixel"), t.get("autoencoder"),
                   t.get("latent_scale", DEFAULT_SCALE))
        task.variant = cfg.get("model", {}).get("variant")
        return task

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

    def encoders(self, variant: str) -> dict:
        # E is applied once per batch (`batch`), so in the diffusion space it is the identity.
        return {TARGET: identity} if variant == "mt" else {}

    def n_modalities(self, variant: str) -> int:
        return 1 if variant == "mt" else 0

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> nn.Module:
        if variant not in VARIANTS:
            raise UserError(f"unknown translation variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        if variant == "single":
            return ConditionedUNet(build_unet(unet_cfg, self.resolution, channels=self.channels,
                                              extra_in_channels=self.channels))
        backbone = build_unet(unet_cfg, self.resolution, channels=self.channels)
        return MTDiffusionModel(backbone, {TARGET: (OutputBlockHead(backbone.final_channels, self.channels), "final")})

    # --- Table 4 / night2day ------------------------------------------------------------

    def sample(self, cfg: Mapping[str, Any], out, model: nn.Module | None, process: MTProcess | None) -> dict[str, Any]:
        """Translate the first `eval.n_images` test sources; save source / truth / generated (uint8),
        class ids for label maps, and a PNG grid of 8 (source, generated, ground truth)."""
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
                self._translate(method, self.codec.encode(pairs["source"]), model, process, g,
                                cfg["diffusion"]["prior"], clip))
            saved["source"].append(to_uint8(pairs["source"]))
            saved["truth"].append(to_uint8(pairs["target"]))
            saved["generated"].append(to_uint8(generated))
            if test.palette is not None:
                saved["ids_true"].append(pairs["ids"].numpy().astype(np.uint8))
                saved["ids_pred"].append(nearest_palette_ids(saved["generated"][-1], test.palette).astype(np.uint8))
        arrays = {k: np.concatenate(v) for k, v in saved.items() if v}
        atomic_save_npz(out / "translations.npz", **arrays)
        first = {k: to_model_space(arrays[k][:8]) for k in ("source", "truth", "generated")}
        save_triplet_grid(out / "grid.png", first["source"], first["generated"], first["truth"],
                          titles=(self.source, f"{self.target}: {row['name']}", f"{self.target}: ground truth"))
        return {"files": {"translations": "translations.npz"}, "n_images": n, "method": method,
                "num_classes": None if test.palette is None else len(test.palette)}

    def _translate(self, method: str, src: Tensor, model, process: MTProcess, g: torch.Generator,
                   prior: str, clip: bool) -> Tensor:
        if method == "mt_translate":
            # Algorithm 1, line 3: the unknown modality starts from random data.
            x_init = torch.randn(src.shape, generator=g)
            return translate_known_z(model, process, src, x_init, g, clip=clip)
        out, _ = ancestral_sample(functools.partial(model, cond=src), process, tuple(src.shape), [],
                                  prior=prior, generator=g, clip_denoised=clip)
        return out


def check_config(cfg: Mapping[str, Any]) -> None:
    """Fail before any job starts: unknown pairs or space, missing autoencoder or Inception weights."""
    t = cfg["task"]
    if t.get("space", "pixel") not in SPACES:
        raise UserError(f"task.space {t.get('space')!r} is unknown: choose one of {', '.join(SPACES)}")
    if (t["source"], t["target"]) not in PAIRS.get(cfg["data"]["name"], set()):
        load_pairs(cfg["data"], "train", t["source"], t["target"])  # raises the UserError
    if cfg["table"]["evaluation"] == "translation_fidelity" and cfg["features"]["kind"] == "pretrained":
        w = Path(str(cfg["weights"]["inception"])).expanduser()
        if not w.is_file():
            raise UserError(f"Inception weights {w} not found: put torch-fidelity's pt_inception-2015-12-05-6726825d.pth "
                            f"there or set weights.inception=/path/to/it")
    if t.get("space") == "kl-f8":
        path = Path(str(t.get("autoencoder") or "")).expanduser()
        if not str(t.get("autoencoder") or "") or not path.exists():
            raise UserError(f"kl-f8 autoencoder weights {path} not found: put LDM's kl-f8 model.ckpt (or a "
                            f"diffusers AutoencoderKL state dict) there or set task.autoencoder=/path/to/it")

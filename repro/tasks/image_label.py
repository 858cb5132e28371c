"""Joint image-label modelling (Section 4.2, Appendix E.3) and ADM's class-conditional baseline.

z_0 is the image; the one extra modality is its class label y. Variants (Table 2):

    adm_cond  ADM class-conditional: eps(z_t, t, y), no modality (the label enters through
              the class embedding, as in Dhariwal & Nichol 2021).
    M         MT-Diffusion-M: label head = one FC layer on the pooled middle block (decoder (b)).
    E         MT-Diffusion-E: label head = ADM's noisy classifier on the U-Net output (decoder
              (c); paper: depth 4, attention pool, attention at 32,16,8).

Label encoder E(y) (Figure 3, encoder choice (3); Appendix E.3: "we use the original U-Net as
the encoder, which takes a noisy image, a label and a timestep as input ... we set the noisy
image and the timestep to be zeros"). Our reading, which the paper leaves open in places:

  * e = sg[ eps_theta(0, t=0, y) ]: the shared U-Net, under stop-gradient, with a zero image,
    timestep 0 and the label through ADM's class embedding. Its output lives in image space,
    so it enters the diffusion exactly like any other e_i: added to z_t by the forward
    aggregation (eq. 3/4), never concatenated to the network input (that is the X variant of
    the masked-image task, not what the paper does for labels).
  * The denoising pass must not see the label (M/E model the label jointly, it is not given),
    so the class embedding has one extra "null" row, index num_classes, used by every
    denoising pass. Only the encoder calls the network with real labels. Because the encoder
    runs under stop-gradient, the real-label rows of the class embedding keep their random
    initialisation: they act as fixed random class codes that the trained network maps into
    image space. (The U-Net's output conv is zero-initialised, so e = 0 at step 0 and grows
    as training moves that conv.)
  * A dropped label (IGNORE_INDEX, used by label dropout and single-task finetuning) encodes
    to e = 0: with no modality offset the process is plain DDPM, the "pure generation" path.
  * At sampling time (Algorithm 1, label unknown) the head's logits are fed back through the
    encoder as their argmax class.

Starred variants (M*, E*): `label_dropout` p drops the label of a fixed fraction p of every
batch (at least one label is kept while p < 1, so the cross-entropy is defined), like the
condition dropout of classifier-free guidance: the shared U-Net also learns pure generation.
Single-task finetuning afterwards is `repro.tasks.generation.SingleTaskGeneration`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from repro.data.registry import num_classes
from repro.diffusion.loss import IGNORE_INDEX
from repro.errors import UserError
from repro.nn import EncoderUNetModel, MTDiffusionModel, PooledLinearHead, UNetModel
from repro.tasks.backbone import build_unet
from repro.tasks.base import Task, register

VARIANTS = ("adm_cond", "M", "E")
MODALITY = "label"


class UNetLabelEncoder:
    """E(y) = sg[eps_theta(0, 0, y)] of the shared backbone (see the module docstring).

    Accepts class indices [B] (IGNORE_INDEX -> e = 0) or class scores [B, C] (their argmax).
    """

    def __init__(self, backbone: UNetModel, resolution: int):
        self.backbone, self.resolution = backbone, resolution

    @torch.no_grad()
    def __call__(self, y: Tensor) -> Tensor:
        if y.is_floating_point():          # head logits fed back at sampling time
            y = y.argmax(dim=1)
        y = y.long()
        dropped = y == IGNORE_INDEX
        b = self.backbone
        zeros = torch.zeros(len(y), b.in_channels, self.resolution, self.resolution, device=y.device)
        t0 = torch.zeros(len(y), dtype=torch.long, device=y.device)
        out = b(zeros, t0, y=torch.where(dropped, torch.zeros_like(y), y))[:, : b.in_channels]
        return torch.where(dropped[:, None, None, None], torch.zeros_like(out), out)


@register
class ImageLabelTask(Task):
    """How a batch of labelled images becomes (z_0, X, network inputs); which network models it.

    `variant` (from `model.variant`) decides how `batch` hands the label to the network.
    """

    name = "image_label"
    variants = VARIANTS
    kinds = {MODALITY: "categorical"}

    def __init__(self, resolution: int, num_classes: int, head: Mapping[str, Any] | None = None,
                 label_dropout: float = 0.0, variant: str = "adm_cond"):
        if not 0.0 <= label_dropout <= 1.0:
            raise UserError(f"label_dropout must be in [0, 1], got {label_dropout}")
        self.resolution, self.num_classes = resolution, num_classes
        self.head_cfg = dict(head or {})
        self.label_dropout = label_dropout
        self.variant = variant      # batch() needs it

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "ImageLabelTask":
        model = cfg.get("model") or {}
        return cls(cfg["data"]["resolution"], num_classes(cfg["data"]), cfg["task"].get("head"),
                   float(model.get("label_dropout", 0.0)), model.get("variant", "adm_cond"))

    @property
    def null_label(self) -> int:
        """Index of the extra class-embedding row that every denoising pass of M/E receives."""
        return self.num_classes

    # --- training -----------------------------------------------------------------------

    def drop_labels(self, labels: Tensor, generator: torch.Generator) -> Tensor:
        """Labels with round(p * B) of them (a random subset, at least one kept if p < 1) dropped."""
        n = len(labels)
        k = round(self.label_dropout * n)
        if self.label_dropout < 1.0:
            k = min(k, n - 1)
        if k <= 0:
            return labels
        drop = torch.randperm(n, generator=generator)[:k]
        out = labels.clone()
        out[drop] = IGNORE_INDEX
        return out

    def batch(self, images: Tensor, labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """adm_cond: (images, {}, {y: labels}); M/E: (images, {label: labels}, {y: null})."""
        labels = labels.long()
        if self.variant == "adm_cond":
            return images, {}, {"y": labels}
        null = torch.full_like(labels, self.null_label)
        return images, {MODALITY: self.drop_labels(labels, generator)}, {"y": null}

    def encoders(self, model: MTDiffusionModel, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        """adm_cond: none; M/E: the label encoder, `model`'s own U-Net (see the module docstring)."""
        if variant == "adm_cond":
            return {}
        return {MODALITY: UNetLabelEncoder(model.backbone, self.resolution)}

    def n_modalities(self, variant: str) -> int:
        return 0 if variant == "adm_cond" else 1

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> MTDiffusionModel:
        self.check_variant(variant)
        # adm_cond keeps exactly num_classes rows so that released checkpoints load strictly.
        classes = self.num_classes if variant == "adm_cond" else self.num_classes + 1
        backbone = build_unet(unet_cfg, self.resolution, num_classes=classes,
                              learn_sigma=bool(unet_cfg.get("learn_sigma", False)))
        heads: dict[str, tuple[nn.Module, str]] = {}
        if variant == "M":
            heads[MODALITY] = (PooledLinearHead(backbone.middle_channels, self.num_classes), "middle")
        elif variant == "E":
            heads[MODALITY] = (build_classifier(self.head_cfg, self.resolution, self.num_classes,
                                                in_channels=backbone.in_channels), "eps")
        return MTDiffusionModel(backbone, heads)

    def network_inputs(self, variant: str, labels: Tensor) -> dict[str, Tensor]:
        """Extra keyword inputs of a denoising pass at sampling time (the class, or the null class)."""
        if variant == "adm_cond":
            return {"y": labels.long()}
        return {"y": torch.full_like(labels.long(), self.null_label)}


def build_classifier(cfg: Mapping[str, Any], resolution: int, num_classes: int,
                     in_channels: int = 3) -> EncoderUNetModel:
    """ADM's noisy classifier from a `classifier:` config block (width, depth, attention, pool).

    `attention_resolutions` are pixel resolutions as in guided-diffusion's flags; the channel
    multipliers default to ADM's choice for the resolution.
    """
    from repro.nn.adm_flags import parse_channel_mult

    if not cfg:
        raise UserError("the classifier needs a config block (width, depth, attention_resolutions, pool, "
                        "num_head_channels); add `classifier:` to the spec")
    return EncoderUNetModel(
        image_size=resolution,
        in_channels=in_channels,
        model_channels=cfg["width"],
        out_channels=num_classes,
        num_res_blocks=cfg["depth"],
        attention_resolutions=tuple(resolution // r for r in cfg["attention_resolutions"]),
        channel_mult=parse_channel_mult(cfg.get("channel_mult") or "", resolution),
        num_head_channels=cfg.get("num_head_channels", 64),
        use_scale_shift_norm=cfg.get("use_scale_shift_norm", True),
        resblock_updown=cfg.get("resblock_updown", True),
        pool=cfg.get("pool", "attention"),
    )

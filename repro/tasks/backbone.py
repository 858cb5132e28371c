"""The ADM U-Net as a config block describes it (profiles' `unet:` section)."""
from __future__ import annotations

from typing import Any, Mapping

from repro.nn import UNetModel


def build_unet(cfg: Mapping[str, Any], resolution: int, *, extra_in_channels: int = 0,
               num_classes: int | None = None, learn_sigma: bool = False, channels: int = 3,
               encoder_channels: int | None = None) -> UNetModel:
    """ADM U-Net; `attention_resolutions` are pixel resolutions as in guided-diffusion's flags.

    `channels`: channels of the diffusion space (3 for pixels, 4 for kl-f8 latents);
    `encoder_channels`: width of a cross-attention context (None: no cross-attention).
    """
    return UNetModel(
        image_size=resolution,
        in_channels=channels,
        extra_in_channels=extra_in_channels,
        model_channels=cfg["model_channels"],
        out_channels=channels * (2 if learn_sigma else 1),
        num_res_blocks=cfg["num_res_blocks"],
        attention_resolutions=tuple(resolution // r for r in cfg["attention_resolutions"]),
        dropout=cfg["dropout"],
        channel_mult=tuple(cfg["channel_mult"]),
        num_classes=num_classes,
        num_heads=cfg.get("num_heads", 4),
        num_head_channels=cfg.get("num_head_channels", -1),
        use_scale_shift_norm=cfg["use_scale_shift_norm"],
        resblock_updown=cfg["resblock_updown"],
        use_new_attention_order=cfg.get("use_new_attention_order", False),
        encoder_channels=encoder_channels,
    )

"""ADM's noisy classifier p_phi(y | x_t, t) (Dhariwal & Nichol 2021, Section 4).

The encoder half of the U-Net (with the timestep embedding, no class embedding) followed
by a pooling head. Used for classifier guidance (the "_g" rows of the MT-Diffusion
tables) and as MT-Diffusion-E's label head on the U-Net output (Section 2.2.3, decoder
choice (c): depth 4, attention pool, attention at 32,16,8). Parameter names, shapes and
order equal those of the released 64x64/128x128 classifier checkpoints.
"""
from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from repro.errors import UserError
from repro.nn.adm_flags import parse_attention_ds, parse_bool, parse_channel_mult
from repro.nn.attention import AttentionBlock, AttentionPool2d
from repro.nn.blocks import EmbedSequential, ResBlock, normalization, timestep_embedding, zero_module
from repro.nn.unet import NUM_IMAGENET_CLASSES, build_down_path, convert_convs_to_fp16, time_embed_mlp

POOLS = ("adaptive", "attention", "spatial", "spatial_v2")


class EncoderUNetModel(nn.Module):
    """Encoder half of the ADM U-Net with a pooled output: logits (B, out_channels).

    pool: "adaptive" (norm, SiLU, global average, zero 1x1 conv), "attention" (norm,
    SiLU, AttentionPool2d), "spatial" / "spatial_v2" (MLP on the spatial means of every
    encoder block's output). Other arguments (use_sdpa included) as UNetModel.
    """

    # MTDiffusionModel calls heads that declare this with (features, t).
    takes_timesteps = True

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: tuple[float, ...] = (1, 2, 4, 8),
        conv_resample: bool = True,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str = "adaptive",
        use_sdpa: bool = False,
    ):
        super().__init__()
        if pool not in POOLS:
            raise UserError(f"unknown classifier pool {pool!r}; choose one of {', '.join(POOLS)}")
        self.model_channels = model_channels
        self.pool = pool
        self.dtype = torch.float16 if use_fp16 else torch.float32
        emb_dim = 4 * model_channels

        def res(ch: int, out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch, emb_dim, dropout, out_channels=out, use_checkpoint=use_checkpoint,
                            use_scale_shift_norm=use_scale_shift_norm, up=up, down=down)

        def attn(ch: int) -> AttentionBlock:
            return AttentionBlock(ch, num_heads=num_heads, num_head_channels=num_head_channels,
                                  use_checkpoint=use_checkpoint, use_new_attention_order=use_new_attention_order,
                                  use_sdpa=use_sdpa)

        self.time_embed = time_embed_mlp(model_channels)
        self.input_blocks, chans, ch, ds = build_down_path(
            in_channels, model_channels, channel_mult, num_res_blocks, attention_resolutions,
            res, attn, resblock_updown, conv_resample,
        )
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch), res(ch, ch))

        if pool == "adaptive":
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                zero_module(nn.Conv2d(ch, out_channels, 1)), nn.Flatten(),
            )
        elif pool == "attention":
            if num_head_channels == -1:
                raise UserError("classifier pool 'attention' needs num_head_channels (ADM uses 64)")
            self.out = nn.Sequential(
                normalization(ch), nn.SiLU(),
                AttentionPool2d(image_size // ds, ch, num_head_channels, out_channels, use_sdpa=use_sdpa),
            )
        else:
            # Spatial means of every encoder block's output plus the middle block's.
            feature_size = sum(chans) + ch
            if pool == "spatial":
                self.out = nn.Sequential(nn.Linear(feature_size, 2048), nn.ReLU(), nn.Linear(2048, out_channels))
            else:
                self.out = nn.Sequential(
                    nn.Linear(feature_size, 2048), normalization(2048), nn.SiLU(), nn.Linear(2048, out_channels)
                )

    def convert_to_fp16(self) -> None:
        """Run the trunk in half precision (guided-diffusion's use_fp16 path)."""
        self.dtype = torch.float16   # the trunk's input is cast to it in forward
        convert_convs_to_fp16(self.input_blocks)
        convert_convs_to_fp16(self.middle_block)

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        """x (B, in_channels, H, W) noisy input, timesteps (B,) -> logits (B, out_channels)."""
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        h, means = x.type(self.dtype), []
        for block in self.input_blocks:
            h = block(h, emb)
            means.append(h.type(x.dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if self.pool.startswith("spatial"):
            means.append(h.type(x.dtype).mean(dim=(2, 3)))
            return self.out(torch.cat(means, dim=-1))
        return self.out(h.type(x.dtype))


# guided-diffusion's defaults for classifier flags a caller leaves out (script_util.py).
CLASSIFIER_FLAG_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "classifier_use_fp16": False,
    "classifier_width": 128,
    "classifier_depth": 2,
    "classifier_attention_resolutions": "32,16,8",
    "classifier_use_scale_shift_norm": True,
    "classifier_resblock_updown": True,
    "classifier_pool": "attention",
}


def classifier_from_flags(flags: Mapping[str, Any], **extra: Any) -> EncoderUNetModel:
    """Build the noisy classifier from guided-diffusion's classifier flags.

    Like guided-diffusion: 3 input channels, 1000 classes, 64 channels per attention
    head. `extra` overrides EncoderUNetModel arguments (e.g. in_channels, out_channels,
    num_head_channels for narrow test models). Non-classifier keys are ignored.
    """
    f = {**CLASSIFIER_FLAG_DEFAULTS, **flags}
    image_size = int(f["image_size"])
    args: dict[str, Any] = dict(
        image_size=image_size,
        in_channels=3,
        model_channels=int(f["classifier_width"]),
        out_channels=NUM_IMAGENET_CLASSES,
        num_res_blocks=int(f["classifier_depth"]),
        attention_resolutions=parse_attention_ds(f["classifier_attention_resolutions"], image_size),
        channel_mult=parse_channel_mult(f.get("classifier_channel_mult", ""), image_size),
        use_fp16=parse_bool(f, "classifier_use_fp16"),
        num_head_channels=64,
        use_scale_shift_norm=parse_bool(f, "classifier_use_scale_shift_norm"),
        resblock_updown=parse_bool(f, "classifier_resblock_updown"),
        pool=str(f["classifier_pool"]),
    )
    unknown = set(extra) - set(inspect.signature(EncoderUNetModel).parameters)
    if unknown:
        raise UserError(f"unknown classifier argument(s) {sorted(unknown)}; see repro.nn.EncoderUNetModel")
    args.update(extra)
    return EncoderUNetModel(**args)

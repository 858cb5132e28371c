"""The ADM U-Net (Dhariwal & Nichol 2021), the shared backbone eps_theta of MT-Diffusion.

MT-Diffusion (Chen et al., ICLR 2024, Section 2.2.3) reads two intermediate outputs of
this network ("taps") with its modality heads: the middle-block output and the features
right before the output block. MT-Diffusion-X feeds the modality encodings e_i as extra
input channels: eps_theta(z_t, X, t) with X concatenated to z_t on channels.

Parameter names, shapes and order equal those of the released guided-diffusion
checkpoints (64x64_diffusion.pt, 128x128_diffusion.pt, ...), so they load with
strict=True; the extensions (extra input channels, cross-attention) add parameters
only when switched on.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from repro.errors import UserError
from repro.nn.adm_flags import parse_attention_ds, parse_bool, parse_channel_mult
from repro.nn.attention import AttentionBlock
from repro.nn.blocks import (
    Downsample,
    EmbedSequential,
    ResBlock,
    Upsample,
    normalization,
    timestep_embedding,
    zero_module,
)

ResFactory = Callable[..., ResBlock]  # (channels, out_channels, up=..., down=...) -> ResBlock
AttnFactory = Callable[[int], AttentionBlock]  # channels -> AttentionBlock


def build_down_path(
    in_channels: int,
    model_channels: int,
    channel_mult: tuple[float, ...],
    num_res_blocks: int,
    attention_ds: Iterable[int],
    res: ResFactory,
    attn: AttnFactory,
    resblock_updown: bool,
    conv_resample: bool,
) -> tuple[nn.ModuleList, list[int], int, int]:
    """The encoder half shared by the U-Net and the classifier.

    One input conv, then per level `num_res_blocks` residual blocks (with attention where
    the downsample rate is in `attention_ds`) and a x2 downsampling between levels.
    Returns (blocks, channels after each block, final channels, final downsample rate).
    """
    attention_ds = set(attention_ds)
    ch = int(channel_mult[0] * model_channels)
    blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
    chans, ds = [ch], 1
    for level, mult in enumerate(channel_mult):
        for _ in range(num_res_blocks):
            layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
            ch = int(mult * model_channels)
            if ds in attention_ds:
                layers.append(attn(ch))
            blocks.append(EmbedSequential(*layers))
            chans.append(ch)
        if level != len(channel_mult) - 1:
            down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample)
            blocks.append(EmbedSequential(down))
            chans.append(ch)
            ds *= 2
    return blocks, chans, ch, ds


def time_embed_mlp(model_channels: int) -> nn.Sequential:
    """Linear-SiLU-Linear on the sinusoidal embedding, width 4 * model_channels (ADM)."""
    dim = 4 * model_channels
    return nn.Sequential(nn.Linear(model_channels, dim), nn.SiLU(), nn.Linear(dim, dim))


def convert_convs_to_fp16(module: nn.Module) -> None:
    """Cast conv weights to half, as guided-diffusion's fp16 mode does.

    Norms and linears stay fp32 (guided-diffusion converts Conv1d/2d/3d only): the
    timestep-embedding projections of the res blocks run in fp32 and their output is cast
    to the trunk's dtype, and every group norm computes in fp32 (GroupNorm32).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            m.half()


class UNetModel(nn.Module):
    """ADM U-Net: eps_theta(x_t, t[, y][, cond][, context]).

    Arguments as guided-diffusion's UNetModel (2-D only); `attention_resolutions` holds
    downsample rates (image_size // resolution). Additions for MT-Diffusion:
    `extra_in_channels` (channels of `cond` concatenated to x, MT-Diffusion-X) and
    `encoder_channels` (width of a cross-attention context, None = no cross-attention).
    Speed switches that change no parameter (defaults = ADM's computation): `use_sdpa`
    (fused attention kernel, repro.nn.attention.attend), `use_checkpoint` (recompute the
    res/attention blocks in backward), convert_to_fp16() (ADM's fp16 trunk, as use_fp16 does there).
    """

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
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        extra_in_channels: int = 0,
        encoder_channels: int | None = None,
        use_sdpa: bool = False,
    ):
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        self.image_size = image_size
        self.in_channels = in_channels
        self.extra_in_channels = extra_in_channels
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.num_classes = num_classes
        self.encoder_channels = encoder_channels
        self.dtype = torch.float16 if use_fp16 else torch.float32
        attention_ds = set(attention_resolutions)
        emb_dim = 4 * model_channels

        def res(ch: int, out: int, up: bool = False, down: bool = False) -> ResBlock:
            return ResBlock(ch, emb_dim, dropout, out_channels=out, use_checkpoint=use_checkpoint,
                            use_scale_shift_norm=use_scale_shift_norm, up=up, down=down)

        def attn(ch: int, heads: int = num_heads) -> AttentionBlock:
            return AttentionBlock(ch, num_heads=heads, num_head_channels=num_head_channels,
                                  use_checkpoint=use_checkpoint, use_new_attention_order=use_new_attention_order,
                                  encoder_channels=encoder_channels, use_sdpa=use_sdpa)

        self.time_embed = time_embed_mlp(model_channels)
        if num_classes is not None:
            # The class embedding is added to the timestep embedding (ADM's class conditioning).
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        self.input_blocks, chans, ch, ds = build_down_path(
            in_channels + extra_in_channels, model_channels, channel_mult, num_res_blocks,
            attention_ds, res, attn, resblock_updown, conv_resample,
        )
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch), res(ch, ch))
        self.middle_channels = ch

        # Decoder: each block takes the previous features concatenated with one skip.
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [res(ch + chans.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        self.final_channels = ch

        # Zero-initialised output conv: eps_theta = 0 at init.
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, out_channels, 3, padding=1)))

    def convert_to_fp16(self) -> None:
        """Run the trunk in half precision (guided-diffusion's use_fp16 path)."""
        self.dtype = torch.float16   # the trunk's input is cast to it in forward
        for part in (self.input_blocks, self.middle_block, self.output_blocks):
            convert_convs_to_fp16(part)

    def forward(
        self,
        x: Tensor,
        timesteps: Tensor,
        y: Tensor | None = None,
        cond: Tensor | None = None,
        return_features: bool = False,
        context: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """x (B, in_channels, H, W), timesteps (B,), y (B,) class labels if class-conditional,
        cond (B, extra_in_channels, H, W) concatenated to x, context (B, L, encoder_channels).

        Returns the output (B, out_channels, H, W), and with return_features also the taps
        {"middle": middle-block output, "final": input of the output block}.
        """
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y exactly when the model is class-conditional")
        if cond is not None:
            x = torch.cat([x, cond], dim=1)
        if x.shape[1] != self.in_channels + self.extra_in_channels:
            raise ValueError(
                f"expected {self.in_channels} + {self.extra_in_channels} (cond) input channels, got {x.shape[1]}"
            )
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        if y is not None:
            emb = emb + self.label_emb(y)

        h, skips = x.type(self.dtype), []
        for block in self.input_blocks:
            h = block(h, emb, context)
            skips.append(h)
        h = self.middle_block(h, emb, context)
        middle = h
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context)
        h = h.type(x.dtype)
        out = self.out(h)
        if return_features:
            return out, {"middle": middle.type(x.dtype), "final": h}
        return out


# guided-diffusion's defaults for model flags a caller leaves out (script_util.py).
UNET_FLAG_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "num_heads": 4,
    "num_heads_upsample": -1,
    "num_head_channels": -1,
    "attention_resolutions": "16,8",
    "channel_mult": "",
    "dropout": 0.0,
    "class_cond": False,
    "use_checkpoint": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
    "learn_sigma": False,
}

NUM_IMAGENET_CLASSES = 1000


def unet_from_flags(flags: Mapping[str, Any], **extra: Any) -> UNetModel:
    """Build the U-Net from guided-diffusion script flags (as in the released-model docs).

    Missing flags take guided-diffusion's defaults; keys that are not model flags (e.g.
    diffusion_steps) are ignored. `extra` overrides UNetModel arguments, e.g.
    extra_in_channels (MT-Diffusion-X), num_classes, in_channels, encoder_channels.
    learn_sigma doubles the output channels (eps and the variance interpolation v).
    """
    f = {**UNET_FLAG_DEFAULTS, **flags}
    image_size = int(f["image_size"])
    in_channels = int(extra.pop("in_channels", 3))
    args: dict[str, Any] = dict(
        image_size=image_size,
        in_channels=in_channels,
        model_channels=int(f["num_channels"]),
        out_channels=in_channels * (2 if parse_bool(f, "learn_sigma") else 1),
        num_res_blocks=int(f["num_res_blocks"]),
        attention_resolutions=parse_attention_ds(f["attention_resolutions"], image_size),
        dropout=float(f["dropout"]),
        channel_mult=parse_channel_mult(f["channel_mult"], image_size),
        num_classes=NUM_IMAGENET_CLASSES if parse_bool(f, "class_cond") else None,
        use_checkpoint=parse_bool(f, "use_checkpoint"),
        use_fp16=parse_bool(f, "use_fp16"),
        num_heads=int(f["num_heads"]),
        num_head_channels=int(f["num_head_channels"]),
        num_heads_upsample=int(f["num_heads_upsample"]),
        use_scale_shift_norm=parse_bool(f, "use_scale_shift_norm"),
        resblock_updown=parse_bool(f, "resblock_updown"),
        use_new_attention_order=parse_bool(f, "use_new_attention_order"),
    )
    unknown = set(extra) - set(inspect.signature(UNetModel).parameters)
    if unknown:
        raise UserError(f"unknown U-Net argument(s) {sorted(unknown)}; see repro.nn.UNetModel for the accepted ones")
    args.update(extra)
    return UNetModel(**args)


def pad_input_conv(state_dict: Mapping[str, Tensor], extra_in_channels: int) -> dict[str, Tensor]:
    """A released checkpoint adapted to a backbone with `extra_in_channels` (MT-Diffusion-X).

    The input conv gets zero weights for the extra channels, so the adapted network computes
    exactly the released one until training moves those weights.
    """
    sd = dict(state_dict)
    w = sd["input_blocks.0.0.weight"]
    pad = torch.zeros(w.shape[0], extra_in_channels, *w.shape[2:], dtype=w.dtype, device=w.device)
    sd["input_blocks.0.0.weight"] = torch.cat([w, pad], dim=1)
    return sd

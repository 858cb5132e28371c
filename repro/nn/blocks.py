"""Building blocks of the ADM U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs").

Timestep embedding, group norm computed in float32, resampling layers and the residual
block with scale-shift norm ("AdaGN", ADM Section 3). Module attribute names follow the
released guided-diffusion checkpoints, so their state dicts load with strict=True.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


class GroupNorm32(nn.GroupNorm):
    """Group norm that always computes in float32 (fp16 statistics overflow), returns input dtype."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def normalization(channels: int) -> GroupNorm32:
    """ADM's norm layer: 32 groups.

    Channel counts that 32 does not divide (only the tiny test profiles have them) use the
    largest common divisor instead; the parameters (per-channel affine) are the same either
    way, so checkpoint layouts do not depend on this choice.
    """
    return GroupNorm32(math.gcd(32, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter: ADM zero-initialises the last layer of each residual branch and
    the output conv, so at init every block is the identity and the network outputs 0."""
    for p in module.parameters():
        p.detach().zero_()
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps, shape (B,) -> (B, dim).

    emb[:, j] = cos(t * f_j), emb[:, half + j] = sin(t * f_j), f_j = max_period^(-j / half),
    the Transformer positional encoding with cosines first (ADM's ordering, which the
    released time_embed weights expect). Odd `dim` gets one zero column.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def maybe_checkpoint(fn: Callable[..., Tensor], enabled: bool, *args: Tensor | None) -> Tensor:
    """Gradient checkpointing (recompute activations in backward) when enabled and training."""
    if enabled and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class ContextBlock(nn.Module):
    """Marker base class: a layer called as layer(x, context) inside an EmbedSequential."""


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling, optionally followed by a 3x3 conv."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.conv = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        elif self.out_channels != channels:
            raise ValueError("Upsample without conv cannot change the channel count")
        self.use_conv = use_conv

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class Downsample(nn.Module):
    """x2 downsampling: strided 3x3 conv, or 2x2 average pooling (no parameters)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        if use_conv:
            self.op = nn.Conv2d(channels, self.out_channels, 3, stride=2, padding=1)
        elif self.out_channels == channels:
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)
        else:
            raise ValueError("Downsample without conv cannot change the channel count")

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class ResBlock(nn.Module):
    """Residual block conditioned on the timestep (and class) embedding.

    h = conv(SiLU(GN(x)));  with scale-shift norm (ADM's AdaGN):
    h = conv(dropout(SiLU(GN(h) * (1 + s) + b))),  (s, b) = Linear(SiLU(emb));
    otherwise h = conv(dropout(SiLU(GN(h + Linear(SiLU(emb)))))).
    Output skip(x) + h. With up/down the resampling (parameter-free, as in BigGAN) sits
    between the first norm and conv on the residual path and on the skip path.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        self.channels = channels
        self.out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint

        self.in_layers = nn.Sequential(
            normalization(channels), nn.SiLU(), nn.Conv2d(channels, self.out_channels, 3, padding=1)
        )
        self.updown = up or down
        if up:
            self.h_upd, self.x_upd = Upsample(channels, False), Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()

        # Scale and shift need two vectors per channel; a plain additive bias needs one.
        emb_out = 2 * self.out_channels if use_scale_shift_norm else self.out_channels
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, emb_out))
        self.out_layers = nn.Sequential(
            normalization(self.out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            zero_module(nn.Conv2d(self.out_channels, self.out_channels, 3, padding=1)),
        )

        if self.out_channels == channels:
            self.skip_connection = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, self.out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        return maybe_checkpoint(self._forward, self.use_checkpoint, x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            *in_rest, in_conv = self.in_layers
            h = x
            for layer in in_rest:
                h = layer(h)
            h = in_conv(self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            out_norm, *out_rest = self.out_layers
            scale, shift = emb_out.chunk(2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            for layer in out_rest:
                h = layer(h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class EmbedSequential(nn.Sequential):
    """A sequence of layers where residual blocks also receive the timestep embedding and
    context blocks (attention) the optional cross-attention context."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor | None = None) -> Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, ContextBlock):
                x = layer(x, context)
            else:
                x = layer(x)
        return x

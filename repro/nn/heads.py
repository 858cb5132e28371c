"""MT-Diffusion decoder heads D_i (Chen et al., ICLR 2024, Section 2.2.3, Figure 3).

Each head reads one intermediate output c_t of the shared U-Net (a "tap") and predicts
one modality x_i; the multi-task loss (eq. 6) compares that prediction with x_i.
"""
from __future__ import annotations

from torch import Tensor, nn

from repro.nn.blocks import normalization, zero_module


class OutputBlockHead(nn.Sequential):
    """Decoder (a): a copy of the U-Net output block, GN -> SiLU -> zero-init 3x3 conv,
    on the "final" tap. Used for image-like modalities (masked image, segmentation map).

    Same layout as UNetModel.out, so `head.load_state_dict(unet.out.state_dict())` copies
    the trained output block when the channel counts agree.
    """

    def __init__(self, channels: int, out_channels: int):
        super().__init__(
            normalization(channels),
            nn.SiLU(),
            # Zero init: the head predicts 0 at the start, like the U-Net's own output.
            zero_module(nn.Conv2d(channels, out_channels, 3, padding=1)),
        )


class PooledLinearHead(nn.Module):
    """Decoder (b), MT-Diffusion-M: one fully connected layer on the spatially averaged
    "middle" tap, e.g. class logits."""

    def __init__(self, channels: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(channels, out_dim)

    def forward(self, h: Tensor) -> Tensor:
        return self.fc(h.mean(dim=(2, 3)))


class PooledMLPHead(nn.Module):
    """Decoder (b), image-representation experiment (Appendix E.4): a 2-layer MLP with ReLU
    (channels -> hidden -> out_dim, paper: 1024, 1024) on the pooled "middle" tap."""

    def __init__(self, channels: int, hidden: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, h: Tensor) -> Tensor:
        return self.mlp(h.mean(dim=(2, 3)))

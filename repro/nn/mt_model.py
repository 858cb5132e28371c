"""The MT-Diffusion reverse model (Chen et al., ICLR 2024, Section 2.2.3, Algorithm 1-2).

One backbone pass gives the noise prediction eps_theta and, through modality heads on
intermediate U-Net outputs, a prediction of every modality x_i (p_theta(x_i | z_t)).
MT-Diffusion-U: eps_theta(z_t, t), the encodings e_i do not enter the network.
MT-Diffusion-X: eps_theta(z_t, X, t), the e_i are concatenated to z_t on channels.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from repro.errors import UserError
from repro.nn.unet import UNetModel

# Intermediate outputs a head can read: the middle-block output, the features entering
# the U-Net output block, and the predicted noise itself (for a classifier head on the
# U-Net output, MT-Diffusion-E).
TAPS = ("middle", "final", "eps")


class MTDiffusionModel(nn.Module):
    """Shared ADM backbone plus named modality heads.

    heads: name -> (head module, tap name). A head whose class sets `takes_timesteps`
    (the ADM classifier) is called as head(tap, t), the others as head(tap).
    The backbone stays a plain UNetModel: `model.backbone.load_state_dict(released,
    strict=True)` loads a guided-diffusion checkpoint (U variant).
    """

    def __init__(self, backbone: UNetModel, heads: Mapping[str, tuple[nn.Module, str]] | None = None):
        super().__init__()
        heads = dict(heads or {})
        for name, (_, tap) in heads.items():
            if tap not in TAPS:
                raise UserError(f"head {name!r} reads unknown tap {tap!r}; choose one of {', '.join(TAPS)}")
        self.backbone = backbone
        self.heads = nn.ModuleDict({name: head for name, (head, _) in heads.items()})
        self.taps = {name: tap for name, (_, tap) in heads.items()}
        # learn_sigma (ADM's improved-DDPM variance): the output holds eps and v.
        self.learn_sigma = backbone.out_channels == 2 * backbone.in_channels

    @property
    def conditions_on_encodings(self) -> bool:
        """True for MT-Diffusion-X (backbone built with extra input channels)."""
        return self.backbone.extra_in_channels > 0

    def forward(
        self,
        z_t: Tensor,
        t: Tensor,
        e: Sequence[Tensor] = (),
        y: Tensor | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor], Tensor | None]:
        """z_t (B, C, H, W), t (B,), e the encodings e_i = E_i(x_i) (each (B, C_i, H, W)).

        Returns (eps, {head name: prediction}, var_values or None if not learn_sigma).
        """
        cond = None
        if self.conditions_on_encodings:
            if not e:
                raise ValueError("MT-Diffusion-X backbone needs the encodings e")
            cond = torch.cat(list(e), dim=1)
        out, taps = self.backbone(z_t, t, y=y, cond=cond, return_features=True, context=context)
        if self.learn_sigma:
            eps, var_values = out.split(self.backbone.in_channels, dim=1)
        else:
            eps, var_values = out, None
        taps["eps"] = eps
        preds = {}
        for name, head in self.heads.items():
            h = taps[self.taps[name]]
            preds[name] = head(h, t) if getattr(head, "takes_timesteps", False) else head(h)
        return eps, preds, var_values

"""DiffusionMTL's networks and their ablations/baselines by name (Ye & Xu, CVPR 2024, Tables 2-3).

    feature          trunk + MTDNet, Feature Diffusion (the released model, 132.9M at R18/PASCAL)
    prediction       trunk + MTDNet, Prediction Diffusion
    wo_diffusion     the Prediction network as iterative refinement (paper Table 2, vs. Prediction)
    wo_conditioning  the Prediction network without Multi-Task Conditioning
    mtl_baseline     shared trunk, the preliminary predictions are the outputs
    single_task      one trunk per task

Every network returns a `DenseOutput`; the baselines have no preliminary/final split, so
their outputs are both (the auxiliary loss is a DiffusionMTL term only).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import Tensor, nn

from repro.nn.dense_trunk import DenseTrunk, MTLBaseline, SingleTaskNetworks, upsample
from repro.nn.mtdnet import MTDNet

DENSE_MODELS = ("feature", "prediction", "wo_diffusion", "wo_conditioning", "mtl_baseline", "single_task")


@dataclass
class DenseOutput:
    """final[t]: the network's prediction for the batch rows rows[t] (all rows when rows[t] is None),
    preliminary[t]: P_init upsampled, every row ({} for the baselines). Both at image size."""

    final: dict[str, Tensor]
    preliminary: dict[str, Tensor] = field(default_factory=dict)
    rows: dict[str, Tensor | None] = field(default_factory=dict)


class DiffusionMTL(nn.Module):
    """Trunk (backbone, fusion, preliminary decoders) + MTDNet."""

    def __init__(self, task_channels: Mapping[str, int], variant: str = "feature", backbone: str = "resnet18",
                 width: int = 512, weights: str | Path | None = None, S: int = 2,
                 diffusion: bool = True, conditioning: bool = True, token_scale: float = 0.25):
        super().__init__()
        self.trunk = DenseTrunk(task_channels, backbone, width, weights)
        self.mtdnet = MTDNet(task_channels, self.trunk.width, variant, S, diffusion, conditioning,
                             token_scale=token_scale)

    def forward(self, image: Tensor, rows: Mapping[str, Tensor] | None = None,
                generator: torch.Generator | None = None) -> DenseOutput:
        f_init, p_init = self.trunk(image)
        final = self.mtdnet(f_init, p_init, rows, generator)
        return DenseOutput(final={t: upsample(y, image) for t, y in final.items()},
                           preliminary={t: upsample(p, image) for t, p in p_init.items()},
                           rows={t: (None if rows is None else rows[t]) for t in final})


class _Baseline(nn.Module):
    """A baseline network in DiffusionMTL's calling convention."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, image: Tensor, rows: Mapping[str, Tensor] | None = None,
                generator: torch.Generator | None = None) -> DenseOutput:
        out = self.net(image, rows)
        return DenseOutput(final=out, rows={t: (None if rows is None else rows[t]) for t in out})


def build_dense_model(name: str, task_channels: Mapping[str, int], backbone: str = "resnet18",
                      width: int = 512, weights: str | Path | None = None, S: int = 2,
                      token_scale: float = 0.25) -> nn.Module:
    """The network `name` (module docstring); `width` is C (512 in the paper), `token_scale` the
    denoiser's attention grid relative to the stride-8 map (0.25; 1.0 suits the tiny CPU images)."""
    if name == "mtl_baseline":
        return _Baseline(MTLBaseline(task_channels, backbone, width, weights))
    if name == "single_task":
        return _Baseline(SingleTaskNetworks(task_channels, backbone, width, weights))
    switches = {"feature": ("feature", True, True), "prediction": ("prediction", True, True),
                "wo_diffusion": ("prediction", False, True), "wo_conditioning": ("prediction", True, False)}
    if name not in switches:
        raise ValueError(f"unknown dense model {name!r}: choose one of {', '.join(DENSE_MODELS)}")
    variant, diffusion, conditioning = switches[name]
    return DiffusionMTL(task_channels, variant, backbone, width, weights, S, diffusion, conditioning, token_scale)

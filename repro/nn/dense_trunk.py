"""The shared front of DiffusionMTL and its baselines (Ye & Xu, CVPR 2024; design/diffusionmtl.md 2.1-2.2).

    image -> ResNet backbone (4 stages: strides 4, 8, 16, 32)
          -> fusion: every stage resized (bilinear) to stride 8, concatenated, one 3x3 conv
             to C channels (bias, no norm). C = 512: the release sets it to ResNet-18's last
             width, and the paper's 159M for ResNet-50 (Table 2) holds only with C = 512 too
          -> per task tau: F_init^tau = two ResNet BasicBlocks (C -> C)
                           P_init^tau = 1x1 conv C -> C_tau  (the preliminary prediction)

The MTL Baseline is this trunk with P_init upsampled to the image as its output; the
Single-Task baseline is one trunk per task. The backbone is torchvision's ResNet; its
ImageNet weights come from a configured file (never downloaded), read with weights_only.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from repro.errors import UserError
from repro.io import load_torch

PASCAL_TASK_CHANNELS = {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1}
NYUD_TASK_CHANNELS = {"semseg": 13, "depth": 1, "normals": 3}
BACKBONES = ("resnet18", "resnet50")
IMAGENET_FILES = {"resnet18": "resnet18-5c106cde.pth", "resnet50": "resnet50-19c8e357.pth"}


class ResNetBackbone(nn.Module):
    """torchvision's ResNet without its classifier, returning the four stage outputs."""

    def __init__(self, name: str = "resnet18", weights: str | Path | None = None):
        super().__init__()
        if name not in BACKBONES:
            raise UserError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
        net = getattr(torchvision.models, name)(weights=None)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.channels = [_out_channels(stage) for stage in self.stages]
        if weights is not None:
            self.load_imagenet(weights, name)

    def load_imagenet(self, path: str | Path, name: str) -> None:
        """torchvision's ImageNet state dict from `path` (the authors load it non-strict: the
        classifier is dropped); a missing file or missing backbone keys are UserErrors."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"ImageNet weights {path} not found: download {IMAGENET_FILES[name]} from torchvision "
                            f"on a connected machine and set weights.{name}")
        state = load_torch(path, what=f"ImageNet {name} weights")
        ours = {}  # torchvision's names -> ours (stem.0 = conv1, stages.0 = layer1, ...)
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head in ("conv1", "bn1"):
                ours[f"stem.{0 if head == 'conv1' else 1}.{rest}"] = value
            elif head.startswith("layer"):
                ours[f"stages.{int(head[5:]) - 1}.{rest}"] = value
        missing, _ = self.load_state_dict(ours, strict=False)
        if missing:
            raise UserError(f"{path} is not a torchvision {name} state dict (missing {missing[0]}); "
                            f"use {IMAGENET_FILES[name]}")

    def forward(self, x: Tensor) -> list[Tensor]:
        feats, h = [], self.stem(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


def _out_channels(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


class DenseTrunk(nn.Module):
    """Backbone, fusion and the preliminary decoders of `task_channels` (module docstring).

    `width` is C (512 in the paper, smaller for the CPU profiles). forward returns
    ``(F_init, P_init)``: dicts task -> ``[B, C, H/8, W/8]`` and ``[B, C_tau, H/8, W/8]``.
    """

    def __init__(self, task_channels: Mapping[str, int], backbone: str = "resnet18",
                 width: int = 512, weights: str | Path | None = None):
        super().__init__()
        self.task_channels = dict(task_channels)
        self.backbone = ResNetBackbone(backbone, weights)
        self.width = C = width
        self.fusion = nn.Conv2d(sum(self.backbone.channels), C, 3, padding=1)
        self.features = nn.ModuleDict({t: nn.Sequential(BasicBlock(C, C), BasicBlock(C, C)) for t in self.task_channels})
        self.predictions = nn.ModuleDict({t: nn.Conv2d(C, n, 1) for t, n in self.task_channels.items()})

    def forward(self, image: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        stages = self.backbone(image)
        # half the stride-4 resolution, i.e. stride 8 (64 x 64 for a 512 x 512 image)
        size = (stages[0].shape[-2] // 2, stages[0].shape[-1] // 2)
        fused = self.fusion(torch.cat([F.interpolate(s, size=size, mode="bilinear", align_corners=False)
                                       for s in stages], dim=1))
        f_init = {t: block(fused) for t, block in self.features.items()}
        return f_init, {t: self.predictions[t](f) for t, f in f_init.items()}


def upsample(x: Tensor, like: Tensor) -> Tensor:
    """Bilinear resize of a prediction map to the image size, as every head of the authors' model."""
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class MTLBaseline(nn.Module):
    """Shared backbone, one preliminary decoder per task; its predictions are the outputs."""

    def __init__(self, task_channels: Mapping[str, int], backbone: str = "resnet18",
                 width: int = 512, weights: str | Path | None = None):
        super().__init__()
        self.trunk = DenseTrunk(task_channels, backbone, width, weights)

    def forward(self, image: Tensor, rows: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Predictions per task at image size; with `rows`, only those rows (tasks without rows left out)."""
        _, p_init = self.trunk(image)
        out = {t: upsample(p, image) for t, p in p_init.items()}
        return out if rows is None else {t: y[rows[t]] for t, y in out.items() if len(rows[t])}


class SingleTaskNetworks(nn.Module):
    """The Single-Task baseline: an independent trunk (backbone included) per task."""

    def __init__(self, task_channels: Mapping[str, int], backbone: str = "resnet18",
                 width: int = 512, weights: str | Path | None = None):
        super().__init__()
        self.nets = nn.ModuleDict({t: MTLBaseline({t: n}, backbone, width, weights) for t, n in task_channels.items()})

    def forward(self, image: Tensor, rows: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """As MTLBaseline; with `rows`, each task's network sees only its labelled images (its
        batch-norm statistics included), as one network trained per task would."""
        if rows is None:
            return {t: net(image)[t] for t, net in self.nets.items()}
        return {t: net(image[rows[t]])[t] for t, net in self.nets.items() if len(rows[t])}

"""FeatureNet: the small classifier that stands in for AlexNet / Inception-v3 in the embedded profile.

The paper scores masked-image recovery with LPIPS (AlexNet trunk, Table 1) and generation
with IS / FID / sFID / Precision / Recall computed by the ADM evaluation suite (Inception-v3,
Appendix E). Those ImageNet networks cannot be downloaded here and mean little on the
procedurally generated 32x32 embedded data, so the embedded profile trains this network on
that data and plugs it into the *same* lpips / torch-fidelity code paths
(`repro.metrics.lpips_metric`, `repro.metrics.feature_extractors`).

One network gives every view the metrics need, mirroring the roles of the real trunks:

    features(x)  5 stage activations (conv/ReLU, pooled between stages)   AlexNet's relu1..relu5 for LPIPS
    pooled(x)    global average of stage 5                                 Inception pool_3 for FID, P/R
    spatial(x)   first 7 channels of a mid-level stage, flattened          Inception mixed_6/conv[..., :7] for sFID
    logits(x)    linear classifier on `pooled`                             Inception logits for IS
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from repro.errors import UserError
from repro.io import atomic_save_torch, load_torch
from repro.metrics.accuracy import topk_accuracy

# sFID in the ADM suite keeps the first 7 of Inception's 192 mixed_6/conv channels.
SPATIAL_CHANNELS = 7


@dataclass(frozen=True)
class FeatureNetConfig:
    """Everything needed to rebuild the architecture; stored inside every checkpoint."""

    num_classes: int
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    resolution: int = 32        # native input size; other sizes are resized to it
    spatial_stage: int = 3      # 1-based stage whose first 7 channels form `spatial` (8x8 at 32x32)


class FeatureNet(nn.Module):
    """Five conv/BN/ReLU stages with 2x max-pooling between them, then a linear classifier.

    Inputs are float images [N, 3, H, W] in [-1, 1] (the ADM pixel convention, see
    `repro.data.pixels`). The stage layout follows lpips' AlexNet slices: a stage starts
    with the pooling of the previous stage's output and ends at a ReLU.
    """

    def __init__(self, config: FeatureNetConfig):
        super().__init__()
        if not 1 <= config.spatial_stage <= len(config.widths):
            raise ValueError(f"spatial_stage must be in 1..{len(config.widths)}, got {config.spatial_stage}")
        if config.widths[config.spatial_stage - 1] < SPATIAL_CHANNELS:
            raise ValueError(f"the spatial stage needs at least {SPATIAL_CHANNELS} channels")
        self.config = config
        stages, c_in = [], 3
        for i, width in enumerate(config.widths):
            pool = [nn.MaxPool2d(2)] if i > 0 else []
            # BatchNorm only speeds up training; in eval mode it is a fixed per-channel affine map.
            conv = [nn.Conv2d(c_in, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)]
            stages.append(nn.Sequential(*pool, *conv, nn.ReLU()))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Linear(c_in, config.num_classes)

    @property
    def stage_channels(self) -> list[int]:
        return list(self.config.widths)

    def _native(self, x: torch.Tensor) -> torch.Tensor:
        r = self.config.resolution
        if x.shape[-2:] != (r, r):
            # Antialiasing matters when shrinking large samples (e.g. 64x64) to the native size.
            x = F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 5 stage activations [N, C_k, H_k, W_k] (the LPIPS trunk outputs)."""
        h, out = self._native(x), []
        for stage in self.stages:
            h = stage(h)
            out.append(h)
        return out

    def embed(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """All metric views from one forward pass: logits, pooled, spatial."""
        stages = self.features(x)
        pooled = stages[-1].mean(dim=(2, 3))
        spatial = stages[self.config.spatial_stage - 1][:, :SPATIAL_CHANNELS]
        # Flatten channels-last like the ADM suite does with TF's NHWC tensors (FD is
        # invariant to the coordinate order, this only keeps the layout familiar).
        spatial = spatial.permute(0, 2, 3, 1).flatten(1)
        return {"logits": self.head(pooled), "pooled": pooled, "spatial": spatial}

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled stage-5 embedding [N, widths[-1]] (FID, Precision/Recall)."""
        return self.embed(x)["pooled"]

    def spatial(self, x: torch.Tensor) -> torch.Tensor:
        """First 7 channels of the mid-level stage, flattened: [N, 7*h*w] (sFID)."""
        return self.embed(x)["spatial"]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits [N, num_classes] (Inception Score)."""
        return self.embed(x)["logits"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)


def _to_model_space(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> float [N, 3, H, W] in [-1, 1] (b / 127.5 - 1, as repro.data.pixels)."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _check_images(images: np.ndarray, labels: np.ndarray | None = None) -> None:
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4 and images.shape[-1] == 3):
        got = f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}"
        raise UserError(f"expected uint8 images of shape [N, H, W, 3], got {got}")
    if labels is not None and np.asarray(labels).shape != (len(images),):
        raise UserError(f"expected one label per image ({len(images)}), got shape {np.asarray(labels).shape}")


def train_feature_net(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    num_classes: int | None = None,
    config: FeatureNetConfig | None = None,
    progress: bool = True,
) -> tuple[FeatureNet, dict]:
    """Train a FeatureNet classifier with Adam + cosine learning-rate decay; deterministic on CPU.

    Same seed, data and thread count -> bit-identical weights: initialisation draws from a
    forked global RNG seeded with `seed`, mini-batches from a separate seeded generator.
    Returns (network in eval mode, stats with the final train accuracy and wall time).

    Not a step of the jobs' training harness (repro/jobs/harness.py): its batches come from
    epoch-wise permutations of one generator that runs through the whole training (not from
    per-step generators), with Adam and a cosine schedule; moving it there would change its
    weights and every embedded-profile LPIPS / FID / IS number. It trains in seconds and needs
    no resuming, ranks or EMA, and it lives here, below the jobs layer, for the metric tests.
    """
    _check_images(images, labels)
    labels = np.asarray(labels, dtype=np.int64)
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    config = config or FeatureNetConfig(num_classes=num_classes)
    if config.num_classes != num_classes:
        config = dataclasses.replace(config, num_classes=num_classes)

    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # seed the init without clobbering the caller's RNG
        torch.manual_seed(seed)
        net = FeatureNet(config)
    x_all = _to_model_space(images)
    y_all = torch.from_numpy(labels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    gen = torch.Generator().manual_seed(seed)

    net.train()
    order, cursor, loss = torch.randperm(len(x_all), generator=gen), 0, torch.tensor(float("nan"))
    bar = tqdm(range(steps), desc="feature net", disable=not progress, leave=False)
    for _ in bar:
        # Epoch-wise shuffling: every image is seen once per pass over the data.
        if cursor + batch_size > len(order):
            order, cursor = torch.randperm(len(x_all), generator=gen), 0
        idx = order[cursor : cursor + batch_size]
        cursor += batch_size
        loss = F.cross_entropy(net.logits(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")

    net.eval().requires_grad_(False)
    stats = {
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "num_images": len(images),
        "num_classes": num_classes,
        "final_loss": float(loss.item()),
        "train_accuracy": feature_net_accuracy(net, images, labels, batch_size=512),
        "train_time_s": time.perf_counter() - start,
    }
    return net, stats


def feature_net_accuracy(net: FeatureNet, images: np.ndarray, labels: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (repro.metrics.accuracy.topk_accuracy) on uint8 images [N, H, W, 3]."""
    _check_images(images, labels)
    return topk_accuracy(net, (_to_model_space(images),), torch.as_tensor(labels), ks=(1,), batch_size=batch_size)["top1"]


def save_feature_net(net: FeatureNet, path: str | os.PathLike, stats: dict | None = None) -> Path:
    """Atomically write a checkpoint holding the config (to rebuild the architecture) and weights."""
    payload = {
        "kind": "repro.metrics.FeatureNet",
        "config": dataclasses.asdict(net.config),
        "state_dict": net.state_dict(),
        "stats": dict(stats or {}),
    }
    return atomic_save_torch(path, payload)


def load_feature_net(path: str | os.PathLike) -> FeatureNet:
    """Rebuild a FeatureNet from `save_feature_net`'s checkpoint (eval mode, frozen)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"feature network checkpoint {path} not found; train it first (repro.metrics.train_feature_net "
            f"on the embedded data) or point the config at an existing one"
        )
    payload = load_torch(path, what="feature network checkpoint")
    if not isinstance(payload, dict) or payload.get("kind") != "repro.metrics.FeatureNet":
        raise UserError(f"{path} is not a FeatureNet checkpoint written by repro.metrics.save_feature_net")
    cfg = dict(payload["config"])
    cfg["widths"] = tuple(cfg["widths"])
    net = FeatureNet(FeatureNetConfig(**cfg))
    net.load_state_dict(payload["state_dict"])
    return net.eval().requires_grad_(False)

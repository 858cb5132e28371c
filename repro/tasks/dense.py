"""Multi-task dense prediction from partially annotated images: DiffusionMTL (Ye & Xu, CVPR 2024).

Why a sibling of `repro.tasks.base.Task` and not a subclass: a `Task` is a diffusion
*generative* experiment. Its interface turns a batch into (z_0, X) for the forward process of
eq. 3, names the modality encoders E_i and the number of modalities, and samples rows with
Algorithm 1; training is eq. 6's noise-prediction loss. DiffusionMTL has none of these: its
"diffusion" is a 2-step, end-to-end unrolled refinement inside the network (repro/nn/mtdnet.py),
trained with per-pixel task losses on the labels each image has, and a prediction is one
forward pass. Forcing it into `Task` would leave every abstract method a stub. `DenseTask`
keeps the same spirit (built from a job's config by `from_config`, no model-dependent state,
`check_config` before any job, variants by name, arrays out and never files) with the methods
dense prediction needs: `training_data`, `build_model`, `loss` (a harness step's loss) and
`predict` (before and after denoising). Dense tasks register in their own `DENSE_TASKS`.
"""
from __future__ import annotations

import abc
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from repro.data.registry import dense_tasks, load_dense
from repro.errors import UserError
from repro.nn.dense_losses import NYUD_LOSS_WEIGHTS, PASCAL_LOSS_WEIGHTS, labelled_rows, partial_label_loss
from repro.nn.diffusionmtl import DENSE_MODELS, build_dense_model

DENSE_TASKS: dict[str, type["DenseTask"]] = {}


def register_dense(cls: type["DenseTask"]) -> type["DenseTask"]:
    if cls.name in DENSE_TASKS:
        raise ValueError(f"dense task {cls.name!r} is registered twice")
    DENSE_TASKS[cls.name] = cls
    return cls


def make_dense_task(cfg: Mapping[str, Any]) -> "DenseTask":
    name = cfg["task"]["name"]
    if name not in DENSE_TASKS:
        raise UserError(f"unknown dense task {name!r}: choose one of {', '.join(DENSE_TASKS)}")
    return DENSE_TASKS[name].from_config(cfg)


class DenseTask(abc.ABC):
    """One dense multi-task experiment (module docstring)."""

    name: ClassVar[str]
    variants: ClassVar[tuple[str, ...]]
    samples_kind: ClassVar[str] = "dense"
    tasks: dict[str, int]                  # task -> output channels, the mapping files' column order

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "DenseTask": ...

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        """Checks before any job starts; UserError if bad."""

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise UserError(f"unknown {self.name} variant {variant!r}: choose one of {', '.join(self.variants)}")

    def training_data(self, cfg: Mapping[str, Any]):
        """Items {"image", <task>, "labelled"} of the configured dataset's training split."""
        return load_dense(cfg["data"], "train")

    @abc.abstractmethod
    def build_model(self, variant: str) -> nn.Module: ...

    @abc.abstractmethod
    def loss(self, model: nn.Module, batch: Mapping[str, Tensor], generator: torch.Generator
             ) -> tuple[Tensor, dict[str, Tensor]]: ...

    @abc.abstractmethod
    def predict(self, model: nn.Module, images: Tensor, generator: torch.Generator
                ) -> dict[str, dict[str, np.ndarray]]: ...


def postprocess(task: str, logits: Tensor) -> np.ndarray:
    """The authors' inference outputs (design 4), kept as floats for the meters: class maps
    (argmax, uint8), saliency and edge probabilities, unit normals, depth."""
    if task in ("semseg", "human_parts"):
        return logits.argmax(1).to(torch.uint8).numpy()
    if task == "sal":
        return logits.softmax(1)[:, 1].numpy().astype(np.float32)
    if task == "edge":
        return torch.sigmoid(logits[:, 0]).numpy().astype(np.float32)
    if task == "normals":
        return torch.nn.functional.normalize(logits, dim=1).numpy().astype(np.float32)
    if task == "depth":
        return logits[:, 0].numpy().astype(np.float32)
    raise ValueError(f"unknown dense task {task!r}")


@register_dense
class DiffusionMTLTask(DenseTask):
    """DiffusionMTL, its ablations and baselines (`repro.nn.diffusionmtl.DENSE_MODELS`) on a
    dense dataset of the registry; losses only on the labels an image has (repro/nn/dense_losses.py).

    `task:` block: backbone (resnet18), width (C = 512), S (2), token_scale (0.25),
    imagenet (the torchvision weights file of the backbone, null = random initialisation),
    loss_weights (null: PASCAL's for 5-task data, MTPSL's equal weights for NYUD's 3 tasks).
    """

    name = "diffusionmtl"
    variants = DENSE_MODELS

    def __init__(self, tasks: Mapping[str, int], backbone: str = "resnet18", width: int = 512, S: int = 2,
                 token_scale: float = 0.25, imagenet: str | None = None,
                 loss_weights: Mapping[str, float] | None = None):
        self.tasks = dict(tasks)
        self.backbone, self.width, self.S, self.token_scale, self.imagenet = backbone, width, S, token_scale, imagenet
        default = PASCAL_LOSS_WEIGHTS if "edge" in self.tasks else NYUD_LOSS_WEIGHTS
        self.loss_weights = {t: float((loss_weights or default)[t]) for t in self.tasks}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "DiffusionMTLTask":
        t = cfg["task"]
        return cls(dense_tasks(cfg["data"]), t["backbone"], int(t["width"]), int(t["S"]), float(t["token_scale"]),
                   t["imagenet"], t["loss_weights"])

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        if cfg["task"].get("imagenet"):
            from repro.weights import check_weights

            check_weights(cfg["task"]["backbone"], cfg["task"]["imagenet"], needed_by="the DiffusionMTL backbone")

    def build_model(self, variant: str) -> nn.Module:
        self.check_variant(variant)
        return build_dense_model(variant, self.tasks, self.backbone, self.width, self.imagenet, self.S,
                                 self.token_scale)

    def loss(self, model: nn.Module, batch: Mapping[str, Tensor], generator: torch.Generator
             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The partial-label loss of one batch; every task appears in the parts (0 when no image
        of the batch is labelled for it), so that the logged curve has fixed columns."""
        names = tuple(self.tasks)
        labelled = batch["labelled"].bool()
        out = model(batch["image"], labelled_rows(labelled, names), generator=generator)
        total, parts = partial_label_loss(out.final, out.preliminary, {t: batch[t] for t in names}, labelled, names,
                                          self.loss_weights)
        zero = total.detach() * 0
        return total, {t: parts.get(t, zero).detach() for t in names}

    @torch.no_grad()
    def predict(self, model: nn.Module, images: Tensor, generator: torch.Generator
                ) -> dict[str, dict[str, np.ndarray]]:
        """{"final": {task: output}, "initial": {task: output of P_init}} (no "initial" for the
        baselines, whose predictions are not denoised). Inference is stochastic (design 4):
        the noise comes from `generator`."""
        out = model(images, None, generator=generator)
        result = {"final": {t: postprocess(t, y) for t, y in out.final.items()}}
        if out.preliminary:
            result["initial"] = {t: postprocess(t, y) for t, y in out.preliminary.items()}
        return result

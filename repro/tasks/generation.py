"""Pure image generation from any trained model (Tables 2 and 3), shared by every task.

How a row generates depends on the model's modalities (Algorithm 1, Appendix C):

    condition: none      no modality (ADM; a single-task model)
    condition: complete  every modality known and "empty": the complete mask (all-zero masked
                         image) for MT-Diffusion-X (Section 4.1: "a complete mask (all zeros)"),
                         a dropped label (e = 0) for the starred image-label models
    condition: joint     every modality unknown, initialised (zeros / a random class) and
                         re-estimated by its head at every step: joint generation (U, M, E)

Class-conditional models (ADM class cond) draw a random class per sample. Classifier
guidance (the `_g` rows, Dhariwal & Nichol 2021) pushes every step towards a random target
class (the sample's own class for class-conditional models) with ADM's noisy classifier.
Randomness: one generator per batch, seeded by (seed, batch index), so the images do not
depend on how many batches ran before.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from repro.diffusion import Modality, MTProcess, algorithm1, classifier_guidance, ddim_sample, restore_masked
from repro.diffusion.loss import IGNORE_INDEX
from repro.errors import UserError
from repro.tasks.base import Task

CONDITIONS = ("none", "complete", "joint")
SAMPLERS = {"ancestral": algorithm1, "ddim": ddim_sample}


class SingleTaskGeneration(Task):
    """A task whose modalities are always empty: continued single-task generation training.

    MT-Diffusion^f (Table 3: "continued finetuning on single-task image generation") and the
    finetuning stage of M*/E* (Table 2) train the same network on the pure-generation path
    only: every modality is its null value (complete mask / dropped label, e = 0, so the
    process is plain DDPM) and no head is trained (eq. 6 keeps only its noise term: `kinds`
    is empty). Everything else is the wrapped task's (`base`), delegated explicitly.
    Made by `repro.tasks.make_task` when `model.single_task` is set; not registered by name.
    """

    name = "single_task_generation"
    kinds: dict[str, str] = {}

    def __init__(self, inner: Task):
        self.inner = inner
        self.variants = inner.variants
        self.num_classes = inner.num_classes
        self.samples_kind = inner.samples_kind

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "SingleTaskGeneration":
        from repro.tasks.base import task_class

        return cls(task_class(cfg).from_config(cfg))

    @property
    def base(self) -> Task:
        return self.inner

    def training_data(self, cfg: Mapping[str, Any], deps: Mapping[str, Any]):
        return self.inner.training_data(cfg, deps)

    def batch(self, images: Tensor, labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        z0, x, net_inputs = self.inner.batch(images, labels, generator)
        return z0, {name: null_data(self.inner.kinds[name], v) for name, v in x.items()}, net_inputs

    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> nn.Module:
        return self.inner.build_model(unet_cfg, variant)

    def encoders(self, model: nn.Module, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        return self.inner.encoders(model, variant)

    def n_modalities(self, variant: str) -> int:
        return self.inner.n_modalities(variant)

    def network_inputs(self, variant: str, labels: Tensor) -> dict[str, Tensor]:
        return self.inner.network_inputs(variant, labels)

    def sample_parts(self, cfg: Mapping[str, Any]) -> tuple[str, ...]:
        return self.inner.sample_parts(cfg)

    def sample(self, cfg: Mapping[str, Any], model: nn.Module | None, process: MTProcess | None,
               part: str = "all", batches=None) -> dict[str, np.ndarray]:
        return self.inner.sample(cfg, model, process, part, batches)


def null_data(kind: str, like: Tensor) -> Tensor:
    """The empty value of a modality: zeros (an all-masked image), or a dropped label."""
    if kind == "continuous":
        return torch.zeros_like(like)
    return torch.full_like(like.long(), IGNORE_INDEX)


def modalities_for(task: Task, model: nn.Module, variant: str, condition: str, n: int, shape: tuple[int, ...],
                   num_classes: int | None, generator: torch.Generator) -> list[Modality]:
    """The inference-time modalities of one batch (see the module docstring)."""
    if condition not in CONDITIONS:
        raise UserError(f"unknown generation condition {condition!r}: choose one of {', '.join(CONDITIONS)}")
    encoders = task.encoders(model, variant)
    if condition == "none" and encoders:
        raise UserError(f"this model has modalities {list(encoders)}: generate with condition complete or joint")
    kinds = task.base.kinds
    mods = []
    for name, encode in encoders.items():
        kind = kinds[name]
        if kind == "continuous":
            empty = torch.zeros(shape)
        else:
            empty = torch.full((n,), IGNORE_INDEX, dtype=torch.long)
        if condition == "complete":
            mods.append(Modality(name, encode, known=empty))
        elif kind == "continuous":
            mods.append(Modality(name, encode, init=empty))
        else:  # a random class to start from (Algorithm 1, line 3)
            mods.append(Modality(name, encode, init=torch.randint(num_classes, (n,), generator=generator)))
    return mods


@torch.no_grad()
def generate(task: Task, variant: str, model: nn.Module, process: MTProcess, *, n: int, batch_size: int,
             resolution: int, seed: int, condition: str = "none", sampler: str = "ancestral",
             prior: str = "paper", clip_denoised: bool = True, classifier: nn.Module | None = None,
             guidance_scale: float = 0.0, num_classes: int | None = None,
             progress: bool = True, first_batch: int = 0) -> tuple[Tensor, Tensor]:
    """`n` images in [-1, 1] (n, 3, H, W) and their classes (the drawn, target or predicted one; -1 if none).

    Batch b draws from its own seed, so batches `first_batch`, `first_batch + 1`, ... of a
    longer run come out the same when asked for alone (how a sampling job resumes)."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    n_classes = task.num_classes or num_classes
    if classifier is not None and not n_classes:
        raise UserError("classifier guidance needs the number of classes")
    images, classes = [], []
    for b, lo in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - lo)
        g = torch.Generator().manual_seed(seed * 1_000_003 + first_batch + b)
        shape = (m, 3, resolution, resolution)
        y = torch.randint(n_classes, (m,), generator=g) if n_classes else torch.full((m,), -1)
        net = functools.partial(model, **task.network_inputs(variant, y))
        mods = modalities_for(task, model, variant, condition, m, shape, n_classes, g)
        # With a classifier, guidance always goes through the sampler (scale 0 must change no bit).
        guidance = classifier_guidance(classifier, y) if classifier is not None else None
        z, x = SAMPLERS[sampler](net, process, shape, mods, prior=prior, generator=g, clip_denoised=clip_denoised,
                                 guidance=guidance, guidance_scale=guidance_scale, progress=progress)
        images.append(z.clamp(-1, 1))
        label = x.get("label")
        if condition == "joint" and label is not None:   # the jointly generated class
            y = label.argmax(dim=1) if label.is_floating_point() else label
        classes.append(y)
    return torch.cat(images), torch.cat(classes)


def restore_for_generation(task: Task, model: nn.Module, process: MTProcess, originals: Tensor, masks: Tensor, *,
                           seed: int, batch_size: int, prior: str = "paper", clip_denoised: bool = True,
                           composite: bool = True, classifier: nn.Module | None = None,
                           guidance_scale: float = 0.0, num_classes: int | None = None,
                           progress: bool = True) -> Tensor:
    """Constrained restoration of masked images (Table 3's MT-Diffusion* rows), optionally guided.

    The masked image is the known modality of MT-Diffusion-X (`repro.diffusion.restore_masked`:
    Algorithm 1, conditional); `composite` keeps the unmasked pixels exactly.
    """
    from repro.data.masks import apply_mask

    encoders = task.encoders(model, "X")
    if len(encoders) != 1:
        raise UserError("restoration rows need an MT-Diffusion-X model of the masked-image task")
    (name, encode), = encoders.items()
    out = []
    for b, lo in enumerate(range(0, len(originals), batch_size)):
        x0, mask = originals[lo:lo + batch_size], masks[lo:lo + batch_size]
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        masked = apply_mask(x0, mask)
        guidance = None
        if classifier is not None:
            if not num_classes:
                raise UserError("classifier guidance needs the number of classes")
            guidance = classifier_guidance(classifier, torch.randint(num_classes, (len(x0),), generator=g))
        out.append(restore_masked(model, process, masked, mask, name, encode, generator=g, prior=prior,
                                  clip_denoised=clip_denoised, composite_known=composite, guidance=guidance,
                                  guidance_scale=guidance_scale, progress=progress))
    return torch.cat(out)


def check_row(row: Mapping[str, Any]) -> None:
    """Fail before any job starts on a generation row with bad settings."""
    method = row.get("method", "generate")
    if method not in ("generate", "restore"):
        raise UserError(f"row {row['name']!r}: unknown method {method!r} for a generation table (generate, restore)")
    if row.get("condition", "none") not in CONDITIONS:
        raise UserError(f"row {row['name']!r}: condition must be one of {', '.join(CONDITIONS)}")
    if row.get("sampler", "ancestral") not in SAMPLERS:
        raise UserError(f"row {row['name']!r}: sampler must be one of {', '.join(SAMPLERS)}")
    scale = row.get("guidance_scale", 0.0)
    if scale and not row.get("classifier"):
        raise UserError(f"row {row['name']!r}: guidance_scale {scale} needs a classifier (classifier: NAME)")

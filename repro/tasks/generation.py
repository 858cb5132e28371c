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

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.diffusion import Modality, MTProcess, algorithm1, ddim_sample
from repro.diffusion.loss import IGNORE_INDEX
from repro.errors import UserError

CONDITIONS = ("none", "complete", "joint")
SAMPLERS = {"ancestral": algorithm1, "ddim": ddim_sample}


class SingleTaskGeneration:
    """A task whose modalities are always empty: continued single-task generation training.

    MT-Diffusion^f (Table 3: "continued finetuning on single-task image generation") and the
    finetuning stage of M*/E* (Table 2) train the same network on the pure-generation path
    only: every modality is its null value (complete mask / dropped label, e = 0, so the
    process is plain DDPM) and no head is trained (eq. 6 keeps only its noise term).
    Everything else is the wrapped task's.
    """

    kinds: dict[str, str] = {}

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, name)

    def batch(self, images: Tensor, labels: Tensor, generator: torch.Generator):
        z0, x, net_inputs = self.inner.batch(images, labels, generator)
        return z0, {name: null_data(self.inner.kinds[name], v) for name, v in x.items()}, net_inputs


def null_data(kind: str, like: Tensor) -> Tensor:
    """The empty value of a modality: zeros (an all-masked image), or a dropped label."""
    if kind == "continuous":
        return torch.zeros_like(like)
    return torch.full_like(like.long(), IGNORE_INDEX)


def base_task(task):
    return getattr(task, "inner", task)


def classifier_guidance(classifier: nn.Module, y: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """grad_z log p_phi(y | z_t, t) (ADM's cond_fn without its scale)."""

    def grad(z: Tensor, t: Tensor) -> Tensor:
        z = z.requires_grad_(True)
        log_probs = F.log_softmax(classifier(z, t), dim=-1)
        selected = log_probs[torch.arange(len(y)), y].sum()
        return torch.autograd.grad(selected, z)[0]

    return grad


def modalities_for(task, variant: str, condition: str, n: int, shape: tuple[int, ...],
                   num_classes: int | None, generator: torch.Generator) -> list[Modality]:
    """The inference-time modalities of one batch (see the module docstring)."""
    if condition not in CONDITIONS:
        raise UserError(f"unknown generation condition {condition!r}: choose one of {', '.join(CONDITIONS)}")
    encoders = task.encoders(variant)
    if condition == "none" and encoders:
        raise UserError(f"this model has modalities {list(encoders)}: generate with condition complete or joint")
    kinds = base_task(task).kinds
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
def generate(task, variant: str, model: nn.Module, process: MTProcess, *, n: int, batch_size: int,
             resolution: int, seed: int, condition: str = "none", sampler: str = "ancestral",
             prior: str = "paper", clip_denoised: bool = True, classifier: nn.Module | None = None,
             guidance_scale: float = 0.0, num_classes: int | None = None,
             progress: bool = True) -> tuple[Tensor, Tensor]:
    """`n` images in [-1, 1] (n, 3, H, W) and their classes (the drawn, target or predicted one; -1 if none)."""
    if sampler not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}: choose one of {', '.join(SAMPLERS)}")
    inner = base_task(task)
    n_classes = getattr(inner, "num_classes", None) or num_classes
    if classifier is not None and not n_classes:
        raise UserError("classifier guidance needs the number of classes")
    images, classes = [], []
    for b, lo in enumerate(range(0, n, batch_size)):
        m = min(batch_size, n - lo)
        g = torch.Generator().manual_seed(seed * 1_000_003 + b)
        shape = (m, 3, resolution, resolution)
        y = torch.randint(n_classes, (m,), generator=g) if n_classes else torch.full((m,), -1)
        net = model
        if hasattr(inner, "network_inputs"):
            net = functools.partial(model, **inner.network_inputs(variant, y))
        mods = modalities_for(task, variant, condition, m, shape, n_classes, g)
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


def restore_for_generation(task, model: nn.Module, process: MTProcess, originals: Tensor, masks: Tensor, *,
                           seed: int, batch_size: int, prior: str = "paper", clip_denoised: bool = True,
                           composite: bool = True, classifier: nn.Module | None = None,
                           guidance_scale: float = 0.0, num_classes: int | None = None,
                           progress: bool = True) -> Tensor:
    """Constrained restoration of masked images (Table 3's MT-Diffusion* rows), optionally guided.

    The masked image is the known modality of MT-Diffusion-X (Algorithm 1, conditional);
    `composite` keeps the unmasked pixels exactly ("keeping the unmasked region unchanged").
    """
    from repro.data.masks import apply_mask

    names = list(task.encoders("X"))
    if len(names) != 1:
        raise UserError("restoration rows need an MT-Diffusion-X model of the masked-image task")
    encode = task.encoders("X")[names[0]]
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
        z, _ = algorithm1(model, process, tuple(x0.shape), [Modality(names[0], encode, known=masked)],
                                prior=prior, generator=g, clip_denoised=clip_denoised, guidance=guidance,
                                guidance_scale=guidance_scale, progress=progress)
        z = z.clamp(-1, 1)
        out.append(mask * masked + (1 - mask) * z if composite else z)
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

"""The interface every experiment implements: how a batch becomes (z_0, X), which network
models it, which encoders map its modalities into the diffusion space, how its rows sample.

A task is built from a job's config (`from_config`) and keeps no state that depends on a
model: everything that needs the network (the label and representation encoders are the
model's own U-Net) takes the model as an argument. Sampling returns arrays; the job bodies
(`repro.jobs.sample`, `repro.jobs.generate`) write them in the one samples format
(`repro.jobs.samples`). Tasks register themselves by name with `@register`.
"""
from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from repro.diffusion import MTProcess
from repro.errors import UserError

TASKS: dict[str, type["Task"]] = {}
# Runs batch `b` of the sequence `tag`: `(tag, b, compute, generator) -> compute()`'s tensor, or the
# same tensor saved by an earlier, killed run, with `generator` set to its state after that batch.
BatchRunner = Callable[[str, int, Callable[[], Tensor], torch.Generator | None], Tensor]


def register(cls: type["Task"]) -> type["Task"]:
    """Class decorator: make a task available to `repro.tasks.make_task` by its `name`."""
    if cls.name in TASKS:
        raise ValueError(f"task {cls.name!r} is registered twice ({TASKS[cls.name].__name__}, {cls.__name__})")
    TASKS[cls.name] = cls
    return cls


def task_class(cfg: Mapping[str, Any]) -> type["Task"]:
    """The registered Task class that `cfg["task"]["name"]` names; UserError naming the choices."""
    name = cfg["task"]["name"]
    if name not in TASKS:
        raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    return TASKS[name]


class Task(abc.ABC):
    """One experiment of the paper (Section 4, Appendix E)."""

    name: ClassVar[str]                  # registry name ("masked_image", ...)
    variants: ClassVar[tuple[str, ...]]  # model variants this task builds (Table 2's rows)
    kinds: dict[str, str]                # modality name -> "continuous" | "categorical" (the heads trained)
    num_classes: int | None = None       # object classes the task itself models (image-label), else None
    samples_kind: ClassVar[str | None] = None   # what `sample` returns (a kind of repro.jobs.samples)

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Task":
        """The task of a job's resolved config."""

    @classmethod
    def check_config(cls, cfg: Mapping[str, Any]) -> None:
        """Checks before any job starts (weights and pairs the task needs); UserError if bad."""

    @property
    def base(self) -> "Task":
        """The experiment itself (a wrapper such as single-task finetuning returns what it wraps)."""
        return self

    def check_variant(self, variant: str) -> None:
        if variant not in self.variants:
            raise UserError(f"unknown {self.name.replace('_', '-')} variant {variant!r}: "
                            f"choose one of {', '.join(self.variants)}")

    # --- training -----------------------------------------------------------------------

    def training_data(self, cfg: Mapping[str, Any], deps: Mapping[str, Any]):
        """What training batches are drawn from: `images(idx)` and `labels` (default: the
        configured dataset's labelled training images)."""
        from repro.data.registry import load_images

        return load_images(cfg["data"], "train")

    @abc.abstractmethod
    def batch(self, data: Any, labels: Tensor, generator: torch.Generator
              ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """(z_0, X, extra network inputs) of one batch of `training_data` items."""

    @abc.abstractmethod
    def build_model(self, unet_cfg: Mapping[str, Any], variant: str) -> nn.Module:
        """A freshly initialised network of `variant` (pure: the task keeps no reference to it)."""

    @abc.abstractmethod
    def encoders(self, model: nn.Module, variant: str) -> dict[str, Callable[[Tensor], Tensor]]:
        """E_i by modality name for `model` (built by `build_model(.., variant)`)."""

    @abc.abstractmethod
    def n_modalities(self, variant: str) -> int:
        """Number of modalities of the forward process (eq. 3) of `variant`."""

    def network_inputs(self, variant: str, labels: Tensor) -> dict[str, Tensor]:
        """Extra keyword inputs of a denoising pass at sampling time (e.g. the class)."""
        return {}

    # --- sampling rows --------------------------------------------------------------------

    def sample_parts(self, cfg: Mapping[str, Any]) -> tuple[str, ...]:
        """Independent parts of a sampling job (each saved as soon as it is done, so that a
        requeued job keeps them); one part by default."""
        return ("all",)

    def sample(self, cfg: Mapping[str, Any], model: nn.Module | None, process: MTProcess | None,
               part: str = "all", batches: "BatchRunner | None" = None) -> dict[str, np.ndarray]:
        """One part of a row's samples as arrays (the names `repro.jobs.samples.KINDS` gives for
        `samples_kind`); never writes files. `batches`, where given, runs each batch (the sampling
        job passes its per-batch checkpoints, repro.jobs.batches); a task that samples its part
        in one piece ignores it (a killed job then redoes the part)."""
        raise UserError(f"the {self.name} task has no sampling rows of its own: use the generation rows "
                        f"(method: generate)")

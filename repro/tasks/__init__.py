"""One module per experiment: how a batch becomes (z_0, X), which encoders and heads."""
from __future__ import annotations

from typing import Any, Mapping

from repro.errors import UserError

TASKS = ("masked_image", "image_label", "translation", "representation")


def make_task(cfg: Mapping[str, Any]):
    task = _make_task(cfg)
    if (cfg.get("model") or {}).get("single_task"):   # continued single-task generation (Tables 2-3)
        from repro.tasks.generation import SingleTaskGeneration

        return SingleTaskGeneration(task)
    return task


def _make_task(cfg: Mapping[str, Any]):
    name = cfg["task"]["name"]
    if name == "masked_image":
        from repro.tasks.masked_image import MaskedImageTask

        return MaskedImageTask.from_config(cfg)
    if name == "image_label":
        from repro.tasks.image_label import ImageLabelTask

        return ImageLabelTask.from_config(cfg)
    if name == "translation":
        from repro.tasks.translation import TranslationTask

        return TranslationTask.from_config(cfg)
    if name == "representation":
        from repro.tasks.representation import RepresentationTask

        return RepresentationTask.from_config(cfg)
    raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")


def check_task(cfg: Mapping[str, Any]) -> None:
    """A task's own checks before any job starts (weights and modalities it needs); UserError if bad."""
    name = cfg["task"]["name"]
    if name == "translation":
        from repro.tasks.translation import check_config
    elif name == "representation":
        from repro.tasks.representation import check_config
    else:
        return
    check_config(cfg)

"""One module per experiment: how a batch becomes (z_0, X), which encoders and heads."""
from __future__ import annotations

from typing import Any, Mapping

from repro.errors import UserError

TASKS = ("masked_image",)


def make_task(cfg: Mapping[str, Any]):
    name = cfg["task"]["name"]
    if name == "masked_image":
        from repro.tasks.masked_image import MaskedImageTask

        return MaskedImageTask.from_config(cfg)
    raise UserError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")

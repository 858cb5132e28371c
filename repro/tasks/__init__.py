"""One module per experiment, each a `repro.tasks.base.Task` registered by name.

`make_task(cfg)` is the entry point: the configured task, wrapped for single-task
generation finetuning when `model.single_task` is set (Tables 2-3).
"""
from __future__ import annotations

from typing import Any, Mapping

from repro.tasks import masked_image, image_label, translation, representation  # noqa: F401,I001  (they register, in this order)
from repro.tasks.base import TASKS, Task, register, task_class
from repro.tasks.generation import SingleTaskGeneration

__all__ = ["TASKS", "Task", "check_task", "make_task", "register", "task_class"]


def make_task(cfg: Mapping[str, Any]) -> Task:
    task = task_class(cfg).from_config(cfg)
    if (cfg.get("model") or {}).get("single_task"):   # continued single-task generation (Tables 2-3)
        return SingleTaskGeneration(task)
    return task


def check_task(cfg: Mapping[str, Any]) -> None:
    """A task's own checks before any job starts (weights and modalities it needs); UserError if bad."""
    task_class(cfg).check_config(cfg)

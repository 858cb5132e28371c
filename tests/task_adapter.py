"""Test-only bridge to the agreed Task interface (issue 10) while tasks still have the old one.

The training harness calls `task.encoders(model, variant)` and `task.training_data(cfg, deps)`
unconditionally (repro/tasks/base.py, written by another worker). Tasks of this branch still
take `encoders(variant)` and only some have `training_data`; `install()` wraps `make_task` where
the jobs layer calls it so that they answer the new calls the old way. Once a task has the new
`encoders(model, variant)` the wrapper leaves it alone, so this is a no-op after the merge
(and can then be deleted with its one use in conftest.py, and the one in test_train_ddp.py).
"""
from __future__ import annotations

import inspect
from typing import Any


class OldInterfaceTask:
    """A task of the old interface, answering the new interface's two calls."""

    def __init__(self, task: Any):
        self._task = task

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def encoders(self, *args) -> dict:
        """(model, variant) as the harness calls it, or (variant) as old task code still does."""
        return self._task.encoders(args[-1])

    def training_data(self, cfg, deps):
        if hasattr(self._task, "training_data"):
            return self._task.training_data(cfg, deps)
        from repro.jobs.datasets import load_images

        return load_images(cfg["data"], "train")


def adapt(task: Any) -> Any:
    params = list(inspect.signature(task.encoders).parameters)
    return task if len(params) >= 2 else OldInterfaceTask(task)


def install(monkeypatch=None) -> None:
    """Wrap repro.jobs.trained.make_task (with pytest's monkeypatch when given, else for good)."""
    import repro.jobs.trained as trained

    original = trained.make_task
    if getattr(original, "adapted", False):
        return

    def make_task(cfg):
        return adapt(original(cfg))
    make_task.adapted = True
    if monkeypatch is not None:
        monkeypatch.setattr(trained, "make_task", make_task)
    else:
        trained.make_task = make_task

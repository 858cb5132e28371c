"""Job body: produce a row's samples with its task's sampler (its model, if it has one).

Samples are saved as uint8 arrays (as ADM saves them), so evaluation can be re-run from
them without sampling again.
"""
from __future__ import annotations

from typing import Any

from repro.diffusion import MTProcess
from repro.jobs.store import JobDir
from repro.jobs.train import load_trained
from repro.tasks import make_task


def sampling_process(train_cfg: dict, n_modalities: int, steps: int | str) -> MTProcess:
    """The training process respaced to `steps` (weights re-derived on the new grid)."""
    from repro.jobs.train import make_process

    return make_process(train_cfg["diffusion"], n_modalities, respacing=steps)


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    model = process = None
    if "model" in deps:
        task, model, _, train_cfg = load_trained(deps["model"])
        process = sampling_process(train_cfg, task.n_modalities(train_cfg["model"]["variant"]), cfg["sample"]["steps"])
        print(f"sampling with {process.num_steps} respaced steps of T={train_cfg['diffusion']['T']}")
    else:
        task = make_task(cfg)
    return task.sample(cfg, out, model, process)

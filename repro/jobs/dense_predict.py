"""Job body: a trained dense network's predictions on the test split, before and after denoising.

Writes the one samples format (`repro.jobs.samples`, kind "dense"): the test images and, per
task, the final (denoised) outputs and, for DiffusionMTL's networks, the preliminary ones
(P_init, before denoising). Inference is stochastic (design 4): the noise comes from one
generator seeded by the job's seed, so a re-run gives the same predictions.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import default_collate

from repro.data.pixels import to_uint8
from repro.data.registry import load_dense
from repro.jobs import samples
from repro.jobs.trained import load_dense_trained
from repro.jobs.store import JobDir


def reads(view: Mapping[str, Any]) -> list[str]:
    return ["seed", "data", "eval.n_images", "eval.batch_size"]


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    task, model, _ = load_dense_trained(deps["model"])
    test = load_dense(cfg["data"], "test")
    n, bs = min(cfg["eval"]["n_images"], len(test)), cfg["eval"]["batch_size"]
    g = torch.Generator().manual_seed(int(cfg["seed"]))
    parts: dict[str, list[np.ndarray]] = {}
    images = []
    for lo in range(0, n, bs):
        batch = default_collate([test[i] for i in range(lo, min(lo + bs, n))])
        images.append(to_uint8(batch["image"]))
        for stage, outputs in task.predict(model, batch["image"], g).items():
            for t, y in outputs.items():
                parts.setdefault(f"{stage}_{t}", []).append(y)
    arrays = {"images": np.concatenate(images), **{k: np.concatenate(v) for k, v in parts.items()}}
    samples.write(out, "dense", arrays)
    return {"samples": samples.FILE, "kind": "dense", "n_images": n, "tasks": list(task.tasks),
            "denoised": any(k.startswith("initial_") for k in arrays)}

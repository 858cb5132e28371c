"""Job body: held-out noise-prediction error of a trained diffusion model per timestep bucket.

A job of its own that reads the finished train job (rather than a step at the end of
training): the train jobs' keys, and so every trained model in the store, stay as they are,
and the diagnostics of a model can be recomputed or extended without retraining it.

The model is the EMA network sampling uses. The images are the first `diagnose.n_images`
of the *test* split (held out), turned into (z_0, X, network inputs) as training does
(`task.batch`, from a generator seeded by the job's seed, so that every rerun draws the same
modality data, steps and noise). For the masked-image task the masks are drawn from the
training distribution (`task.train_patches`) and the error is reported inside the mask
(the pixels the model has to invent) and outside it (the pixels it is shown); every
modality head's eq. 6 term is reported per bucket too (`repro.diffusion.diagnostics`).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from repro.data.masks import apply_mask
from repro.data.registry import data_reads, load_images
from repro.diffusion.diagnostics import BUCKETS, eps_mse_by_step
from repro.errors import UserError
from repro.jobs.store import JobDir
from repro.jobs.trained import load_trained
from repro.tasks.base import Task
from repro.tasks.masked_image import MODALITY, MaskedImageTask

SEED_OFFSET = 4_242   # keeps the diagnostic draws apart from sampling's (same job seed)


def reads(view: Mapping[str, Any]) -> list[str]:
    """What a diagnose job reads of its config (the trained model itself is its dependency)."""
    return ["seed", "diagnose.n_images", "diagnose.buckets", "diagnose.batch_size", *data_reads(view["data"], "test")]


def diagnosable(task: Task) -> bool:
    """Tasks whose training batches are the dataset's labelled images (Tables 1-3): their
    held-out split is the test split of the same loader."""
    return type(task.base).training_data is Task.training_data


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    task, model, process, train_cfg = load_trained(deps["model"])
    if not diagnosable(task):
        raise UserError(f"diagnose: the {task.base.name} task trains on other data than labelled images; "
                        f"its held-out diagnostics are not implemented")
    variant = train_cfg["model"]["variant"]
    d = cfg["diagnose"]
    test = load_images(cfg["data"], "test")
    n = min(int(d["n_images"]), len(test))
    idx = np.arange(n)
    g = torch.Generator().manual_seed(int(cfg["seed"]) * 1_000_003 + SEED_OFFSET)
    images, labels = test.images(idx), torch.as_tensor(test.labels[idx])
    regions = None
    if isinstance(task.base, MaskedImageTask):
        # The training batch with its masks kept: inside = the masked pixels, outside = the rest
        # (for the ADM baseline too, which never sees the mask: the same pixels, unconditionally).
        mask = task.base.masks(n, task.base.train_patches, g)
        z0, x, net_inputs = images, {MODALITY: apply_mask(images, mask)}, {}
        regions = {"inside": 1 - mask, "outside": mask}
    else:
        z0, x, net_inputs = task.batch(images, labels, g)
    encoders = task.encoders(model, variant)
    kinds = {k: v for k, v in task.kinds.items() if k in encoders}
    records = eps_mse_by_step(model, process, z0, x, encoders, kinds, g, regions=regions,
                              buckets=int(d.get("buckets", BUCKETS)), batch_size=int(d["batch_size"]),
                              net_inputs=net_inputs)
    line = " ".join(f"{r['eps']:.3g}" for r in records)
    print(f"{variant}: held-out eps MSE per bucket of {process.num_steps // len(records)} steps: {line}")
    return {"loss_by_t": records, "n_images": n, "variant": variant, "weights": "ema",
            "training_steps": train_cfg["train"]["steps"]}

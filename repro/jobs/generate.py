"""Job body: a generation row's samples (Tables 2 and 3), saved as uint8 for re-evaluation.

Reads the row's model (a train or released job) and, for `_g` rows, its noisy classifier.
`method: generate` samples from scratch (repro.tasks.generation.generate);
`method: restore` restores masked test images with MT-Diffusion-X (Table 3's
MT-Diffusion* rows) and scores the restored images as samples. Writes `generations` in
the one samples format (`repro.jobs.samples`).
"""
from __future__ import annotations

import functools
import time
from typing import Any, Callable, Mapping

import numpy as np
import torch

from repro.data.pixels import to_uint8
from repro.data.registry import load_images, num_classes
from repro.errors import UserError
from repro.jobs import samples
from repro.jobs.sample import sampling_autocast, sampling_process
from repro.jobs.store import JobDir
from repro.jobs.trained import load_denoiser
from repro.tasks.generation import generate, restore_for_generation
from repro.tasks.masked_image import MaskedImageTask


def reads(view: Mapping[str, Any]) -> list[str]:
    """What a generate job reads of its view (repro.jobs.job.select; tests/test_job_reads.py).

    `data` and `row` are read as whole blocks: the dataset is named by its block (the registry
    takes it whole; restoration rows load its test split), and a row's settings are read by
    name below. Their keys were fixed before this declaration and stay so: `data.n_train`,
    `row.model` and `row.classifier` (the dependencies, keyed through their own jobs) are hashed
    though this body looks at none of them; narrowing them is a key change for a CODE_VERSION
    bump. `diffusion.prior` is in the view only for a model with modalities (repro.plan)."""
    return ["seed", "data", "row", "sample", "eval.n_images", "eval.uint8_rounding", "diffusion.prior", "snapshot"]


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    from repro.jobs.trained import load_classifier

    row, smp = cfg["row"], cfg["sample"]
    snapshot = cfg.get("snapshot")   # a training step: sample that EMA snapshot (efficiency curves)
    # the model behind the network input it was trained with (repro.jobs.trained.read_network)
    task, model, _, train_cfg = load_denoiser(deps["model"], step=snapshot)
    variant = train_cfg["model"]["variant"]
    # Algorithm 1's prior only differs between readings for a model with modalities (repro.plan
    # keys the job on it there); without any, `shifted` is `paper`.
    prior = cfg["diffusion"]["prior"] if task.n_modalities(variant) else "paper"
    steps = row.get("steps", smp["steps"])
    process = sampling_process(train_cfg, task.n_modalities(variant), steps)
    classifier = load_classifier(deps["classifier"]) if "classifier" in deps else None
    n, res = cfg["eval"]["n_images"], cfg["data"]["resolution"]
    common = dict(seed=cfg["seed"], batch_size=smp["batch_size"], prior=prior,
                  clip_denoised=smp["clip_denoised"], classifier=classifier,
                  guidance_scale=float(row.get("guidance_scale", 0.0)), num_classes=num_classes(cfg["data"]))
    print(f"{row['name']}" + (f" after {snapshot} training steps" if snapshot is not None else "")
          + f": {n} images, {process.num_steps} respaced steps of T={train_cfg['diffusion']['T']}"
          + (f", classifier guidance scale {common['guidance_scale']}" if classifier is not None else ""))
    extra: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    if row.get("method", "generate") == "restore":
        if not isinstance(task.base, MaskedImageTask):
            raise UserError(f"row {row['name']!r}: restoration rows need a model of the masked-image task")
        test = load_images(cfg["data"], "test")
        n = min(n, len(test))
        originals = test.images(np.arange(n))
        masks = task.base.masks(n, int(row["mask_patches"]), torch.Generator().manual_seed(cfg["seed"] + 17))
        extra["masked_fraction"] = float(1 - masks.mean())
        with sampling_autocast(cfg, model):
            images = restore_for_generation(task, model, process, originals, masks,
                                            composite=row.get("composite", True), **common)
        classes = torch.as_tensor(test.labels[:n])
        arrays["mask"] = masks[:, 0].to(torch.uint8).numpy()
    else:
        with sampling_autocast(cfg, model):
            images, classes = _generate_resumable(out, cfg, n, functools.partial(
                generate, task, variant, model, process, resolution=res, condition=row.get("condition", "none"),
                sampler=row.get("sampler", smp.get("sampler", "ancestral")), **common))
    rounding = cfg["eval"]["uint8_rounding"]   # ADM's export truncates (paper profile)
    samples.write(out, "generations", {"images": to_uint8(images, rounding), "labels": classes.numpy().astype(np.int64),
                                       **arrays})
    samples.write_grids(out, samples.read(out))
    return {"samples": samples.FILE, "kind": "generations", "n_images": len(images), "sampling_steps": process.num_steps,
            "training_steps": snapshot if snapshot is not None else train_cfg.get("train", {}).get("steps"),
            "uint8_rounding": rounding, **extra}


BATCH_FILE = "checkpoint_batches/{b:05d}.npz"   # resume state (repro.jobs.store.RESUME_STATE)


def _generate_resumable(out: JobDir, cfg: dict, n: int, draw: Callable[..., tuple[torch.Tensor, torch.Tensor]]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """`draw(n=..)`'s images and classes, one batch at a time, each saved as it finishes (through
    the store's manifest) and reused by a re-run after a kill: batch b has its own seed
    (`generate(first_batch=b)`), so a resumed job's samples are bit-identical to an
    uninterrupted one's. `sample.sleep_s` (tests only) slows each batch enough to kill it."""
    from repro.io import atomic_save_npz

    bs = cfg["sample"]["batch_size"]
    images, classes = [], []
    for b, lo in enumerate(range(0, n, bs)):
        path = out / BATCH_FILE.format(b=b)
        if path.is_file():      # written whole (atomic, checked by the store's scrub on start)
            with np.load(path) as f:
                images.append(torch.from_numpy(f["images"]))
                classes.append(torch.from_numpy(f["labels"]))
            continue
        x, y = draw(n=min(bs, n - lo), first_batch=b)
        atomic_save_npz(path, images=x.numpy(), labels=y.numpy())
        images.append(x)
        classes.append(y)
        if cfg["sample"].get("sleep_s"):
            time.sleep(cfg["sample"]["sleep_s"])
    return torch.cat(images), torch.cat(classes)

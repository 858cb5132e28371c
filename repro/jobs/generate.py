"""Job body: a generation row's samples (Tables 2 and 3), saved as uint8 for re-evaluation.

Reads the row's model (a train or released job) and, for `_g` rows, its noisy classifier.
`method: generate` samples from scratch (repro.tasks.generation.generate);
`method: restore` restores masked test images with MT-Diffusion-X (Table 3's
MT-Diffusion* rows) and scores the restored images as samples.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from repro.data.pixels import to_uint8
from repro.io import atomic_save_npz, atomic_write_bytes
from repro.jobs.sample import sampling_process
from repro.jobs.store import JobDir
from repro.jobs.trained import load_trained
from repro.tasks.generation import base_task, generate, restore_for_generation

FILE = "samples.npz"


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    from repro.jobs.trained import load_classifier
    from repro.tasks.image_label import num_classes

    row, smp = cfg["row"], cfg["sample"]
    snapshot = cfg.get("snapshot")   # a training step: sample that EMA snapshot (efficiency curves)
    task, model, _, train_cfg = load_trained(deps["model"], step=snapshot)
    variant = train_cfg["model"]["variant"]
    steps = row.get("steps", smp["steps"])
    process = sampling_process(train_cfg, task.n_modalities(variant), steps)
    classifier = load_classifier(deps["classifier"]) if "classifier" in deps else None
    n, res = cfg["eval"]["n_images"], cfg["data"]["resolution"]
    common = dict(seed=cfg["seed"], batch_size=smp["batch_size"], prior=cfg["diffusion"]["prior"],
                  clip_denoised=smp["clip_denoised"], classifier=classifier,
                  guidance_scale=float(row.get("guidance_scale", 0.0)), num_classes=num_classes(cfg["data"]))
    print(f"{row['name']}" + (f" after {snapshot} training steps" if snapshot is not None else "")
          + f": {n} images, {process.num_steps} respaced steps of T={train_cfg['diffusion']['T']}"
          + (f", classifier guidance scale {common['guidance_scale']}" if classifier is not None else ""))
    extra: dict[str, Any] = {}
    if row.get("method", "generate") == "restore":
        from repro.jobs.datasets import load_images

        test = load_images(cfg["data"], "test")
        n = min(n, len(test))
        originals = test.images(np.arange(n))
        masks = base_task(task).masks(n, int(row["mask_patches"]), torch.Generator().manual_seed(cfg["seed"] + 17))
        extra["masked_fraction"] = float(1 - masks.mean())
        images = restore_for_generation(task, model, process, originals, masks, composite=row.get("composite", True),
                                        **common)
        classes = torch.as_tensor(test.labels[:n])
        extra["masks"] = masks[:, 0].to(torch.uint8).numpy()
    else:
        images, classes = generate(task, variant, model, process, n=n, resolution=res,
                                   condition=row.get("condition", "none"), sampler=row.get("sampler", "ancestral"),
                                   **common)
    arrays = {"mask": extra.pop("masks")} if "masks" in extra else {}
    atomic_save_npz(out / FILE, images=to_uint8(images), labels=classes.numpy().astype(np.int64), **arrays)
    save_grid(out / "grid.png", images[:64])
    return {"file": FILE, "n_images": len(images), "sampling_steps": process.num_steps,
            "training_steps": snapshot if snapshot is not None else train_cfg.get("train", {}).get("steps"), **extra}


def save_grid(path, images: torch.Tensor, nrow: int = 8) -> None:
    """A PNG of the first samples, 8 per row (for looking at, not for metrics)."""
    import io

    from PIL import Image
    from torchvision.utils import make_grid

    grid = make_grid(images.clamp(-1, 1), nrow=nrow, padding=1, pad_value=1.0)
    buf = io.BytesIO()
    Image.fromarray(to_uint8(grid)).save(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())

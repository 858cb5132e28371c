"""Job body: import a released guided-diffusion checkpoint into the job store (Table 3's ADM*).

The paper's ADM* rows use openai/guided-diffusion's released 128x128_diffusion.pt (the U-Net
of Dhariwal & Nichol 2021, class-conditional, learned variance). The job builds the model its
config describes, loads the file with strict=True (names, shapes and count must all match) and
writes it as a finished train job would (`model.pt` with the same weights as "ema" and
"model"), so sampling and continued training read it like any other trained model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.errors import UserError
from repro.io import atomic_save_torch, load_torch
from repro.jobs.store import JobDir
from repro.jobs.train import MODEL, build


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    path = Path(cfg["released"]).expanduser()
    _, model, _ = build(cfg)
    state = load_torch(path, what="released guided-diffusion checkpoint")
    try:
        model.backbone.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the configured U-Net (unet block of the spec): "
                        f"{str(err).splitlines()[0]}") from None
    full = model.state_dict()
    atomic_save_torch(out / MODEL, {"ema": full, "model": full, "config": cfg})
    n = sum(p.numel() for p in model.backbone.parameters())
    print(f"imported {path} ({n:,} parameters)")
    return {"model": MODEL, "parameters": n, "released": str(path)}

"""Job body: import a released guided-diffusion checkpoint into the job store (Table 3's ADM*).

The paper's ADM* rows use openai/guided-diffusion's released 128x128_diffusion.pt (the U-Net
of Dhariwal & Nichol 2021, class-conditional, learned variance). The job builds the model its
config describes and loads the file with strict=True (repro.jobs.trained.import_released),
then writes it as a finished train job would (`model.pt` with the same weights as "ema" and
"model"), so sampling and continued training read it like any other trained model.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from repro.io import atomic_save_torch
from repro.jobs.store import JobDir
from repro.jobs.trained import MODEL, import_released


def reads(view: dict) -> list[str]:
    """What this body reads (repro.jobs.job.select): the file, and what building the model reads.
    Not the network input: a released checkpoint was trained on the raw input, and is sampled so
    (its job config holds no `network_input`, repro.jobs.trained.network_input_of)."""
    from repro.jobs.train import NETWORK_INPUT, reads as train_reads

    return ["released", *(p for p in train_reads(view) if p.split(".")[0] not in ("train", "seed")
                          and p != NETWORK_INPUT)]


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    path = Path(cfg["released"]).expanduser()
    model = import_released(cfg, path)
    full = model.state_dict()
    atomic_save_torch(out / MODEL, {"ema": full, "model": full})
    n = sum(p.numel() for p in model.backbone.parameters())
    print(f"imported {path} ({n:,} parameters)")
    return {"model": MODEL, "parameters": n, "released": str(path)}

"""Job body: train one diffusion model (Algorithm 2) with EMA, resumable.

All randomness of step s (batch indices, masks, timesteps, noise, dropout) is drawn from
generators seeded by (seed, s), so a run resumed from the checkpoint of step s continues
exactly as an uninterrupted run would: the same batches, the same noise, the same
weights, bit for bit on CPU.
"""
from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from tqdm import tqdm

from repro.diffusion import MTProcess, training_losses
from repro.io import atomic_save_torch, atomic_write_json
from repro.jobs.datasets import load_images
from repro.jobs.store import JobDir
from repro.tasks import make_task

CHECKPOINT = "checkpoint.pt"   # the latest training state (for resuming)
MODEL = "model.pt"             # the final EMA weights (what sampling uses)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def build(cfg: Mapping[str, Any]):
    """Task, network and training-time forward process of a train job's config."""
    task = make_task(cfg)
    variant = cfg["model"]["variant"]
    model = task.build_model(cfg["unet"], variant)
    d = cfg["diffusion"]
    process = MTProcess.from_config(d["schedule"], d["T"], d["weights"], task.n_modalities(variant),
                                    weight_value=d["weight_value"])
    return task, model, process


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, rate: float) -> None:
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(rate).add_(pm.detach(), alpha=1 - rate)


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    tr, seed = cfg["train"], cfg["seed"]
    torch.manual_seed(seed)
    task, model, process = build(cfg)
    variant = cfg["model"]["variant"]
    encoders, kinds = task.encoders(variant), {k: v for k, v in task.kinds.items() if k in task.encoders(variant)}
    data = load_images(cfg["data"], "train")
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], weight_decay=0.0)
    start, curve = 0, []
    if (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        start, curve = state["step"], state["curve"]
        print(f"resuming from step {start}")
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{cfg['model']['variant']} model: {n_params:,} parameters; {len(data)} training images")

    model.train()
    bar = tqdm(range(start, tr["steps"]), initial=start, total=tr["steps"], desc=f"train {variant}",
               dynamic_ncols=True, mininterval=1.0)
    for step in bar:
        g = step_generator(seed, step)
        torch.manual_seed(seed * 1_000_003 + step)      # dropout
        idx = torch.randint(len(data), (tr["batch_size"],), generator=g)
        z0, x, net_inputs = task.batch(data.images(idx), torch.as_tensor(data.labels[idx.numpy()]), g)
        net = functools.partial(model, **net_inputs) if net_inputs else model   # e.g. y= class labels
        loss, parts = training_losses(net, process, z0, x, encoders, kinds, cfg["diffusion"]["lam"], g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema_update(ema, model, tr["ema_rate"])
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {step}")
        if step % tr["log_every"] == 0 or step == tr["steps"] - 1:
            curve.append({"step": step, "loss": loss.item(), **{k: v.item() for k, v in parts.items()}})
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % tr["checkpoint_every"] == 0 and step + 1 < tr["steps"]:
            save_checkpoint(out, model, ema, opt, step + 1, curve)
    atomic_save_torch(out / MODEL, {"ema": ema.state_dict(), "model": model.state_dict(), "config": cfg})
    atomic_write_json(out / "loss_curve.json", curve)
    return {"steps": tr["steps"], "parameters": n_params, "final_loss": curve[-1]["loss"] if curve else None,
            "model": MODEL}


def save_checkpoint(out: JobDir, model, ema, opt, step: int, curve: list) -> None:
    atomic_save_torch(out / CHECKPOINT, {"model": model.state_dict(), "ema": ema.state_dict(),
                                         "opt": opt.state_dict(), "step": step, "curve": curve})


def load_trained(train_dir: JobDir, *, use_ema: bool = True):
    """(task, EMA model in eval mode, training process, train config) of a finished train job."""
    cfg = json.loads((train_dir / "job.json").read_text())["config"]
    task, model, process = build(cfg)
    state = torch.load(train_dir / MODEL, map_location="cpu", weights_only=False)
    model.load_state_dict(state["ema" if use_ema else "model"])
    return task, model.eval().requires_grad_(False), process, cfg

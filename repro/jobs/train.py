"""Job body: train one diffusion model (Algorithm 2) with EMA, resumable, data-parallel.

What one step computes is `diffusion_step`: a global batch of examples from the task's
training data, turned by the task into (z_0, X, extra network inputs), timesteps and noise
from the step's generator, and the multi-task loss (eq. 6) on this rank's slice. The loop
around it (seeding per step, EMA, checkpoints, bit-exact resuming, stop requests, ranks,
EMA snapshots for Table 2's efficiency curves) is repro/jobs/harness.py.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from repro.diffusion import MTProcess, training_losses
from repro.diffusion.loss import draw_steps_and_noise
from repro.io import atomic_save_torch, atomic_write_json
from repro.jobs.distributed import World, process_group, world_from_environment
from repro.jobs.harness import CHECKPOINT, SNAPSHOT, TrainSettings, fit
from repro.data.registry import data_reads
from repro.jobs.store import JobDir
from repro.jobs.trained import MODEL, build_diffusion, init_from
from repro.nn.precision import autocast, precision_of
from repro.tasks import make_task

STOPPABLE = True   # polls repro.jobs.runner.stop_requested() after every step (repro/jobs/harness.py)
__all__ = ["CHECKPOINT", "MODEL", "SNAPSHOT", "diffusion_step", "run", "train"]


def diffusion_step(model: nn.Module, task, process: MTProcess, data, lam: float,
                   encoders: Mapping[str, Callable], kinds: Mapping[str, str], batch_size: int,
                   precision: str = "fp32"):
    """Algorithm 2's step as a harness `Step`: the loss of this rank's slice of a global batch.
    `precision` "bf16" runs the forward pass and loss under bf16 autocast (train.autocast);
    backward and AdamW stay outside it, on the fp32 master weights (repro.nn.precision)."""
    def step(g: torch.Generator, take: Callable[[Any], Any]) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(len(data), (batch_size,), generator=g)
        z0, x, net_inputs = task.batch(data.images(idx), torch.as_tensor(data.labels[idx.numpy()]), g)
        k, noise = draw_steps_and_noise(process, z0.shape, g, z0.dtype)
        z0, x, net_inputs, k, noise = (take(v) for v in (z0, x, net_inputs, k, noise))
        net = functools.partial(model, **net_inputs) if net_inputs else model   # e.g. y= class labels
        with autocast(z0.device, precision):
            return training_losses(net, process, z0, x, encoders, kinds, lam, steps=k, noise=noise)
    return step


# What this body reads of its job's config (repro.jobs.job.select keeps exactly these, so the
# job's key hashes them and nothing else; tests/test_job_reads.py checks it against the code).
TRAIN_READS = ("seed", "unet", "task", "model.variant", "model.single_task", "model.label_dropout",
               "diffusion.schedule", "diffusion.T", "train.steps", "train.batch_size", "train.lr",
               "train.ema_rate", "train.checkpoint_every", "train.log_every", "train.snapshot_every",
               "train.sleep_s", "train.autocast")
# Eq. 3's aggregation weights and eq. 6's lambda only act through the modalities: a model
# without any (the ADM baseline) never reads them.
MULTI_TASK_READS = ("diffusion.weights", "diffusion.weight_value", "diffusion.lam")


def reads(view: Mapping[str, Any]) -> list[str]:
    """The config paths a train (or released) job reads, given the plan's view of it."""
    multi = make_task(view).n_modalities(view["model"]["variant"]) > 0
    return [*TRAIN_READS, *data_reads(view["data"], "train"), *(MULTI_TASK_READS if multi else ())]


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    world = world_from_environment()
    with process_group(world):
        return train(cfg, out, deps, world)


def train(cfg: dict, out: JobDir, deps: dict[str, JobDir], world: World = World()) -> dict[str, Any]:
    """Algorithm 2 on this rank's slice of every global batch; rank 0 writes the files."""
    variant = cfg["model"]["variant"]
    s = TrainSettings.from_config(cfg["train"], cfg["seed"], desc=f"train {variant}")
    torch.manual_seed(s.seed)
    task, model, process = build_diffusion(cfg)
    encoders = task.encoders(model, variant)
    kinds = {k: v for k, v in task.kinds.items() if k in encoders}
    data = task.training_data(cfg, deps)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{variant} model: {n_params:,} parameters; {len(data)} training images; "
          f"global batch {s.batch_size} over {world.world_size} rank(s) on {world.device}")
    lam = cfg["diffusion"]["lam"] if kinds else 0.0   # eq. 6 has no modality term without modalities
    precision = precision_of(cfg["train"].get("autocast"))
    step = diffusion_step(model, task, process, data, lam, encoders, kinds, s.batch_size, precision)
    init = functools.partial(init_from, deps["init"]) if "init" in deps else None   # continued training
    model, ema, state = fit(model, step, s, out, world, init=init)
    if world.is_main:
        atomic_save_torch(out / MODEL, {"ema": ema.state_dict(), "model": model.state_dict()})
        atomic_write_json(out / "loss_curve.json", state.curve)
    return {"steps": s.steps, "parameters": n_params, "final_loss": state.curve[-1]["loss"] if state.curve else None,
            "model": MODEL, "world_size": world.world_size}

"""Job body: train one diffusion model (Algorithm 2) with EMA, resumable, data-parallel.

All randomness of step s (batch indices, masks, timesteps, noise, dropout) is drawn from
generators seeded by (seed, s), so a run resumed from the checkpoint of step s continues
exactly as an uninterrupted run would: the same batches, the same noise, the same
weights, bit for bit on CPU.

With W ranks (SLURM tasks, see repro/jobs/distributed.py) every rank draws the same global
batch of `train.batch_size` (the paper's batch size) and trains on its slice of it; the
averaged gradients make the update, and the logged loss, those of the global batch.

A stop request (SLURM's SIGTERM on preemption, scancel or requeue; submitit's USR2 before
the time limit: repro/cluster.py) is honoured at the end of the current step: rank 0
checkpoints that step and every rank raises `Preempted`; the requeued job resumes there.
Checkpoints are also written every `train.checkpoint_every` steps, atomically. With
`train.snapshot_every` set, the EMA weights at every multiple of it are kept as well
(`snapshots/ema_<step>.pt`): the quality-vs-training-iterations curves behind Table 2's
efficiency claim sample them (repro.plan.efficiency_plan).
"""
from __future__ import annotations

import copy
import functools
import json
import math
import time
from typing import Any, Mapping

import torch
from tqdm import tqdm

from repro.diffusion import MTProcess, training_losses
from repro.diffusion.loss import draw_steps_and_noise
from repro.io import atomic_save_torch, atomic_write_json
from repro.jobs.datasets import data_reads, load_images
from repro.jobs.distributed import World, all_sum, average_gradients, barrier, process_group, world_from_environment
from repro.jobs.runner import Preempted, stop_requested
from repro.jobs.store import JobDir
from repro.tasks import make_task

STOPPABLE = True               # polls repro.jobs.runner.stop_requested() after every step
CHECKPOINT = "checkpoint.pt"   # the latest training state (for resuming)
MODEL = "model.pt"             # the final EMA weights (what sampling uses)
SNAPSHOT = "snapshots/ema_{step:07d}.pt"   # EMA weights after `step` steps (train.snapshot_every)
# Dropout seeds of rank r are offset by r * this, so that ranks draw independent dropout
# masks while rank 0 (and a single process) keeps the seeds of a one-process run.
DROPOUT_RANK_STRIDE = 7_919_000_003


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


# What this body reads of its job's config (repro.jobs.job.select keeps exactly these, so the
# job's key hashes them and nothing else; tests/test_job_reads.py checks it against the code).
TRAIN_READS = ("seed", "unet", "task", "model.variant", "model.single_task", "model.label_dropout",
               "diffusion.schedule", "diffusion.T", "train.steps", "train.batch_size", "train.lr",
               "train.ema_rate", "train.checkpoint_every", "train.log_every", "train.snapshot_every",
               "train.sleep_s")
# Eq. 3's aggregation weights and eq. 6's lambda only act through the modalities: a model
# without any (the ADM baseline) never reads them.
MULTI_TASK_READS = ("diffusion.weights", "diffusion.weight_value", "diffusion.lam")


def reads(view: Mapping[str, Any]) -> list[str]:
    """The config paths a train (or released) job reads, given the plan's view of it."""
    multi = make_task(view).n_modalities(view["model"]["variant"]) > 0
    return [*TRAIN_READS, *data_reads(view["data"], "train"), *(MULTI_TASK_READS if multi else ())]


def make_process(d: Mapping[str, Any], n_modalities: int, respacing: str | int | None = None) -> MTProcess:
    """The forward process of a train config's `diffusion` block; with no modality the
    aggregation weights never enter (eq. 3 has no sum), so they are not read."""
    weights = (d["weights"], d["weight_value"]) if n_modalities else ("zero", 1.0)
    return MTProcess.from_config(d["schedule"], d["T"], weights[0], n_modalities, weight_value=weights[1],
                                 respacing=respacing)


def build(cfg: Mapping[str, Any]):
    """Task, network and training-time forward process of a train job's config."""
    task = make_task(cfg)
    variant = cfg["model"]["variant"]
    model = task.build_model(cfg["unet"], variant)
    return task, model, make_process(cfg["diffusion"], task.n_modalities(variant))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, rate: float, step: int) -> None:
    """EMA of the weights with a warm-up, decay = min(rate, (1 + step) / (10 + step)).

    Without the warm-up a short run's EMA is mostly its initialisation (0.999**600 = 0.55),
    whose zero output convolution predicts eps = 0 and samples come out as noise; at the
    paper's 1M steps the warm-up makes no difference.
    """
    decay = min(rate, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    world = world_from_environment()
    with process_group(world):
        return train(cfg, out, deps, world)


def train(cfg: dict, out: JobDir, deps: dict[str, JobDir], world: World = World()) -> dict[str, Any]:
    """Algorithm 2 on this rank's slice of every global batch; rank 0 writes the files."""
    tr, seed = cfg["train"], cfg["seed"]
    torch.manual_seed(seed)
    task, model, process = build(cfg)
    model.to(world.device)
    variant = cfg["model"]["variant"]
    encoders, kinds = task.encoders(variant), {k: v for k, v in task.kinds.items() if k in task.encoders(variant)}
    # Tasks with paired or derived data (translation, representation) load their own training split.
    data = task.training_data(cfg, deps) if hasattr(task, "training_data") else load_images(cfg["data"], "train")
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=tr["lr"], weight_decay=0.0)
    shard = world.shard(tr["batch_size"])
    start, curve = 0, []
    if (out / CHECKPOINT).exists():
        start, curve = load_checkpoint(out, model, ema, opt)
        print(f"resuming from step {start}")
    elif "init" in deps:   # continued training / finetuning from another job's final weights
        init_from(deps["init"], model, ema)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{variant} model: {n_params:,} parameters; {len(data)} training images; "
          f"global batch {tr['batch_size']} over {world.world_size} rank(s) on {world.device}")

    model.train()
    bar = tqdm(range(start, tr["steps"]), initial=start, total=tr["steps"], desc=f"train {variant}",
               dynamic_ncols=True, mininterval=1.0, disable=not world.is_main)
    for step in bar:
        # Every rank draws the whole global batch and its randomness from the step's generator
        # (cheap next to the network), then keeps its slice: the same examples, masks, steps
        # and noise as a single process, whatever the number of ranks.
        g = step_generator(seed, step)
        torch.manual_seed(seed * 1_000_003 + step + world.rank * DROPOUT_RANK_STRIDE)   # dropout
        idx = torch.randint(len(data), (tr["batch_size"],), generator=g)
        z0, x, net_inputs = task.batch(data.images(idx), torch.as_tensor(data.labels[idx.numpy()]), g)
        k, noise = draw_steps_and_noise(process, z0.shape, g, z0.dtype)
        z0, x, net_inputs, k, noise = (_slice(v, shard, world.device) for v in (z0, x, net_inputs, k, noise))
        net = functools.partial(model, **net_inputs) if net_inputs else model   # e.g. y= class labels
        loss, parts = training_losses(net, process, z0, x, encoders, kinds, cfg["diffusion"]["lam"] if kinds else 0.0,
                                      steps=k, noise=noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model.parameters(), world)
        opt.step()
        ema_update(ema, model, tr["ema_rate"], step)
        # One small all-reduce per step: the global-batch loss (mean of equal slices) and
        # whether any rank was asked to stop, so that all ranks stop after the same step.
        stats = all_sum(torch.stack([loss.detach(), *[v.detach() for v in parts.values()],
                                     torch.tensor(float(stop_requested() is not None), device=loss.device)]), world)
        losses = (stats[:-1] / world.world_size).tolist()
        global_loss, global_parts = losses[0], dict(zip(parts, losses[1:]))
        if not math.isfinite(global_loss):
            raise FloatingPointError(f"loss is {global_loss} at step {step}")
        if step % tr["log_every"] == 0 or step == tr["steps"] - 1:
            curve.append({"step": step, "loss": global_loss, **global_parts})
            bar.set_postfix(loss=f"{global_loss:.4f}")
        done = step + 1
        every = tr.get("snapshot_every")
        if every and done % every == 0 and done < tr["steps"] and world.is_main:
            atomic_save_torch(out / SNAPSHOT.format(step=done), {"ema": ema.state_dict(), "step": done})
        if done < tr["steps"] and (stats[-1] > 0 or done % tr["checkpoint_every"] == 0):
            if world.is_main:
                save_checkpoint(out, model, ema, opt, done, curve)
                out.set_status("running", step=done)
            if stats[-1] > 0:   # preempted, timed out or requeued: stop here, resume from `done`
                barrier(world)
                raise Preempted(stop_requested(), done)
        if tr.get("sleep_s"):   # tests only: slow a tiny run down enough to interrupt it mid-way
            time.sleep(tr["sleep_s"])
    if world.is_main:
        atomic_save_torch(out / MODEL, {"ema": ema.state_dict(), "model": model.state_dict(), "config": cfg})
        atomic_write_json(out / "loss_curve.json", curve)
    return {"steps": tr["steps"], "parameters": n_params, "final_loss": curve[-1]["loss"] if curve else None,
            "model": MODEL, "world_size": world.world_size}


def _slice(value: Any, shard: slice, device: torch.device) -> Any:
    """This rank's slice of a global-batch tensor (or of each tensor in a dict), on its device."""
    if isinstance(value, dict):
        return {k: _slice(v, shard, device) for k, v in value.items()}
    return value[shard].to(device)


def save_checkpoint(out: JobDir, model, ema, opt, step: int, curve: list) -> None:
    """The whole training state after `step` steps, written atomically (a kill mid-write leaves
    the previous checkpoint). Batches, masks, steps, noise and dropout of step s are functions
    of (seed, s), so `step` fixes the data order and the RNG streams from here on; the global
    RNG state is kept as well, for any draw outside that scheme."""
    atomic_save_torch(out / CHECKPOINT, {"model": model.state_dict(), "ema": ema.state_dict(),
                                         "opt": opt.state_dict(), "step": step, "curve": curve,
                                         "rng": torch.get_rng_state()})


def init_from(job: JobDir, model, ema) -> None:
    """Start from a finished train (or released) job's final weights: raw and EMA as saved."""
    state = torch.load(job / MODEL, map_location="cpu", weights_only=False)
    model.load_state_dict(state.get("model", state["ema"]))
    ema.load_state_dict(state["ema"])
    print(f"initialised from {job.path.name} ({json.loads((job / 'job.json').read_text())['name']})")


def load_checkpoint(out: JobDir, model, ema, opt) -> tuple[int, list]:
    """Restore a `save_checkpoint` state in place; returns (step, loss curve so far)."""
    state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
    model.load_state_dict(state["model"])
    ema.load_state_dict(state["ema"])
    opt.load_state_dict(state["opt"])
    if "rng" in state:
        torch.set_rng_state(state["rng"])
    return state["step"], state["curve"]


def load_trained(train_dir: JobDir, *, use_ema: bool = True, step: int | None = None):
    """(task, EMA model in eval mode, training process, train config) of a finished train job;
    with `step`, the EMA weights of its snapshot after that many steps (train.snapshot_every)."""
    cfg = json.loads((train_dir / "job.json").read_text())["config"]
    task, model, process = build(cfg)
    path = train_dir / MODEL
    if step is not None and step != cfg.get("train", {}).get("steps"):
        path = train_dir / SNAPSHOT.format(step=step)
        if not use_ema or not path.exists():
            raise FileNotFoundError(f"{train_dir.path} has no EMA snapshot of step {step} ({path.name}); "
                                    f"its train.snapshot_every is {cfg['train'].get('snapshot_every')}")
    state = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(state["ema" if use_ema else "model"])
    return task, model.eval().requires_grad_(False), process, cfg

"""Job body: train one DiffusionMTL network (or ablation / baseline) on partially labelled images.

What one step computes is `dense_step`: a global batch drawn from the step's generator, the
task's partial-label loss (losses only on the labels each image has, design 3). The loop around
it is the suite's harness (repro/jobs/harness.py: per-step seeding, checkpoints and bit-exact
resuming, stop requests), with DiffusionMTL's optimiser (repro/nn/dense_optim.py): Adam, the
"poly" schedule stepped once per epoch over `train.epochs` (100) epochs, gradients clipped at 10,
no EMA. An epoch is len(data) // batch_size steps (the authors' drop_last loader); batches are
drawn per step (with replacement) rather than as epoch permutations, which is what makes a
step's batch a function of (seed, step) and resuming exact.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate

from repro.data.dense_augment import augmentation
from repro.io import atomic_save_torch, atomic_write_json
from repro.jobs.harness import TrainSettings, fit
from repro.jobs.store import JobDir
from repro.jobs.trained import MODEL, build_dense
from repro.nn.dense_optim import EPOCHS, GRAD_CLIP_NORM, POLY_POWER, dense_optimizer, poly_schedule
from repro.tasks.dense import DenseTask

STOPPABLE = True
READS = ("seed", "data", "task", "model.variant", "train.steps", "train.batch_size", "train.lr",
         "train.weight_decay", "train.epochs", "train.checkpoint_every", "train.log_every", "train.sleep_s",
         "train.augment")   # absent (no augmentation) at smoke and tiny: their keys do not hold it


def reads(view: Mapping[str, Any]) -> list[str]:
    """The config paths a dense_train job reads (the whole `data` block: the embedded scenes keep
    both splits and the mapping files together, `repro.data.registry._dense_paths`)."""
    return list(READS)


def dense_step(model: nn.Module, task: DenseTask, data, batch_size: int,
               augment: Callable[[dict[str, Tensor], torch.Generator], dict[str, Tensor]] | None = None):
    """One harness `Step`: the partial-label loss of this rank's slice of a global batch.
    With `augment` (repro.data.dense_augment.augmentation) every item of the global batch is
    augmented from its unpadded form (`data.unpadded` where the dataset pads its items) with
    draws from the step's generator, so every rank sees the same global batch; without it the
    step draws nothing beyond the batch indices (today's numbers)."""
    native = getattr(data, "unpadded", data.__getitem__)

    def step(g: torch.Generator, take: Callable[[Any], Any]) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(len(data), (batch_size,), generator=g)
        items = [data[int(i)] for i in idx] if augment is None else [augment(native(int(i)), g) for i in idx]
        batch = take(default_collate(items))
        return task.loss(model, batch, g)
    return step


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    t = cfg["train"]
    variant = cfg["model"]["variant"]
    s = TrainSettings.from_config(t, cfg["seed"], ema_rate=None, desc=f"train {variant}")
    torch.manual_seed(s.seed)
    task, model = build_dense(cfg)
    data = task.training_data(cfg)
    name = t.get("augment", "none")
    res = int(cfg["data"]["resolution"])
    augment = augmentation(name, (res, res))
    steps_per_epoch = max(1, len(data) // s.batch_size)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{variant}: {n_params:,} parameters; {len(data)} training images "
          f"({data.flags.sum(0).tolist()} labelled per task {list(task.tasks)}); {steps_per_epoch} steps per epoch"
          + (f"; augmentation {name}" if augment is not None else ""))
    model, _, state = fit(
        model, dense_step(model, task, data, s.batch_size, augment), s, out,
        optimizer=functools.partial(dense_optimizer, lr=s.lr, weight_decay=s.weight_decay),
        schedule=functools.partial(poly_schedule, epochs=int(t["epochs"]), power=POLY_POWER),
        schedule_every=steps_per_epoch, clip_grad_norm=GRAD_CLIP_NORM)
    atomic_save_torch(out / MODEL, {"model": model.state_dict()})
    atomic_write_json(out / "loss_curve.json", state.curve)
    return {"steps": s.steps, "parameters": n_params, "final_loss": state.curve[-1]["loss"] if state.curve else None,
            "model": MODEL, "epochs_horizon": int(t["epochs"]), "default_epochs": EPOCHS,
            **({"augment": name} if augment is not None else {})}

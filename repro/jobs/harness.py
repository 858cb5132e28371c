"""The training harness: one loop for every network this suite trains.

Diffusion models (repro/jobs/train.py, Algorithm 2) and ADM's noisy classifiers
(repro/jobs/classifier.py, guidance and Figure 6) differ only in what one step computes:
a loss on this rank's slice of a global batch drawn from the step's generator. Everything
around it lives here, once:

    seeding      step s draws its batch, masks, timesteps and noise from
                 Generator(seed * 1_000_003 + s + stream), and re-seeds the global RNG
                 (dropout) with the same number plus rank * DROPOUT_RANK_STRIDE; `stream`
                 keeps two networks of the same seed apart (diffusion 0, classifier 7).
    resuming     the whole state (weights, EMA, optimizer, step, curves, global RNG) is
                 checkpointed atomically every `checkpoint_every` steps and on a stop
                 request; since every draw of step s is a function of (seed, s), a resumed
                 run continues bit for bit as the uninterrupted one (on CPU).
    EMA          decay min(ema_rate, (1 + s) / (10 + s)): the warm-up of ADM / guided-diffusion.
    stopping     SLURM's SIGTERM (preemption, requeue, scancel) and submitit's USR2 reach
                 `repro.jobs.runner.stop_requested()`; it is polled after every step, all
                 ranks agree in the step's all-reduce, rank 0 checkpoints and all raise
                 `Preempted` (the job resumes there when requeued).
    ranks        data-parallel over repro/jobs/distributed.py: every rank draws the global
                 batch and trains on its slice; gradients are averaged.
    snapshots    with `snapshot_every`, the EMA weights at every multiple of it are kept
                 (`snapshots/ema_<step>.pt`, Table 2's quality-vs-iterations curves).

The feature network of the embedded profile (repro/metrics/feature_net.py) is *not* trained
here: its batches are epoch-wise permutations drawn from one generator that runs through the
whole training, with Adam and a cosine learning-rate schedule, and it trains in seconds in
the metrics layer, below the jobs. Drawing its batches per step would change its weights, and
with them every LPIPS / FID / IS number of the embedded profiles; nothing about it needs
resuming, ranks or an EMA.

The settings follow NVlabs/edm's training_loop: one typed, defaulted parameter per knob
(defaults: the paper's ImageNet-64 settings, Appendix E), read from a config once at the top.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor, nn
from tqdm import tqdm

from repro.io import atomic_save_torch, load_torch
from repro.nn.precision import autocast, precision_of
from repro.jobs.distributed import World, all_sum, average_gradients, barrier
from repro.jobs.runner import Preempted, stop_requested
from repro.jobs.store import JobDir

CHECKPOINT = "checkpoint.pt"                # the latest training state (for resuming)
SNAPSHOT = "snapshots/ema_{step:07d}.pt"    # EMA weights after `step` steps (snapshot_every)
SEED_STRIDE = 1_000_003                     # step s of seed q uses seed q * SEED_STRIDE + s
# Dropout seeds of rank r are offset by r * this, so that ranks draw independent dropout
# masks while rank 0 (and a single process) keeps the seeds of a one-process run.
DROPOUT_RANK_STRIDE = 7_919_000_003


@dataclass(frozen=True)
class TrainSettings:
    """Everything the loop needs to know (the `train:` block of a spec, plus the job's seed)."""

    steps: int = 1_000_000              # optimizer steps in all (the paper: 1M at 64x64)
    batch_size: int = 80                # global batch over all ranks (the paper's batch size)
    lr: float = 7e-5                    # AdamW learning rate
    weight_decay: float = 0.0           # AdamW weight decay (ADM: 0 for diffusion, 0.05 for classifiers)
    ema_rate: float | None = 0.9999     # EMA decay after warm-up; None: no EMA (classifiers)
    log_every: int = 100                # record the loss in the curve every N steps (and the last)
    checkpoint_every: int = 10_000      # atomic checkpoint every N steps
    snapshot_every: int = 0             # keep the EMA weights every N steps (0: none)
    seed: int = 0                       # the job's seed: initialisation and every step's draws
    stream: int = 0                     # added to every step's seed: separates networks of one seed
    sleep_s: float = 0.0                # tests only: slow a tiny run down enough to interrupt it
    autocast: str | bool | None = None  # none|bf16: forward passes in bfloat16 (torch.autocast); weights, optimizer
                                        # and EMA stay float32. Off: the numbers of record
    desc: str = "train"                 # progress-bar label

    @classmethod
    def from_config(cls, train: Mapping[str, Any], seed: int, **fixed: Any) -> "TrainSettings":
        """The settings of a spec's `train:` block (unknown keys ignored; null means default)."""
        names = {f.name for f in dataclasses.fields(cls)}
        given = {k: v for k, v in train.items() if k in names and v is not None}
        return cls(**{**given, "seed": seed, **fixed})


def step_seed(s: TrainSettings, step: int) -> int:
    return s.seed * SEED_STRIDE + step + s.stream


def step_generator(s: TrainSettings, step: int) -> torch.Generator:
    """The generator every draw of `step` comes from (the same on every rank)."""
    return torch.Generator().manual_seed(step_seed(s, step))


class Step(Protocol):
    """What one step computes: the mean loss over this rank's slice of the global batch that
    it draws from `g`, and named parts of it to log. `take` cuts a global-batch tensor (or a
    dict of them) to this rank's slice on its device."""

    def __call__(self, g: torch.Generator, take: Callable[[Any], Any]) -> tuple[Tensor, dict[str, Tensor]]: ...


@dataclass
class TrainState:
    """Where a training run stands: after `step` steps, with its curves so far."""

    step: int = 0
    curve: list[dict] = field(default_factory=list)   # {"step", "loss", parts...} every log_every
    evals: list[dict] = field(default_factory=list)   # {"step", evaluation...}: evaluate's records


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, rate: float, step: int) -> None:
    """EMA of the weights with a warm-up, decay = min(rate, (1 + step) / (10 + step)).

    Without the warm-up a short run's EMA is mostly its initialisation (0.999**600 = 0.55),
    whose zero output convolution predicts eps = 0 and samples come out as noise; at the
    paper's 1M steps the warm-up makes no difference.
    """
    decay = min(rate, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)


def fit(model: nn.Module, step_fn: Step, s: TrainSettings, out: JobDir, world: World = World(), *,
        init: Callable[[nn.Module, nn.Module | None], None] | None = None,
        evaluate: Callable[[int], dict[str, float]] | None = None, eval_every: int = 0,
        optimizer: Callable[[Any], torch.optim.Optimizer] | None = None,
        schedule: Callable[[torch.optim.Optimizer], Any] | None = None, schedule_every: int = 0,
        clip_grad_norm: float | None = None,
        ) -> tuple[nn.Module, nn.Module | None, TrainState]:
    """Train `model` (built after `torch.manual_seed(s.seed)`) for `s.steps` steps; resume from
    `out`'s checkpoint if there is one, else call `init(model, ema)` (start from other weights).

    The optimizer is AdamW(lr, weight_decay) unless `optimizer(params)` builds another
    (DiffusionMTL: Adam); `schedule(opt)` is a torch LR scheduler stepped after every
    `schedule_every` steps (an epoch; its state is checkpointed with the optimizer's), and
    `clip_grad_norm` clips the gradients' global L2 norm before each update.

    `evaluate(step)` is recorded before the first step, every `eval_every` steps and after the
    last. Returns (model, EMA model or None, final state); rank 0 writes the checkpoints and
    snapshots, the caller writes the final weights.
    """
    model.to(world.device)
    ema = copy.deepcopy(model).requires_grad_(False) if s.ema_rate is not None else None
    opt = (optimizer(model.parameters()) if optimizer is not None
           else torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay))
    sched = schedule(opt) if schedule is not None else None
    state = TrainState()
    if (out / CHECKPOINT).exists():
        state = load_checkpoint(out, model, ema, opt, sched)
        print(f"resuming from step {state.step}")
    elif init is not None:
        init(model, ema)
    shard = world.shard(s.batch_size)

    def take(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: take(v) for k, v in value.items()}
        return value[shard].to(world.device)

    def record_eval(step: int) -> None:
        if evaluate is not None:
            state.evals.append({"step": step, **evaluate(step)})

    if state.step == 0:
        record_eval(0)
    model.train()
    bar = tqdm(range(state.step, s.steps), initial=state.step, total=s.steps, desc=s.desc,
               dynamic_ncols=True, mininterval=1.0, disable=not world.is_main)
    for step in bar:
        # Every rank draws the whole global batch and its randomness from the step's generator
        # (cheap next to the network), then keeps its slice: the same examples, masks, steps
        # and noise as a single process, whatever the number of ranks.
        g = step_generator(s, step)
        torch.manual_seed(step_seed(s, step) + world.rank * DROPOUT_RANK_STRIDE)   # dropout
        with autocast(world.device, precision_of(s.autocast)):   # train.autocast: none|bf16
            loss, parts = step_fn(g, take)
        loss, parts = loss.float(), {k: v.float() for k, v in parts.items()}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(model.parameters(), world)
        if clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
        opt.step()
        if sched is not None and schedule_every and (step + 1) % schedule_every == 0:
            sched.step()
        if ema is not None:
            ema_update(ema, model, s.ema_rate, step)
        # One small all-reduce per step: the global-batch loss (mean of equal slices) and
        # whether any rank was asked to stop, so that all ranks stop after the same step.
        stats = all_sum(torch.stack([loss.detach(), *[v.detach() for v in parts.values()],
                                     torch.tensor(float(stop_requested() is not None), device=loss.device)]), world)
        losses = (stats[:-1] / world.world_size).tolist()
        if not math.isfinite(losses[0]):
            raise FloatingPointError(f"{s.desc} loss is {losses[0]} at step {step}")
        done = step + 1
        if step % s.log_every == 0 or done == s.steps:
            state.curve.append({"step": step, "loss": losses[0], **dict(zip(parts, losses[1:]))})
            bar.set_postfix(loss=f"{losses[0]:.4f}")
        if eval_every and (done % eval_every == 0 or done == s.steps):
            record_eval(done)
        state.step = done
        if ema is not None and s.snapshot_every and done % s.snapshot_every == 0 and done < s.steps and world.is_main:
            atomic_save_torch(out / SNAPSHOT.format(step=done), {"ema": ema.state_dict(), "step": done})
        if done < s.steps and (stats[-1] > 0 or done % s.checkpoint_every == 0):
            if world.is_main:
                save_checkpoint(out, model, ema, opt, state, sched)
                out.set_status("running", step=done)
            if stats[-1] > 0:   # preempted, timed out or requeued: stop here, resume from `done`
                barrier(world)
                raise Preempted(stop_requested(), done)
        if s.sleep_s:
            time.sleep(s.sleep_s)
    return model, ema, state


def save_checkpoint(out: JobDir, model: nn.Module, ema: nn.Module | None, opt: torch.optim.Optimizer,
                    state: TrainState, sched: Any = None) -> None:
    """The whole training state, written atomically (a kill mid-write leaves the previous
    checkpoint). Batches, masks, steps, noise and dropout of step s are functions of (seed, s),
    so `state.step` fixes the data order and the RNG streams from here on; the global RNG state
    is kept as well, for any draw outside that scheme."""
    atomic_save_torch(out / CHECKPOINT, {"model": model.state_dict(), "ema": ema.state_dict() if ema else None,
                                         "opt": opt.state_dict(), "step": state.step, "curve": state.curve,
                                         "evals": state.evals, "rng": torch.get_rng_state(),
                                         **({"sched": sched.state_dict()} if sched is not None else {})})


def load_checkpoint(out: JobDir, model: nn.Module, ema: nn.Module | None, opt: torch.optim.Optimizer,
                    sched: Any = None) -> TrainState:
    """Restore a `save_checkpoint` state in place; returns where the run stands."""
    saved = load_torch(out / CHECKPOINT, what="training checkpoint")
    model.load_state_dict(saved["model"])
    if ema is not None:
        ema.load_state_dict(saved["ema"])
    opt.load_state_dict(saved["opt"])
    if sched is not None:
        sched.load_state_dict(saved["sched"])
    torch.set_rng_state(saved["rng"])
    return TrainState(saved["step"], saved["curve"], saved.get("evals", []))

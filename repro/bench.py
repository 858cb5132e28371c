"""python -m repro.bench [--profile smoke] [--iters 20]: per-iteration cost of training and sampling.

A benchmark, not a test: it measures one training iteration (Algorithm 2: forward,
backward, optimiser step) and one sampling step (Algorithm 1) of each masked-image
variant at a profile's model size, reports medians over `--iters` repetitions (after
warm-up) and each variant's ratio to the single-task ADM. The ratio is the paper's
overhead claim (Appendix E.5: two-modality MT-Diffusion costs about 10% more training
time per iteration than single-task diffusion). Timings on a shared machine are noisy:
compare ratios from one run, not numbers across runs.
"""
from __future__ import annotations

import statistics
import sys
import time

import click
import torch

from repro.cli import profile_option, run
from repro.config import compose
from repro.diffusion import Modality, MTProcess, training_losses
from repro.tasks.masked_image import VARIANTS, MaskedImageTask, identity


def _median_seconds(fn, iters: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_variant(cfg, variant: str, iters: int) -> dict[str, float]:
    task = MaskedImageTask.from_config(cfg)
    model = task.build_model(cfg.unet, variant)
    d = cfg.diffusion
    process = MTProcess.from_config(d.schedule, d.T, d.weights, task.n_modalities(variant))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(cfg.train.batch_size, 3, task.resolution, task.resolution) * 2 - 1
    labels = torch.zeros(len(images), dtype=torch.long)
    encoders = task.encoders(model, variant)

    def train_step() -> None:
        z0, x, _ = task.batch(images, labels, g)
        loss, _ = training_losses(model, process, z0, x, encoders, task.kinds if encoders else {}, d.lam, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    z = torch.randn(cfg.sample.batch_size, 3, task.resolution, task.resolution)
    e = [torch.zeros_like(z)] * task.n_modalities(variant)
    t = torch.full((len(z),), d.T - 1)

    @torch.no_grad()
    def sample_step() -> None:
        eps, _, _ = model(z, t, e)
        process.mean_from_eps(z, eps, e, d.T - 1)

    return {"parameters": sum(p.numel() for p in model.parameters()),
            "train_s": _median_seconds(train_step, iters), "sample_step_s": _median_seconds(sample_step, iters)}


@click.command()
@profile_option
@click.option("--iters", type=click.IntRange(min=1), default=20, show_default=True,
              help="timed repetitions (median reported)")
@click.option("--threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="torch threads (0: torch's default)")
def main(profile: str, iters: int, threads: int) -> None:
    import pandas as pd

    if threads:
        torch.set_num_threads(threads)
    cfg = compose("1", profile)
    rows = {v: bench_variant(cfg, v, iters) for v in VARIANTS}
    frame = pd.DataFrame(rows).T
    frame["train_vs_adm"] = frame["train_s"] / frame.at["adm", "train_s"]
    frame["sample_vs_adm"] = frame["sample_step_s"] / frame.at["adm", "sample_step_s"]
    print(f"profile {profile}: batch {cfg.train.batch_size} (train), {cfg.sample.batch_size} (sample), "
          f"{cfg.data.resolution}px, {torch.get_num_threads()} torch threads, median of {iters}")
    print(frame.to_string(float_format=lambda v: f"{v:.4g}"))
    est = frame.at["X", "train_s"] * cfg.train.steps
    print(f"estimated training time per model at {cfg.train.steps} steps: {est / 60:.1f} min (X variant)")


if __name__ == "__main__":
    sys.exit(run(main, "python -m repro.bench"))   # bad input: exit 2, one line

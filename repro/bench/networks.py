"""The networks of a spec's train jobs, built as the jobs build them, and their step functions.

A paper-profile run costs days on a GPU cluster; a config that does not build, a shape
that does not fit or a released checkpoint that does not load must be found before that,
and the benchmark must time the networks the jobs really train. `spec_networks` composes
specs at a profile and returns one entry per distinct network (the train jobs' configs,
deduplicated by architecture); `train_step` and `sampling_call` make one Algorithm 2
iteration (eq. 6 loss, backward, AdamW step) and one denoising call on random data of the
task's format. Every call into the task layer (job config, build, encoders, batch) is in
`job_config`, `build` and `random_batch`, so an interface change there touches only them.
"""
from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from repro.config import available_tables, compose, to_dict
from repro.diffusion import MTProcess
from repro.errors import collect_missing


@dataclass
class SpecNetwork:
    """One distinct network of a profile: where it is used and its train job config."""

    name: str                        # "<spec>/<model>", its first use
    used_by: list[str]               # every "<spec>/<model>" with this architecture
    config: dict[str, Any]           # the train job's config (data, task, unet, train, model, diffusion)
    released: str | None = None      # the released checkpoint it loads (weights.<key>), if any


class Built(NamedTuple):
    task: Any
    model: nn.Module
    process: MTProcess
    encoders: dict[str, Callable[[Tensor], Tensor]]
    kinds: dict[str, str]


def job_config(cfg, model: str) -> dict[str, Any]:
    """The train job config of `model` as repro.plan builds it (a released model: the config
    its import job builds the network from; its file need not exist)."""
    from omegaconf import OmegaConf

    from repro.plan import train_job

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    if cfg.task.get("space") == "kl-f8":   # planning builds the task, which reads its autoencoder: a random one
        import tempfile

        folder = Path(tempfile.gettempdir()) / "repro-bench"
        folder.mkdir(exist_ok=True)
        cfg.task.autoencoder = with_random_autoencoder(OmegaConf.to_container(cfg), folder)["task"]["autoencoder"]
    for m in cfg.models.values():      # released models (and their continuations) build like trained ones
        m.pop("released", None)
    with collect_missing():   # weights a task checks for (kl-f8, CLIP) need not be here: random ones stand in
        return dict(train_job(cfg, model).config)


def _arch_key(config: Mapping[str, Any]) -> str:
    """What decides the network: task kind, diffusion space, head and width settings, variant,
    U-Net block, resolution, dataset (class count). Data paths and modality names do not."""
    task = {k: config["task"].get(k) for k in ("name", "space", "head", "rep_dim", "hidden")}
    return json.dumps([task, config["model"]["variant"], config["unet"], config["data"]["resolution"],
                       config["data"]["name"] == "imagenet"], sort_keys=True, default=str)


def spec_networks(profile: str, specs: tuple[str, ...] | None = None) -> list[SpecNetwork]:
    """The distinct networks of the train jobs of `specs` (default: every spec) at `profile`."""
    found: dict[str, SpecNetwork] = {}
    for spec in specs or available_tables():
        cfg = compose(spec, profile)
        if cfg.table.evaluation == "dense":   # DiffusionMTL's networks: tests/test_diffusionmtl_table.py
            continue
        for model in cfg.models:
            config = job_config(cfg, model)
            key, name = _arch_key(config), f"{spec}/{model}"
            if key in found:
                found[key].used_by.append(name)
            else:
                found[key] = SpecNetwork(name, [name], config, to_dict(cfg.models[model]).get("released"))
    return list(found.values())


def spec_classifiers(profile: str, specs: tuple[str, ...] | None = None) -> list[tuple[str, dict[str, Any], int]]:
    """(name, classifier block, resolution) of every spec with an ADM classifier, deduplicated."""
    out, seen = [], set()
    for spec in specs or available_tables():
        cfg = compose(spec, profile)
        if "classifier" not in cfg:
            continue
        block, res = to_dict(cfg.classifier), int(cfg.data.resolution)
        key = json.dumps([block, res], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((f"{spec}/classifier", block, res))
    return out


def build(config: Mapping[str, Any]) -> Built:
    """Task, network, process, encoders and head kinds of a train job config (repro.jobs.train)."""
    from repro.jobs.trained import build_diffusion

    torch.manual_seed(int(config.get("seed", 0)))     # as the train job: the same weights for the same config
    task, model, process = build_diffusion(config)
    encoders = task.encoders(model, config["model"]["variant"])
    return Built(task, model, process, encoders, {k: v for k, v in task.kinds.items() if k in encoders})


def random_batch(config: Mapping[str, Any], task, batch: int, generator: torch.Generator):
    """(z_0, X, network inputs) from random data in the format of the task's training data."""
    res = int(config["data"]["resolution"])

    def image() -> Tensor:
        return torch.rand(batch, 3, res, res, generator=generator) * 2 - 1

    name = config["task"]["name"]
    labels = torch.randint(0, 10, (batch,), generator=generator)
    if name == "translation":
        data: Any = {"source": image(), "target": image()}
    elif name == "representation":
        data = {"image": image(), "rep": torch.randn(batch, int(config["task"]["rep_dim"]), generator=generator)}
    else:
        data = image()
    return task.batch(data, labels, generator)


def _to(value: Any, device: torch.device, channels_last: bool) -> Any:
    if isinstance(value, dict):
        return {k: _to(v, device, channels_last) for k, v in value.items()}
    value = value.to(device)
    if channels_last and value.dim() == 4:
        value = value.contiguous(memory_format=torch.channels_last)
    return value


def train_step(config: Mapping[str, Any], built: Built, batch: int = 1, seed: int = 0,
               device: torch.device | str = "cpu", precision: str = "fp32",
               channels_last: bool = False) -> Callable[[], float]:
    """One Algorithm 2 iteration as a function: eq. 6's loss, backward, AdamW step (the
    train job's optimiser); returns the loss. The batch is drawn once (data loading is not
    timed); every call draws new steps and noise."""
    from repro.diffusion import training_losses
    from repro.nn.precision import autocast

    device = torch.device(device)
    model = built.model.to(device).train()
    g = torch.Generator().manual_seed(seed)
    z0, x, net_inputs = (_to(v, device, channels_last) for v in random_batch(config, built.task, batch, g))
    net = functools.partial(model, **net_inputs) if net_inputs else model
    opt = torch.optim.AdamW(model.parameters(), lr=float(config["train"]["lr"]), weight_decay=0.0)
    lam = float(config["diffusion"]["lam"]) if built.kinds else 0.0   # an ADM train job reads no lambda

    def step() -> float:
        from repro.diffusion.loss import draw_steps_and_noise

        k, noise = draw_steps_and_noise(built.process, z0.shape, g, z0.dtype)
        with autocast(device, precision):
            loss, _ = training_losses(net, built.process, z0, x, built.encoders, built.kinds, lam,
                                      steps=k, noise=_to(noise, device, channels_last))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def sampling_call(config: Mapping[str, Any], built: Built, batch: int = 1, seed: int = 0,
                  device: torch.device | str = "cpu", precision: str = "fp32",
                  channels_last: bool = False) -> Callable[[], Tensor]:
    """One denoising call of Algorithm 1 (at its first step, t = T - 1) as a function: eps."""
    from repro.nn.precision import autocast

    device = torch.device(device)
    model = built.model.to(device).eval()
    g = torch.Generator().manual_seed(seed)
    z0, x, net_inputs = (_to(v, device, channels_last) for v in random_batch(config, built.task, batch, g))
    with torch.no_grad():
        e = [encode(x[name]) for name, encode in built.encoders.items()]
    z = _to(torch.randn(z0.shape, generator=g), device, channels_last)
    t = torch.full((len(z),), built.process.num_steps - 1, device=device)

    @torch.no_grad()
    def call() -> Tensor:
        with autocast(device, precision):
            eps, *_ = model(z, t, e, **net_inputs)
        return eps
    return call


def with_random_autoencoder(config: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """`config` with task.autoencoder pointing at randomly initialised kl-f8 weights (written
    once into `folder`) when the task diffuses in kl-f8 latents; unchanged otherwise.

    The released LDM weights are not on this machine; random weights of the same layout
    go through the same loading path and give latents of the same shape.
    """
    if config["task"].get("space") != "kl-f8":
        return dict(config)
    from diffusers import AutoencoderKL

    from repro.nn.autoencoder import KL_F8

    path = Path(folder) / "kl-f8-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(AutoencoderKL(**KL_F8).state_dict(), path)
    return {**config, "task": {**config["task"], "autoencoder": str(path)}}

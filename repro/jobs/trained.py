"""Load a trained model: the one place that turns a job folder (or a released file) into a network.

Files of record (what a finished job leaves; sampling, evaluation and continued training read them):

    train / released job   model.pt       {"ema", "model"}: the EMA weights sampling uses and
                                          the raw weights continued training starts from; the
                                          config that rebuilds the network is the job's job.json
                           snapshots/ema_<step>.pt   EMA weights after <step> steps (snapshot_every)
                           moments.json   `diffusion.network_input: scaled` only: eq. 4's second
                                          moments measured on the training data, so that sampling
                                          scales the network input exactly as training did
    classifier job         classifier.pt  {"state", "recipe"}: the weights and what rebuilds the
                                          network (an ADM classifier or MT-Diffusion-E's label path)
    dense_train job        model.pt       {"model"}: a DiffusionMTL network's final weights (no EMA:
                                          the authors report the last model); job.json rebuilds it

Every file holds tensors, dicts, lists, numbers and strings only, so all are read with
`repro.io.load_torch` (weights_only=True: no pickled code runs; a refused file is a UserError naming it).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor, nn

from repro.diffusion import MTProcess
from repro.diffusion.network_input import NetworkInput, SecondMoments
from repro.errors import UserError
from repro.io import load_torch
from repro.jobs.harness import SNAPSHOT
from repro.jobs.store import JobDir
from repro.nn.fast_paths import apply_switches
from repro.tasks import make_task

MODEL = "model.pt"              # final weights of a train or released job
MOMENTS = "moments.json"        # second moments behind the `scaled` network input (train job)
CLASSIFIER = "classifier.pt"    # final weights of a classifier job


def build_diffusion(cfg: Mapping[str, Any]):
    """(task, network, training-time forward process) of a train job's config; fresh weights."""
    task = make_task(cfg)
    variant = cfg["model"]["variant"]
    model = task.build_model(cfg["unet"], variant)
    apply_switches(model, cfg["unet"])   # speed switches (unet.use_sdpa, ...): the same kernels in training and sampling
    return task, model, make_process(cfg["diffusion"], task.n_modalities(variant))


def make_process(d: Mapping[str, Any], n_modalities: int, respacing: str | int | None = None) -> MTProcess:
    """The forward process of a train config's `diffusion` block; with no modality the
    aggregation weights never enter (eq. 3 has no sum), so they are not read."""
    weights = (d["weights"], d["weight_value"]) if n_modalities else ("zero", 1.0)
    return MTProcess.from_config(d["schedule"], d["T"], weights[0], n_modalities, weight_value=weights[1],
                                 respacing=respacing)


def network_input_of(d: Mapping[str, Any]) -> str:
    """The network-input reading of a train config's `diffusion` block.

    The block holds `network_input` exactly where it changes the model (repro.jobs.train.reads:
    a model with modalities, or `scaled`); elsewhere every reading is `raw` (no modality
    offset to remove), so its absence reads as `raw`. The lookup goes through the block's
    keys rather than `.get`, so that a model the setting cannot change does not read it.
    """
    return d["network_input"] if "network_input" in list(d) else "raw"


class ReadNetwork(NetworkInput):
    """A network behind its network-input reading that still answers for the network's own
    attributes (`backbone`, heads): the encoders of the modalities use the U-Net directly,
    not the denoiser's input transform."""

    def __getattr__(self, name: str):
        model = self.__dict__.get("model")
        if model is None:
            raise AttributeError(name)
        return getattr(model, name)


def read_network(model: nn.Module, process: MTProcess, d: Mapping[str, Any],
                 moments: SecondMoments | None = None) -> nn.Module | ReadNetwork:
    """`model` as the denoiser its train config's `diffusion` block reads (`network_input`), on
    the full-grid training `process`; `raw` (the paper) returns the model itself, untouched."""
    reading = network_input_of(d)
    if reading == "raw" or (reading == "shifted" and process.n_modalities == 0):
        return model
    return ReadNetwork(model, process, reading, moments)


def load_moments(train_dir: JobDir) -> SecondMoments | None:
    """The second moments a `scaled` train job measured (None where it saved none)."""
    path = train_dir / MOMENTS
    return SecondMoments(np.asarray(json.loads(path.read_text()), dtype=np.float64)) if path.exists() else None


def load_denoiser(train_dir: JobDir, *, step: int | None = None):
    """`load_trained`, with the model behind the network-input reading it was trained with:
    what every sampler calls (the task's encoders still reach the U-Net through it)."""
    task, model, process, cfg = load_trained(train_dir, step=step)
    return task, read_network(model, process, cfg["diffusion"], load_moments(train_dir)), process, cfg


def _load(path: Path | JobDir) -> dict[str, Any]:
    return load_torch(path, what="job-store model file")


def load_trained(train_dir: JobDir, *, use_ema: bool = True, step: int | None = None):
    """(task, EMA model in eval mode, training process, train config) of a finished train job;
    with `step`, the EMA weights of its snapshot after that many steps (train.snapshot_every)."""
    cfg = json.loads((train_dir / "job.json").read_text())["config"]
    task, model, process = build_diffusion(cfg)
    path = train_dir / MODEL
    if step is not None and step != cfg.get("train", {}).get("steps"):
        path = train_dir / SNAPSHOT.format(step=step)
        if not use_ema or not path.exists():
            raise FileNotFoundError(f"{train_dir.path} has no EMA snapshot of step {step} ({path.name}); "
                                    f"its train.snapshot_every is {cfg['train'].get('snapshot_every')}")
    model.load_state_dict(_load(path)["ema" if use_ema else "model"])
    return task, model.eval().requires_grad_(False), process, cfg


def build_dense(cfg: Mapping[str, Any]):
    """(dense task, freshly initialised network) of a dense_train job's config (DiffusionMTL,
    repro/tasks/dense.py)."""
    from repro.tasks.dense import make_dense_task

    task = make_dense_task(cfg)
    return task, task.build_model(cfg["model"]["variant"])


def load_dense_trained(train_dir: JobDir):
    """(dense task, trained network in eval mode, its config) of a finished dense_train job."""
    cfg = json.loads((train_dir / "job.json").read_text())["config"]
    task, model = build_dense(cfg)
    model.load_state_dict(_load(train_dir / MODEL)["model"])
    return task, model.eval(), cfg


def init_from(job: JobDir, model: nn.Module, ema: nn.Module | None) -> None:
    """Start from a finished train (or released) job's final weights: raw and EMA as saved."""
    state = _load(job / MODEL)
    model.load_state_dict(state.get("model", state["ema"]))
    if ema is not None:
        ema.load_state_dict(state["ema"])
    print(f"initialised from {job.path.name} ({json.loads((job / 'job.json').read_text())['name']})")


def import_released(cfg: Mapping[str, Any], path: Path) -> nn.Module:
    """The network a released-job config describes, its U-Net read from a released
    guided-diffusion checkpoint with strict=True (names, shapes and count must all match)."""
    _, model, _ = build_diffusion(cfg)
    try:
        model.backbone.load_state_dict(_load(path), strict=True)
    except RuntimeError as err:
        raise UserError(f"{path} does not fit the configured U-Net (unet block of the spec): "
                        f"{str(err).splitlines()[0]}") from None
    return model


class MTEClassifier(nn.Module):
    """MT-Diffusion-E as a classifier: its label head on the U-Net output, the null class as input."""

    def __init__(self, model: nn.Module, null_label: int):
        super().__init__()
        self.model, self.null_label = model, null_label

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        y = torch.full((len(x),), self.null_label, dtype=torch.long, device=x.device)
        return self.model(x, t, (), y=y)[1]["label"]


def build_classifier(recipe: Mapping[str, Any]) -> nn.Module:
    """A classifier network from its recipe (fresh weights): an ADM noisy classifier
    ({"kind": "adm", "arch", "resolution", "num_classes"}) or MT-Diffusion-E's label path
    ({"kind": "mt_e", "train_config", "null_label"})."""
    if recipe["kind"] == "adm":
        from repro.tasks.image_label import build_classifier as build_adm

        return build_adm(recipe["arch"], recipe["resolution"], recipe["num_classes"])
    _, model, _ = build_diffusion(recipe["train_config"])
    return MTEClassifier(model, recipe["null_label"])


def read_classifier(job: JobDir) -> tuple[nn.Module, dict[str, Any]]:
    """(network with a classifier job's final weights, its recipe), as saved (train mode)."""
    state = _load(job / CLASSIFIER)
    net = build_classifier(state["recipe"])
    net.load_state_dict(state["state"])
    return net, state["recipe"]


def load_classifier(job: JobDir) -> nn.Module:
    """The final classifier of a finished classifier job, frozen, in eval mode."""
    return read_classifier(job)[0].eval().requires_grad_(False)


def load_released_classifier(net: nn.Module, path: Path) -> None:
    """A released guided-diffusion classifier (64x64_classifier.pt, ...) into `net`, strict=True."""
    net.load_state_dict(_load(path), strict=True)

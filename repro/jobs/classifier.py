"""Job body: train or finetune ADM's noisy classifier p_phi(y | x_t, t) (guidance; Figure 6).

As ADM's classifier_train (Dhariwal & Nichol 2021, Section 4): x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps with t uniform over the T training steps, cross-entropy on the label,
AdamW. What one step computes is `classifier_step`; the loop around it (per-step seeding,
checkpoints, bit-exact resuming, stop requests, ranks) is repro/jobs/harness.py, with no EMA.
Where the weights start (`source.kind`):

    scratch     a new EncoderUNetModel from the `classifier:` block
    released    a released guided-diffusion checkpoint (paper profile: 64x64_classifier.pt,
                128x128_classifier.pt), loaded with strict=True
    classifier  the final weights of another classifier job (continued finetuning)
    mt_e        MT-Diffusion-E's label path, head(eps_theta(x_t, t), t) (decoder (c) on the U-Net
                output), from a finished E train job; the whole path is finetuned (Figure 6)

Top-1 / top-5 accuracy on the first `eval_images` test images is recorded before training
and every `eval_every` iterations (Figure 6's curves). As ADM's evaluation script, the test
images are noised, with one fixed draw of (t, eps) per image shared by every evaluation and
every classifier, so that curves are comparable; `eval_noised: false` scores clean images (t = 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.diffusion import MTProcess
from repro.errors import UserError
from repro.io import atomic_save_torch, atomic_write_json
from repro.data.registry import load_images
from repro.jobs.distributed import World, process_group, world_from_environment
from repro.jobs.harness import TrainSettings, fit
from repro.jobs.store import JobDir
from repro.jobs.trained import CLASSIFIER, MTEClassifier, build_classifier, load_released_classifier, load_trained, read_classifier
from repro.metrics import topk_accuracy

STOPPABLE = True           # polls repro.jobs.runner.stop_requested() after every step (repro/jobs/harness.py)
FILE = CLASSIFIER
SOURCES = ("scratch", "released", "classifier", "mt_e")
STREAM = 7                 # per-step seeds are offset by this: a classifier and a diffusion model of one seed draw apart


def build(cfg: Mapping[str, Any], deps: Mapping[str, JobDir]) -> tuple[nn.Module, dict]:
    """The classifier at its starting point, and what it takes to rebuild it (saved with it)."""
    from repro.data.registry import num_classes

    kind = cfg["source"]["kind"]
    if kind not in SOURCES:
        raise UserError(f"unknown classifier source {kind!r}: choose one of {', '.join(SOURCES)}")
    if kind == "classifier":
        return read_classifier(deps["init"])
    if kind == "mt_e":
        task, model, _, train_cfg = load_trained(deps["init"])
        if train_cfg["model"]["variant"] != "E":
            raise UserError(f"classifier source mt_e needs an MT-Diffusion-E model, got variant {train_cfg['model']['variant']}")
        recipe = {"kind": "mt_e", "train_config": train_cfg, "null_label": task.base.null_label}
        return MTEClassifier(model.train().requires_grad_(True), task.base.null_label), recipe
    recipe = {"kind": "adm", "arch": dict(cfg["classifier"]), "resolution": cfg["data"]["resolution"],
              "num_classes": num_classes(cfg["data"])}
    net = build_classifier(recipe)
    if kind == "released":
        path = Path(cfg["source"]["path"]).expanduser()
        load_released_classifier(net, path)
        print(f"loaded released classifier {path}")
    return net, recipe


def classifier_step(net: nn.Module, process: MTProcess, data, batch_size: int):
    """ADM's classifier_train step as a harness `Step`: cross-entropy on noised training images."""
    def step(g: torch.Generator, take: Callable[[Any], Any]) -> tuple[Tensor, dict[str, Tensor]]:
        idx = torch.randint(len(data), (batch_size,), generator=g)
        x0, y = data.images(idx), torch.as_tensor(data.labels[idx.numpy()]).long()
        t = torch.randint(process.num_steps, (len(idx),), generator=g)
        x_t = process.q_sample(x0, [], t, torch.randn(x0.shape, generator=g))
        x_t, t, y = take(x_t), take(t), take(y)
        return F.cross_entropy(net(x_t, t), y), {}
    return step


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    world = world_from_environment()
    with process_group(world):
        return train(cfg, out, deps, world)


def train(cfg: dict, out: JobDir, deps: dict[str, JobDir], world: World = World()) -> dict[str, Any]:
    tr = cfg["train"]
    s = TrainSettings.from_config(tr, cfg["seed"], ema_rate=None, checkpoint_every=tr["eval_every"],
                                  stream=STREAM, desc="classifier")
    torch.manual_seed(s.seed)
    net, recipe = build(cfg, deps)
    d = cfg["diffusion"]
    process = MTProcess.from_config(d["schedule"], d["T"], "zero", 0)
    data = load_images(cfg["data"], "train")
    test = load_images(cfg["data"], "test")
    n_eval = min(tr["eval_images"], len(test))
    g = torch.Generator().manual_seed(s.seed + 99)
    eval_x0 = test.images(torch.arange(n_eval))
    eval_y = torch.as_tensor(test.labels[:n_eval]).long()
    if tr.get("eval_noised", True):
        eval_t = torch.randint(process.num_steps, (n_eval,), generator=g)
        eval_x = process.q_sample(eval_x0, [], eval_t, torch.randn(eval_x0.shape, generator=g))
    else:
        eval_t, eval_x = torch.zeros(n_eval, dtype=torch.long), eval_x0
    print(f"classifier ({recipe['kind']}, from {cfg['source']['kind']}): "
          f"{sum(p.numel() for p in net.parameters()):,} parameters, {s.steps} steps")

    def evaluate(step: int) -> dict[str, float]:
        dev = next(net.parameters()).device
        acc = topk_accuracy(net, (eval_x.to(dev), eval_t.to(dev)), eval_y.to(dev))
        print(f"step {step}: top-1 {acc['top1']:.3f}, top-5 {acc['top5']:.3f} (n={n_eval})")
        return acc

    net, _, state = fit(net, classifier_step(net, process, data, s.batch_size), s, out, world,
                        evaluate=evaluate, eval_every=tr["eval_every"])
    curve = state.evals
    if world.is_main:
        atomic_save_torch(out / FILE, {"state": net.state_dict(), "recipe": recipe})
        atomic_write_json(out / "accuracy_curve.json", curve)
    return {"file": FILE, "kind": recipe["kind"], "source": cfg["source"]["kind"], "steps": s.steps,
            "curve": curve, "top1": curve[-1]["top1"], "top5": curve[-1]["top5"], "n_eval": n_eval}

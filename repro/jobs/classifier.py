"""Job body: train or finetune ADM's noisy classifier p_phi(y | x_t, t) (guidance; Figure 6).

As ADM's classifier_train (Dhariwal & Nichol 2021, Section 4): x_t = sqrt(abar_t) x_0 +
sqrt(1 - abar_t) eps with t uniform over the T training steps, cross-entropy on the label,
AdamW. Where the weights start (`source.kind`):

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
Randomness of step s comes from generators seeded by (seed, s): resumable bit for bit.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from repro.diffusion import MTProcess
from repro.errors import UserError
from repro.io import atomic_save_torch, atomic_write_json
from repro.data.registry import load_images
from repro.jobs.store import JobDir

FILE = "classifier.pt"
CHECKPOINT = "checkpoint.pt"
SOURCES = ("scratch", "released", "classifier", "mt_e")


class MTEClassifier(nn.Module):
    """MT-Diffusion-E as a classifier: its label head on the U-Net output, the null class as input."""

    def __init__(self, model: nn.Module, null_label: int):
        super().__init__()
        self.model, self.null_label = model, null_label

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        y = torch.full((len(x),), self.null_label, dtype=torch.long, device=x.device)
        return self.model(x, t, (), y=y)[1]["label"]


def build(cfg: Mapping[str, Any], deps: Mapping[str, JobDir]) -> tuple[nn.Module, dict]:
    """The classifier at its starting point, and what it takes to rebuild it (saved with it)."""
    from repro.data.registry import num_classes
    from repro.tasks.image_label import build_classifier

    kind = cfg["source"]["kind"]
    if kind not in SOURCES:
        raise UserError(f"unknown classifier source {kind!r}: choose one of {', '.join(SOURCES)}")
    if kind == "classifier":
        state = torch.load(deps["init"] / FILE, map_location="cpu", weights_only=False)
        net = rebuild(state["recipe"])
        net.load_state_dict(state["state"])
        return net, state["recipe"]
    if kind == "mt_e":
        from repro.jobs.train import load_trained

        task, model, _, train_cfg = load_trained(deps["init"])
        if train_cfg["model"]["variant"] != "E":
            raise UserError(f"classifier source mt_e needs an MT-Diffusion-E model, got variant {train_cfg['model']['variant']}")
        recipe = {"kind": "mt_e", "train_config": train_cfg, "null_label": task.base.null_label}
        return MTEClassifier(model.train().requires_grad_(True), task.base.null_label), recipe
    recipe = {"kind": "adm", "arch": cfg["classifier"], "resolution": cfg["data"]["resolution"],
              "num_classes": num_classes(cfg["data"])}
    net = rebuild(recipe)
    if kind == "released":
        path = Path(cfg["source"]["path"]).expanduser()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        print(f"loaded released classifier {path}")
    return net, recipe


def rebuild(recipe: Mapping[str, Any]) -> nn.Module:
    from repro.tasks.image_label import build_classifier

    if recipe["kind"] == "adm":
        return build_classifier(recipe["arch"], recipe["resolution"], recipe["num_classes"])
    from repro.jobs.train import build as build_diffusion

    _, model, _ = build_diffusion(recipe["train_config"])
    return MTEClassifier(model, recipe["null_label"])


def load_classifier(job: JobDir) -> nn.Module:
    """The final classifier of a finished classifier job, frozen, in eval mode."""
    state = torch.load(job / FILE, map_location="cpu", weights_only=False)
    net = rebuild(state["recipe"])
    net.load_state_dict(state["state"])
    return net.eval().requires_grad_(False)


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 7)


@torch.no_grad()
def topk_accuracy(net: nn.Module, images: Tensor, labels: Tensor, t: Tensor, batch_size: int = 256) -> dict[str, float]:
    """Top-1 and top-5 accuracy of `net` on (images, labels) at timesteps t."""
    was_training = net.training
    net.eval()
    hits1 = hits5 = 0
    for lo in range(0, len(images), batch_size):
        logits = net(images[lo:lo + batch_size], t[lo:lo + batch_size])
        top = logits.topk(min(5, logits.shape[-1]), dim=-1).indices
        y = labels[lo:lo + batch_size, None]
        hits1 += (top[:, :1] == y).any(-1).sum().item()
        hits5 += (top == y).any(-1).sum().item()
    net.train(was_training)
    return {"top1": hits1 / len(images), "top5": hits5 / len(images)}


def run(cfg: dict, out: JobDir, deps: dict[str, JobDir]) -> dict[str, Any]:
    tr, seed = cfg["train"], cfg["seed"]
    torch.manual_seed(seed)
    net, recipe = build(cfg, deps)
    d = cfg["diffusion"]
    process = MTProcess.from_config(d["schedule"], d["T"], "zero", 0)
    data = load_images(cfg["data"], "train")
    test = load_images(cfg["data"], "test")
    n_eval = min(tr["eval_images"], len(test))
    g = torch.Generator().manual_seed(seed + 99)
    eval_x0 = test.images(torch.arange(n_eval))
    eval_y = torch.as_tensor(test.labels[:n_eval]).long()
    if tr.get("eval_noised", True):
        eval_t = torch.randint(process.num_steps, (n_eval,), generator=g)
        eval_x = process.q_sample(eval_x0, [], eval_t, torch.randn(eval_x0.shape, generator=g))
    else:
        eval_t, eval_x = torch.zeros(n_eval, dtype=torch.long), eval_x0
    opt = torch.optim.AdamW(net.parameters(), lr=tr["lr"], weight_decay=tr.get("weight_decay", 0.0))
    start, curve = 0, []
    if (out / CHECKPOINT).exists():
        state = torch.load(out / CHECKPOINT, map_location="cpu", weights_only=False)
        net.load_state_dict(state["state"])
        opt.load_state_dict(state["opt"])
        start, curve = state["step"], state["curve"]
        print(f"resuming from step {start}")
    print(f"classifier ({recipe['kind']}, from {cfg['source']['kind']}): "
          f"{sum(p.numel() for p in net.parameters()):,} parameters, {tr['steps']} steps")

    def evaluate(step: int) -> None:
        acc = topk_accuracy(net, eval_x, eval_y, eval_t)
        curve.append({"step": step, **acc})
        print(f"step {step}: top-1 {acc['top1']:.3f}, top-5 {acc['top5']:.3f} (n={n_eval})")

    if start == 0:
        evaluate(0)
    net.train()
    for step in tqdm(range(start, tr["steps"]), initial=start, total=tr["steps"], desc="classifier",
                     dynamic_ncols=True, mininterval=1.0):
        g = step_generator(seed, step)
        idx = torch.randint(len(data), (tr["batch_size"],), generator=g)
        x0, y = data.images(idx), torch.as_tensor(data.labels[idx.numpy()]).long()
        t = torch.randint(process.num_steps, (len(idx),), generator=g)
        x_t = process.q_sample(x0, [], t, torch.randn(x0.shape, generator=g))
        loss = F.cross_entropy(net(x_t, t), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"classifier loss is {loss.item()} at step {step}")
        if (step + 1) % tr["eval_every"] == 0 or step + 1 == tr["steps"]:
            evaluate(step + 1)
            if step + 1 < tr["steps"]:
                atomic_save_torch(out / CHECKPOINT, {"state": net.state_dict(), "opt": opt.state_dict(),
                                                     "step": step + 1, "curve": curve})
    atomic_save_torch(out / FILE, {"state": net.state_dict(), "recipe": recipe})
    atomic_write_json(out / "accuracy_curve.json", curve)
    return {"file": FILE, "kind": recipe["kind"], "source": cfg["source"]["kind"], "steps": tr["steps"],
            "curve": curve, "top1": curve[-1]["top1"], "top5": curve[-1]["top5"], "n_eval": n_eval}

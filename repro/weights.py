"""Pretrained weight files the paper profile reads: what each one is, where its path is set,
the file it should be, where it comes from, and one check with one message format.

These machines reach no weight server, so nothing is downloaded: every file is read from the
path its config key names, and a missing one stops the run before any job starts with one
line (a `UserError`, exit status 2) that says which file, where it was looked for, where it
normally comes from and which setting points at it. The embedded profiles read none of them
(they train their own feature network, repro/metrics/feature_net.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from repro.errors import UserError, missing

_GUIDED = "openai/guided-diffusion's released checkpoints (its README, 'Download pre-trained models')"


@dataclass(frozen=True)
class WeightFile:
    """One pretrained file: `what` it is, the config `key` that holds its path, the `file` it
    normally is, and the `source` it comes from."""

    what: str
    key: str
    file: str
    source: str
    directory_ok: bool = False   # a folder will do as well (a diffusers model directory)


WEIGHTS: dict[str, WeightFile] = {
    "lpips_alexnet": WeightFile(
        "LPIPS AlexNet weights", "weights.lpips_alexnet", "alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet, which torchvision downloads to ~/.cache/torch/hub/checkpoints/"),
    "inception": WeightFile(
        "Inception weights", "weights.inception", "weights-inception-2015-12-05-6726825d.pth",
        "torch-fidelity's Inception-v3 (the TF FID network), which torch-fidelity downloads to "
        "~/.cache/torch/hub/checkpoints/"),
    "adm_64_classifier": WeightFile(
        "released guided-diffusion classifier", "weights.adm_64_classifier", "64x64_classifier.pt", _GUIDED),
    "adm_128_classifier": WeightFile(
        "released guided-diffusion classifier", "weights.adm_128_classifier", "128x128_classifier.pt", _GUIDED),
    "adm_128_diffusion": WeightFile(
        "released guided-diffusion checkpoint", "weights.adm_128_diffusion", "128x128_diffusion.pt", _GUIDED),
    "autoencoder": WeightFile(
        "kl-f8 autoencoder weights", "task.autoencoder", "model.ckpt",
        "LDM's first-stage kl-f8 model (CompVis/latent-diffusion, models/first_stage_models/kl-f8), "
        "or a diffusers AutoencoderKL state dict or folder", directory_ok=True),
    "clip": WeightFile(
        "CLIP image encoder", "weights.clip", "ViT-H-14-image-encoder.pt",
        "a TorchScript image encoder (OpenAI's ViT-L-14.pt, or torch.jit.trace of OpenCLIP ViT-H/14's encode_image)"),
}


def weight_file(name: str) -> WeightFile:
    """The registry entry of `name`; a key of the `weights:` block not listed here (another
    released checkpoint, say) gets a plain entry that names the key."""
    if name in WEIGHTS:
        return WEIGHTS[name]
    return WeightFile("weights file", f"weights.{name}", name, "the configured location")


def check_weights(name: str, path: str | os.PathLike | None, *, needed_by: str | None = None) -> Path:
    """The expanded path of weight file `name`, configured as `path`; a one-line `UserError`
    if it is not set or not there (`needed_by` says who needs it, e.g. "model 'adm_star'")."""
    w = weight_file(name)
    if path is None or not str(path).strip():
        missing(f"{needed_by or 'this run'} needs the {w.what} {w.file} ({w.source}): "
                f"set {w.key}=/path/to/{w.file}")
        return Path(f"<{w.key} unset>")     # only reached in a dry run (repro.errors.collect_missing)
    p = Path(str(path)).expanduser()
    if not (p.is_file() or (w.directory_ok and p.is_dir())):
        missing(f"{w.what} {p} not found: {w.file} comes from {w.source}; put it there "
                f"or set {w.key}=/path/to/{w.file}")
    return p

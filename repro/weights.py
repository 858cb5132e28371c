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
    # A few weights the file must hold, with their shapes: enough to tell the right network
    # from another state dict (the first convolution and the last layer). Empty: not checked
    # (a TorchScript CLIP encoder, an LDM checkpoint or diffusers folder have their own loaders).
    expected: tuple[tuple[str, tuple[int, ...]], ...] = ()


WEIGHTS: dict[str, WeightFile] = {
    "lpips_alexnet": WeightFile(
        "LPIPS AlexNet weights", "weights.lpips_alexnet", "alexnet-owt-7be5be79.pth",
        "torchvision's ImageNet AlexNet, which torchvision downloads to ~/.cache/torch/hub/checkpoints/",
        expected=(("features.0.weight", (64, 3, 11, 11)), ("classifier.6.weight", (1000, 4096)))),
    "inception": WeightFile(
        "Inception weights", "weights.inception", "weights-inception-2015-12-05-6726825d.pth",
        "torch-fidelity's Inception-v3 (the TF FID network), which torch-fidelity downloads to "
        "~/.cache/torch/hub/checkpoints/",
        expected=(("Conv2d_1a_3x3.conv.weight", (32, 3, 3, 3)), ("fc.weight", (1008, 2048)))),
    "adm_64_classifier": WeightFile(
        "released guided-diffusion classifier", "weights.adm_64_classifier", "64x64_classifier.pt", _GUIDED),
    "adm_128_classifier": WeightFile(
        "released guided-diffusion classifier", "weights.adm_128_classifier", "128x128_classifier.pt", _GUIDED),
    "adm_128_diffusion": WeightFile(
        "released guided-diffusion checkpoint", "weights.adm_128_diffusion", "128x128_diffusion.pt", _GUIDED,
        expected=(("input_blocks.0.0.weight", (256, 3, 3, 3)),)),
    "autoencoder": WeightFile(
        "kl-f8 autoencoder weights", "task.autoencoder", "model.ckpt",
        "LDM's first-stage kl-f8 model (CompVis/latent-diffusion, models/first_stage_models/kl-f8), "
        "or a diffusers AutoencoderKL state dict or folder", directory_ok=True),
    "resnet18": WeightFile(
        "ImageNet ResNet-18 weights", "task.imagenet", "resnet18-5c106cde.pth",
        "torchvision's ImageNet ResNet-18 (DiffusionMTL's backbone), which torchvision downloads to "
        "~/.cache/torch/hub/checkpoints/"),
    "resnet50": WeightFile(
        "ImageNet ResNet-50 weights", "task.imagenet", "resnet50-19c8e357.pth",
        "torchvision's ImageNet ResNet-50, which torchvision downloads to ~/.cache/torch/hub/checkpoints/"),
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


def check_state_dict(name: str, path: str | os.PathLike) -> Path:
    """`path` (as `check_weights` accepts it) read as a plain state dict (`weights_only`: a file
    that would run code is refused) holding the registry's expected weights with their shapes;
    a one-line `UserError` naming the file and the first mismatch otherwise."""
    from repro.io import load_torch

    w = weight_file(name)
    p = check_weights(name, path)
    if not w.expected or p.is_dir():
        return p
    state = load_torch(p, what=w.what)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{w.what} {p} holds a {type(state).__name__}, not a state dict: {w.file} comes from {w.source}")
    for key, shape in w.expected:
        got = getattr(state.get(key), "shape", None)
        if got is None or tuple(got) != shape:
            raise UserError(f"{w.what} {p} is not {w.file}: {key} is "
                            f"{'missing' if got is None else tuple(got)} (expected {shape}); it comes from "
                            f"{w.source} (set {w.key})")
    return p

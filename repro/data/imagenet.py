"""ImageNet as users hold it: a folder of class folders, preprocessed the way ADM does it.

Tables 2 and 3 train on ImageNet at 64x64 (and 128x128) with the ADM codebase (Dhariwal &
Nichol, 2021). ADM's preprocessing is reproduced in `center_crop_arr`: halve with a box filter
while the short side is at least twice the target (cheap, alias-free), resize bicubically so
the short side equals the target, then cut the central square.

Layout: root/<wnid>/<file>.JPEG (any depth below the class folder; .jpg/.jpeg/.png/.bmp/.webp,
any case). Classes are the class folders sorted by name; the label is the index in that order.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from repro.data.image_files import IMAGE_EXTENSIONS, read_image
from repro.data.pixels import to_model_space
from repro.errors import UserError

_HINT = "set data.root (train) or data.test_root (val) to an ImageNet split (a folder of class folders such as n01440764/ holding images)"


def center_crop_arr(image: Image.Image, size: int) -> np.ndarray:
    """ADM's resize-and-centre-crop: PIL image -> uint8 [size, size, 3]."""
    image = image.convert("RGB")
    while min(image.size) >= 2 * size:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top : top + size, left : left + size]


def list_class_folders(root: str | Path, what: str, hint: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """Classes (sorted folder names) and (file, label) samples of a class-folder tree.

    Raises UserError "<what> ... <problem>: <hint>" if the tree is missing or holds no images.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{what} directory {root} not found: {hint}")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(f"{what} directory {root} has no class folders: {hint}")
    samples = []
    for label, name in enumerate(classes):
        files = sorted(
            Path(dirpath, f)
            for dirpath, _, filenames in os.walk(root / name)
            for f in filenames
            if f.lower().endswith(IMAGE_EXTENSIONS)
        )
        if not files:
            raise UserError(f"{what} class folder {root / name} holds no images ({'/'.join(IMAGE_EXTENSIONS)}): {hint}")
        samples.extend((f, label) for f in files)
    return classes, samples


class ImageNetFolder(Dataset):
    """(image float [3, size, size] in [-1, 1], label int) pairs from a class-folder tree.

    random_flip: horizontal flip with probability 1/2 (ADM trains with it); uses torch's global
    RNG, which DataLoader seeds per worker.
    """

    def __init__(self, root: str | Path, resolution: int = 64, random_flip: bool = False):
        if resolution <= 0:
            raise UserError(f"ImageNet resolution must be positive, got {resolution}")
        self.root = Path(root)
        self.resolution = resolution
        self.random_flip = random_flip
        self.classes, self.samples = list_class_folders(self.root, "ImageNet", _HINT)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        arr = center_crop_arr(read_image(path), self.resolution)
        if self.random_flip and torch.rand(()) < 0.5:
            arr = arr[:, ::-1]
        return to_model_space(np.ascontiguousarray(arr)), label

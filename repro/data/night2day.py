"""night2day (Laffont et al., 2014) in the pix2pix paired layout, for Table 4's night -> day translation.

pix2pix distributes its paired datasets as root/<split>/<file>.jpg, each file one image with
the two domains side by side: A on the left half, B on the right half. For night2day A is
night and B is day; the translation generates B conditioned on A.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from repro.data.image_files import IMAGE_EXTENSIONS, read_image
from repro.data.pixels import image_size_hw, to_model_space
from repro.errors import UserError

_HINT = "set data.root=/path/to/night2day (the pix2pix download, with train/ val/ test/ folders of A|B images)"


def split_ab(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut a side-by-side pair [H, W, C] at the middle column: (A = [:, :W//2], B = [:, W//2:])."""
    middle = image.shape[1] // 2
    return image[:, :middle], image[:, middle:]


class Night2Day(Dataset):
    """(A, B) = (night, day) float [3, H, W] in [-1, 1]; each half resized bicubically to `size` if given."""

    def __init__(self, root: str | Path, split: str = "train", size: int | tuple[int, int] | None = 256):
        self.root, self.split = Path(root), split
        self.size = None if size is None else image_size_hw(size)
        folder = self.root / split
        if not folder.is_dir():
            raise UserError(f"night2day directory {folder} not found: {_HINT}")
        self.files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise UserError(f"night2day directory {folder} holds no images: {_HINT}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pair = np.asarray(read_image(self.files[i]).convert("RGB"))
        return tuple(to_model_space(self._resize(half)) for half in split_ab(pair))

    def _resize(self, half: np.ndarray) -> np.ndarray:
        if self.size is None:
            return np.ascontiguousarray(half)
        h, w = self.size
        return np.asarray(Image.fromarray(half).resize((w, h), resample=Image.BICUBIC))

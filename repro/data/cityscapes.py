"""Cityscapes (Cordts et al., 2016) as distributed: photos and fine label-id maps, for Table 4.

Table 4 translates photos into semantic label maps and scores them with per-pixel accuracy,
per-class accuracy and class IoU over the 19 evaluation ("train") classes, as pix2pix does.

Layout under root:
    leftImg8bit/<split>/<city>/<name>_leftImg8bit.png       photos
    gtFine/<split>/<city>/<name>_gtFine_labelIds.png        label ids (0..33, one per pixel)
Label ids map to the 19 train ids below; every other id becomes 255 (ignored in scoring).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from repro.data.image_files import read_image
from repro.data.pixels import image_size_hw, to_model_space
from repro.errors import UserError

IGNORE_ID = 255

# (name, labelId, colour) of the 19 evaluated classes, in trainId order, from the Cityscapes
# label definitions (cityscapesScripts, labels.py).
_TRAIN_CLASSES = (
    ("road", 7, (128, 64, 128)),
    ("sidewalk", 8, (244, 35, 232)),
    ("building", 11, (70, 70, 70)),
    ("wall", 12, (102, 102, 156)),
    ("fence", 13, (190, 153, 153)),
    ("pole", 17, (153, 153, 153)),
    ("traffic light", 19, (250, 170, 30)),
    ("traffic sign", 20, (220, 220, 0)),
    ("vegetation", 21, (107, 142, 35)),
    ("terrain", 22, (152, 251, 152)),
    ("sky", 23, (70, 130, 180)),
    ("person", 24, (220, 20, 60)),
    ("rider", 25, (255, 0, 0)),
    ("car", 26, (0, 0, 142)),
    ("truck", 27, (0, 0, 70)),
    ("bus", 28, (0, 60, 100)),
    ("train", 31, (0, 80, 100)),
    ("motorcycle", 32, (0, 0, 230)),
    ("bicycle", 33, (119, 11, 32)),
)
CITYSCAPES_CLASSES = tuple(name for name, _, _ in _TRAIN_CLASSES)
NUM_CITYSCAPES_CLASSES = len(CITYSCAPES_CLASSES)
CITYSCAPES_PALETTE = np.array([color for _, _, color in _TRAIN_CLASSES], dtype=np.uint8)

# labelId -> trainId lookup over every uint8 value
LABEL_TO_TRAIN_ID = np.full(256, IGNORE_ID, dtype=np.uint8)
for _train_id, (_, _label_id, _) in enumerate(_TRAIN_CLASSES):
    LABEL_TO_TRAIN_ID[_label_id] = _train_id

_HINT = "set data.root=/path/to/cityscapes (holding leftImg8bit/ and gtFine/ as unpacked from cityscapes-dataset.com)"


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds (uint8 map) -> trainIds 0..18, 255 for everything not evaluated."""
    return LABEL_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]


class Cityscapes(Dataset):
    """(photo float [3, H, W] in [-1, 1], trainIds int64 [H, W]) pairs, resized to `size`.

    size: int (square, as pix2pix uses 256x256) or (H, W). Photos are resized bicubically,
    label maps with nearest neighbour (ids must not be blended).
    """

    def __init__(self, root: str | Path, split: str = "train", size: int | tuple[int, int] = 256):
        self.root, self.split, self.size = Path(root), split, image_size_hw(size)
        photo_dir, label_dir = self.root / "leftImg8bit" / split, self.root / "gtFine" / split
        for d in (photo_dir, label_dir):
            if not d.is_dir():
                raise UserError(f"Cityscapes directory {d} not found: {_HINT}")
        photos = sorted(photo_dir.glob("*/*_leftImg8bit.png"))
        if not photos:
            raise UserError(f"Cityscapes directory {photo_dir} holds no <city>/*_leftImg8bit.png photos: {_HINT}")
        self.samples = []
        for photo in photos:
            stem = photo.name[: -len("_leftImg8bit.png")]
            label = label_dir / photo.parent.name / f"{stem}_gtFine_labelIds.png"
            if not label.is_file():
                raise UserError(f"Cityscapes label map {label} not found for photo {photo}: {_HINT}")
            self.samples.append((photo, label))

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        photo_path, label_path = self.samples[i]
        h, w = self.size
        photo = read_image(photo_path).convert("RGB").resize((w, h), resample=Image.BICUBIC)
        label_ids = read_image(label_path)
        if label_ids.mode not in ("L", "P", "I", "I;16"):
            raise UserError(f"Cityscapes label map {label_path} is not a single-channel id image (mode {label_ids.mode})")
        label_ids = np.asarray(label_ids.resize((w, h), resample=Image.NEAREST)).astype(np.int64)
        train_ids = LABEL_TO_TRAIN_ID[label_ids.clip(0, 255)]
        return to_model_space(np.asarray(photo)), torch.from_numpy(train_ids.astype(np.int64))

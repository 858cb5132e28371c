"""The images a job trains or evaluates on, from the `data:` config block."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from repro.data.pixels import to_model_space
from repro.errors import UserError


class ImageSet:
    """Indexable images in [-1, 1] (N, 3, H, W) with integer labels."""

    def __init__(self, get, labels: np.ndarray, name: str):
        self._get, self.labels, self.name = get, labels, name

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, index: Tensor | np.ndarray | list[int]) -> Tensor:
        return self._get(np.asarray(index))


def embedded_files(data: Mapping[str, Any], split: str | None = None) -> dict[str, Path]:
    """The embedded splits' files (made if absent): both, or only `split` (reading only its size)."""
    from repro.data.embedded import ensure_embedded

    n_train = data["n_train"] if split in (None, "train") else None
    n_test = data["n_test"] if split in (None, "test") else None
    return ensure_embedded(Path(data["root"]), n_train, n_test, data["seed"], data["resolution"])


def load_images(data: Mapping[str, Any], split: str) -> ImageSet:
    """`split` is "train" or "test"."""
    if data["name"] == "embedded":
        from repro.data.embedded import load_split

        s = load_split(embedded_files(data, split)[split])
        images = to_model_space(s.images)
        return ImageSet(lambda i: images[torch.as_tensor(i)], s.labels, f"embedded-{data['resolution']}px-{split}")
    if data["name"] == "imagenet":
        from repro.data.imagenet import ImageNetFolder

        root = data["root"] if split == "train" else data["test_root"]
        ds = ImageNetFolder(root, data["resolution"])
        n = len(ds) if split == "train" or data.get("n_test") is None else min(len(ds), data["n_test"])
        labels = np.asarray([label for _, label in ds.samples[:n]])
        return ImageSet(lambda i: torch.stack([ds[int(k)][0] for k in i]), labels, f"imagenet-{data['resolution']}-{split}")
    raise UserError(f"unknown dataset {data['name']!r}: choose embedded or imagenet")


TEST_SPLIT = ("n_test", "test_root", "test_split")   # settings only the test split reads
TRAIN_SPLIT = ("n_train",)                           # settings only the train split reads


def data_reads(data: Mapping[str, Any], split: str) -> list[str]:
    """The `data.*` settings that loading `split` reads (a body's declaration of what it reads,
    repro.jobs.job.select): a training job's key then does not follow the test split's size."""
    other = TEST_SPLIT if split == "train" else TRAIN_SPLIT
    return [f"data.{k}" for k in data if k not in other]


def check_data(data: Mapping[str, Any]) -> None:
    """Fail early (exit 2) when a configured dataset is missing (the embedded one is made by its jobs)."""
    if data["name"] == "embedded":
        return
    if data["name"] == "imagenet":
        for key in ("root", "test_root"):
            p = Path(str(data[key])).expanduser()
            if not p.is_dir():
                raise UserError(f"dataset directory {p} not found: set data.{key}=/path/to/imagenet/"
                                f"{'train' if key == 'root' else 'val'} (a folder of class folders)")
        return
    if data["name"] in ("cityscapes", "night2day"):   # paired datasets of Table 4 / night2day (repro.tasks.translation)
        p = Path(str(data["root"])).expanduser()
        if not p.is_dir():
            layout = "leftImg8bit/ and gtFine/" if data["name"] == "cityscapes" else "train/ and test/ folders of A|B images"
            raise UserError(f"dataset directory {p} not found: set data.root=/path/to/{data['name']} (holding {layout})")
        return
    raise UserError(f"unknown dataset {data['name']!r}: choose embedded, imagenet, cityscapes or night2day")

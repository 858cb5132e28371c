"""DiffusionMTL's paper-profile datasets, read from the folders the authors' code reads.

PASCAL-Context (5 tasks), the ASTMT/ATRC layout under `data.root` (the `PASCAL_MT` folder):

    ImageSets/Context/{train,val}.txt        image ids (4,998 train, 5,105 val)
    JPEGImages/<id>.jpg                      the photo
    semseg/pascal-context/<id>.png           21 classes, 255 = ignore
    human_parts/<id>.mat                     part annotations (ASTMT's format)
    sal_distill/<id>.png                     distilled saliency, binarised at 0.5
    normals_distill/<id>.png                 distilled normals, (n + 1) * 255 / 2
    pascal-context/trainval/<id>.mat         the Context label map ('LabelMap'); edges = its boundaries

and the authors' mapping files in `data.mapping_dir` (`new_onelabel.pth` / `new_randomlabels.pth`, read by
`repro.data.partial_labels.load_pascal_mapping`, which runs no code from it).

NYUD-v2 (3 tasks), MTPSL's pre-processed NYUv2 under `data.root`:

    {train,val}/image/<i>.npy    float [288, 384, 3] in [0, 1]
    {train,val}/label/<i>.npy    13 classes, -1 = ignore
    {train,val}/depth/<i>.npy    [288, 384, 1], 0 = no depth
    {train,val}/normal/<i>.npy   [288, 384, 3] in [-1, 1], 0 = no normal

with MTPSL's mappings in `data.mapping_dir` (`onelabel.pth` / `randomlabels.pth`: `{"labels_weights": [795, 3]}`, row i = sample i).

Every check runs before any job (`python -m repro.table` exits 2 naming the first missing file).
Items are those of `repro.data.dense_scenes.DenseScenesDataset`: the image in [-1, 1], class maps
int64 (255 = ignore), depth float (0 = none), normals float [3, H, W] with 0 where there is none
(PASCAL's un-annotated normals become the zero vector, so one validity rule serves both).
What is not implemented yet: decoding ASTMT's `human_parts/*.mat` (part names -> the 6 part
classes): `load_pascal` refuses with a UserError rather than return something else.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch.utils.data import Dataset

from repro.errors import UserError

PASCAL_CHANNELS = {"semseg": 21, "human_parts": 7, "sal": 2, "normals": 3, "edge": 1}
NYUD_CHANNELS = {"semseg": 13, "depth": 1, "normals": 3}
PASCAL_SPLITS = {"train": "train", "test": "val"}
NYUD_SPLITS = {"train": "train", "test": "val"}
IGNORE = 255
_PASCAL_FILES = {"image": "JPEGImages/{}.jpg", "semseg": "semseg/pascal-context/{}.png",
                 "human_parts": "human_parts/{}.mat", "sal": "sal_distill/{}.png",
                 "normals": "normals_distill/{}.png", "edge": "pascal-context/trainval/{}.mat"}
_NYUD_FOLDERS = ("image", "label", "depth", "normal")


def _root(data: Mapping[str, Any], hint: str) -> Path:
    root = Path(str(data["root"])).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset directory {root} not found: set data.root={hint}")
    return root


MAPPING_FILES = {"pascal_context": {"one_label": "new_onelabel.pth", "random_labels": "new_randomlabels.pth"},
                 "nyud_v2": {"one_label": "onelabel.pth", "random_labels": "randomlabels.pth"}}


def mapping_paths(data: Mapping[str, Any]) -> list[Path]:
    """The mapping file of `data.setting` (a training job), or of both settings (the check)."""
    files = MAPPING_FILES[data["name"]]
    settings = [data["setting"]] if data.get("setting") in files else list(files)
    return [Path(str(data["mapping_dir"])).expanduser() / files[s] for s in settings]


def _mapping(data: Mapping[str, Any]) -> Path:
    for path in mapping_paths(data):
        if not path.is_file():
            raise UserError(f"partial-label mapping {path} not found: set data.mapping_dir to the folder of the "
                            f"authors' {', '.join(MAPPING_FILES[data['name']].values())}")
    return mapping_paths(data)[0]


def pascal_ids(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "Context" / f"{PASCAL_SPLITS[split]}.txt"
    if not listing.is_file():
        raise UserError(f"PASCAL-Context split list {listing} not found: data.root must be the PASCAL_MT folder")
    return listing.read_text().split()


def check_pascal(data: Mapping[str, Any]) -> None:
    """Every file of both splits and the mapping exist; UserError naming the first missing one."""
    root = _root(data, "/path/to/PASCAL_MT (ASTMT/ATRC layout)")
    for split in PASCAL_SPLITS:
        for i in pascal_ids(root, split):
            for pattern in _PASCAL_FILES.values():
                if not (root / pattern.format(i)).is_file():
                    raise UserError(f"PASCAL-Context file {root / pattern.format(i)} not found "
                                    f"(data.root={root}, {split} split)")
    _mapping(data)


def load_pascal(data: Mapping[str, Any], split: str) -> Dataset:
    raise UserError("reading ASTMT's human_parts/*.mat annotations is not implemented yet: the PASCAL-Context "
                    "paper profile can be checked (python -m repro.table diffusionmtl --profile paper) but not run")


def _nyud_dir(root: Path, split: str) -> Path:
    return root / NYUD_SPLITS[split]


def nyud_count(root: Path, split: str) -> int:
    d = _nyud_dir(root, split) / "image"
    if not d.is_dir():
        raise UserError(f"NYUD-v2 folder {d} not found: data.root must hold MTPSL's train/ and val/ folders")
    return len(list(d.glob("*.npy")))


def check_nyud(data: Mapping[str, Any]) -> None:
    """MTPSL's files 0..N-1 of both splits and the mapping exist; UserError naming the first missing one."""
    root = _root(data, "/path/to/nyuv2 (MTPSL's pre-processed NYUv2: train/ and val/)")
    for split in NYUD_SPLITS:
        n = nyud_count(root, split)
        for i in range(n):
            for folder in _NYUD_FOLDERS:
                path = _nyud_dir(root, split) / folder / f"{i}.npy"
                if not path.is_file():
                    raise UserError(f"NYUD-v2 file {path} not found (MTPSL numbers the samples 0..{n - 1})")
    _mapping(data)


class NYUDv2(Dataset):
    """MTPSL's NYUD-v2 (module docstring); `flags` bool [N, 3] from the mapping (row i = sample i)."""

    tasks = tuple(NYUD_CHANNELS)

    def __init__(self, root: Path, split: str, flags: np.ndarray | None = None):
        self.dir, self.n = _nyud_dir(root, split), nyud_count(root, split)
        self.flags = np.ones((self.n, 3), bool) if flags is None else flags

    def __len__(self) -> int:
        return self.n

    def _load(self, folder: str, i: int) -> np.ndarray:
        return np.load(self.dir / folder / f"{i}.npy", allow_pickle=False)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = np.moveaxis(self._load("image", i), -1, 0).astype(np.float32)
        label = self._load("label", i).astype(np.int64)
        return {"image": torch.from_numpy(image * 2 - 1),
                "labelled": torch.from_numpy(self.flags[i].copy()),
                "semseg": torch.from_numpy(np.where(label < 0, IGNORE, label)),
                "depth": torch.from_numpy(self._load("depth", i)[..., 0].astype(np.float32)),
                "normals": torch.from_numpy(np.moveaxis(self._load("normal", i), -1, 0).astype(np.float32))}


def load_nyud(data: Mapping[str, Any], split: str) -> NYUDv2:
    from repro.data.partial_labels import load_nyud_mapping

    root = _root(data, "/path/to/nyuv2")
    if split != "train":
        return NYUDv2(root, split)
    return NYUDv2(root, split, load_nyud_mapping(_mapping(data), nyud_count(root, split)))

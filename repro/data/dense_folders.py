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

PASCAL-Context targets, decoded as the ASTMT/ATRC loader the authors' code derives from does:
- human_parts (`decode_human_parts`): `human_parts/<id>.mat` is PASCAL-Part's annotation, read with
  scipy.io.loadmat: ``anno[0][0][1][0]`` lists the objects, each (class name, class index, instance
  mask, parts); every person (class index 15) that has parts paints its parts with the 6-class
  grouping `HUMAN_PARTS` (head, torso, upper arm, lower arm incl. hand, upper leg, lower leg incl.
  foot; 0 = background). An image with no person with parts has nothing to score: all IGNORE
  (design/diffusionmtl.md 1.1).
- sal: the distilled map / 255 > 0.5. normals: 2 x / 255 - 1, kept only on the Context classes
  NYUD also has (plus tvmonitor, as ASTMT), zero elsewhere; the class lists are ASTMT's
  `nyu_classes.json` / `context_classes.json` in `data.root/json/`. edge: the Context label map's
  Laplacian (3x3, mirrored border, OpenCV's default) != 0, thinned (skimage.morphology.thin, the
  authors' call; scikit-image, the `pascal` extra of pyproject.toml, is needed for the paper profile).
- Images and maps are zero-padded, centred, to `data.resolution` (512; labels IGNORE, normals 0),
  the authors' test-time input (repro.data.dense_augment.pad). Training augmentation
  (`train.augment`, repro/data/dense_augment.py: the authors' random scale, crop, flip and
  photometric distortion for PASCAL-Context, MTPSL's scale-crop for NYUD-v2; on at the paper
  profile) starts from the unpadded item (`PascalContext.unpadded`).
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
    for name in CLASS_LISTS:
        if not (root / name).is_file():
            raise UserError(f"PASCAL-Context class list {root / name} not found (ASTMT's json/ folder: which Context "
                            f"classes keep their distilled normals)")
    _require_skimage()
    _mapping(data)


PERSON = 15   # the person class index in PASCAL-Part's annotations (VOC's class order)
# PASCAL-Part's person part names -> the 6 classes of the multi-task benchmarks (ASTMT's grouping)
HUMAN_PARTS = {**dict.fromkeys(("hair", "head", "lear", "rear", "lebrow", "rebrow", "leye", "reye", "mouth",
                                "nose"), 1),
               "neck": 2, "torso": 2, "luarm": 3, "ruarm": 3, **dict.fromkeys(("llarm", "rlarm", "lhand", "rhand"), 4),
               "luleg": 5, "ruleg": 5, **dict.fromkeys(("llleg", "rlleg", "lfoot", "rfoot"), 6)}
CLASS_LISTS = ("json/nyu_classes.json", "json/context_classes.json")


def _loadmat(path: Path) -> dict:
    import scipy.io

    try:
        return scipy.io.loadmat(path)
    except Exception as e:   # scipy raises several types for a damaged or non-MATLAB file
        raise UserError(f"{path} is not a readable MATLAB file ({type(e).__name__}: {e})") from e


def decode_human_parts(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W] part classes of a PASCAL-Part annotation (module docstring); all IGNORE when
    the image has no person with annotated parts."""
    path = Path(path)
    try:
        objects = _loadmat(path)["anno"][0][0][1][0]
    except (KeyError, IndexError) as e:
        raise UserError(f"{path} is not a PASCAL-Part annotation (no anno.objects)") from e
    target = np.zeros(shape, np.uint8)
    found = False
    for obj in objects:
        if int(np.asarray(obj[1]).ravel()[0]) != PERSON or np.asarray(obj[3]).size == 0:
            continue
        found = True
        for part in obj[3][0]:
            name = str(np.asarray(part[0]).ravel()[0])
            if name not in HUMAN_PARTS:
                raise UserError(f"{path}: unknown person part {name!r} (expected one of {', '.join(HUMAN_PARTS)})")
            mask = np.asarray(part[1]).astype(bool)
            if mask.shape != tuple(shape):
                raise UserError(f"{path}: part mask {mask.shape} does not match the image {tuple(shape)}")
            target[mask] = HUMAN_PARTS[name]
    return target if found else np.full(shape, IGNORE, np.uint8)


def normals_classes(root: Path) -> np.ndarray:
    """Context class ids whose normals are kept: those NYUD also has, and tvmonitor (ASTMT's list)."""
    import json

    nyu, context = (json.loads((root / name).read_text()) for name in CLASS_LISTS)
    ids = [context[c] for c in nyu if c in context and c != "unknown"] + [context["tvmonitor"]]
    return np.asarray(ids)


def _require_skimage():
    try:
        from skimage.morphology import thin
    except ImportError as e:
        raise UserError("PASCAL-Context edges need scikit-image (skimage.morphology.thin, as the authors): "
                        "pip install -e '.[pascal]'") from e
    return thin


def context_edges(label_map: np.ndarray) -> np.ndarray:
    """uint8 0/1: the Context label map's boundaries, one pixel thick (module docstring)."""
    from scipy import ndimage

    thin = _require_skimage()
    lap = ndimage.laplace(np.asarray(label_map, np.float64), mode="mirror")
    return thin(lap != 0).astype(np.uint8)


class PascalContext(Dataset):
    """PASCAL-Context's 5 tasks (module docstring); `flags` bool [N, 5] in the mapping's task order."""

    tasks = tuple(PASCAL_CHANNELS)

    def __init__(self, root: Path, split: str, resolution: int, flags: np.ndarray | None = None):
        self.root, self.resolution, self.ids = root, int(resolution), pascal_ids(root, split)
        self.flags = np.ones((len(self.ids), len(self.tasks)), bool) if flags is None else flags
        self.normals_classes = normals_classes(root)

    def __len__(self) -> int:
        return len(self.ids)

    def _file(self, kind: str, i: int) -> Path:
        return self.root / _PASCAL_FILES[kind].format(self.ids[i])

    def targets(self, i: int) -> dict[str, np.ndarray]:
        """The unpadded targets of image i: uint8 maps and float32 normals [H, W, 3]."""
        from PIL import Image

        label_map = _loadmat(self._file("edge", i))["LabelMap"]
        shape = label_map.shape
        normals = 2.0 * np.asarray(Image.open(self._file("normals", i)), np.float32) / 255.0 - 1.0
        normals[~np.isin(label_map, self.normals_classes)] = 0
        return {"semseg": np.asarray(Image.open(self._file("semseg", i)), np.uint8),
                "human_parts": decode_human_parts(self._file("human_parts", i), shape),
                "sal": (np.asarray(Image.open(self._file("sal", i)), np.float32) / 255.0 > 0.5).astype(np.uint8),
                "normals": normals, "edge": context_edges(label_map)}

    def unpadded(self, i: int) -> dict[str, torch.Tensor]:
        """Item i at the photo's own size (what the training augmentation starts from,
        repro.data.dense_augment); `self[i]` is this item padded to `data.resolution`."""
        from PIL import Image

        from repro.data.pixels import to_model_space

        item = {"image": to_model_space(np.asarray(Image.open(self._file("image", i)).convert("RGB"))),
                "labelled": torch.from_numpy(self.flags[i].copy())}
        for task, a in self.targets(i).items():
            item[task] = torch.from_numpy(np.moveaxis(a, -1, 0).copy() if task == "normals" else a.astype(np.int64))
        return item

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from repro.data.dense_augment import pad

        item = self.unpadded(i)
        h, w = item["image"].shape[-2:]
        if h > self.resolution or w > self.resolution:
            raise UserError(f"{self._file('image', i)} is {h}x{w}, larger than data.resolution={self.resolution}: "
                            f"the authors pad to 512")
        return pad(item, (self.resolution, self.resolution))


def load_pascal(data: Mapping[str, Any], split: str) -> PascalContext:
    from repro.data.partial_labels import load_pascal_mapping

    root = _root(data, "/path/to/PASCAL_MT (ASTMT/ATRC layout)")
    ds = PascalContext(root, split, data["resolution"])
    if split != "train":
        return ds
    by_id = load_pascal_mapping(_mapping(data))
    missing_ids = [i for i in ds.ids if i not in by_id]
    if missing_ids:
        raise UserError(f"partial-label mapping {_mapping(data)} has no entry for training image {missing_ids[0]} "
                        f"({len(missing_ids)} missing): use the authors' file of this split")
    return PascalContext(root, split, data["resolution"], np.stack([by_id[i] for i in ds.ids]))


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

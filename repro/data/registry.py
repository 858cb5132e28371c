"""Datasets by name: what each one holds and how a `data:` config block loads it.

One entry per dataset (`DATASETS`): its labelled-image loader (Tables 1-3, the feature
network), its number of object classes, its (source, target) pairs for translation
(Table 4, night2day) with the semantic classes and palette of label-map targets, and the
check that the configured files exist (run before any job starts). The image resolution
is the config's `data.resolution`; every loader resizes (or renders) to it.

Tasks and job bodies ask this module, never a dataset module directly, so that adding a
dataset is one entry here.

Why one module of ~340 lines: it is the one table of datasets; every entry (loader, classes,
pairs, palette, files check) sits beside the others so a dataset is added in one place.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from repro.data.pixels import colorize, to_model_space
from repro.errors import UserError, missing

IMAGENET_CLASSES = 1000


class ImageSet:
    """Indexable images in [-1, 1] (N, 3, H, W) with integer labels."""

    def __init__(self, get: Callable[[np.ndarray], Tensor], labels: np.ndarray, name: str):
        self._get, self.labels, self.name = get, labels, name

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, index: Tensor | np.ndarray | list[int]) -> Tensor:
        return self._get(np.asarray(index))


@dataclass
class Pairs:
    """One split of (source, target) pairs; `images(idx)` gives {"source", "target"[, "ids"]}.

    Images are float [B, 3, H, W] in [-1, 1]; "ids" (label-map targets only) are the class
    ids [B, H, W] (255 = ignored). `labels` is one integer per pair (the training harness's
    batch index).
    """

    get: Callable[[np.ndarray], dict[str, Tensor]]
    labels: np.ndarray
    name: str
    palette: np.ndarray | None = None   # label-map targets: class colours

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, index) -> dict[str, Tensor]:
        return self.get(np.asarray(index))


@dataclass(frozen=True)
class Dataset:
    """What a dataset holds. `None` where it does not hold that kind of data."""

    name: str
    check: Callable[[Mapping[str, Any]], None]
    load_images: Callable[[Mapping[str, Any], str], ImageSet] | None = None
    num_classes: int | None = None
    pairs: frozenset[tuple[str, str]] = frozenset()
    load_pairs: Callable[[Mapping[str, Any], str, str, str], Pairs] | None = None
    semantic_classes: tuple[str, ...] | None = None
    palette: np.ndarray | None = field(default=None, compare=False)
    # Dense multi-task data (DiffusionMTL): `load_dense(data, split)` gives a torch Dataset of
    # {"image", <task>: target, "labelled": bool [T]} items; `dense_tasks(data)` the tasks and
    # their output channels, in the mapping files' column order.
    load_dense: Callable[[Mapping[str, Any], str], Any] | None = None
    dense_tasks: Callable[[Mapping[str, Any]], dict[str, int]] | None = None


DATASETS: dict[str, Dataset] = {}


def register(dataset: Dataset) -> Dataset:
    DATASETS[dataset.name] = dataset
    return dataset


def dataset(data: Mapping[str, Any]) -> Dataset:
    """The registry entry of a `data:` block; UserError naming the choices if unknown."""
    name = data["name"]
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}: choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_images(data: Mapping[str, Any], split: str) -> ImageSet:
    """Labelled images of `split` ("train" or "test")."""
    d = dataset(data)
    if d.load_images is None:
        raise UserError(f"dataset {d.name!r} has no labelled images: choose one of "
                        f"{', '.join(n for n, e in DATASETS.items() if e.load_images)}")
    return d.load_images(data, split)


def num_classes(data: Mapping[str, Any]) -> int:
    """Number of object classes of the configured dataset."""
    d = dataset(data)
    if d.num_classes is None:
        raise UserError(f"dataset {d.name!r} has no class labels: choose one of "
                        f"{', '.join(n for n, e in DATASETS.items() if e.num_classes)}")
    return d.num_classes


def check_pairs(data: Mapping[str, Any], source: str, target: str) -> Dataset:
    """The dataset, if it holds (source, target) pairs; UserError naming the pairs it has otherwise."""
    d = dataset(data)
    if (source, target) not in d.pairs:
        raise UserError(f"dataset {d.name!r} has no {source} -> {target} pairs: choose one of "
                        f"{sorted(f'{s}->{t}' for s, t in d.pairs)} or another dataset")
    return d


def load_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    """The (source, target) pairs of `split` ("train" or "test") of the configured dataset."""
    return check_pairs(data, source, target).load_pairs(data, split, source, target)


def _dense(data: Mapping[str, Any]) -> Dataset:
    d = dataset(data)
    if d.load_dense is None:
        raise UserError(f"dataset {d.name!r} has no dense multi-task labels: choose one of "
                        f"{', '.join(n for n, e in DATASETS.items() if e.load_dense)}")
    return d


def dense_tasks(data: Mapping[str, Any]) -> dict[str, int]:
    """{task: output channels} of a dense multi-task dataset, in its mapping files' column order."""
    return _dense(data).dense_tasks(data)


def load_dense(data: Mapping[str, Any], split: str):
    """A dense multi-task split ("train": flagged by the configured partial-label mapping,
    `data.setting`; "test": every task labelled)."""
    return _dense(data).load_dense(data, split)


def check_data(data: Mapping[str, Any]) -> None:
    """Fail early (exit 2) when a configured dataset is missing (the embedded one is made by its jobs);
    a dry run lists it instead (repro.errors.missing)."""
    d = dataset(data)
    try:
        d.check(data)
    except UserError as e:
        missing(str(e))


def _require_dir(data: Mapping[str, Any], key: str, hint: str) -> None:
    p = Path(str(data[key])).expanduser()
    if not p.is_dir():
        raise UserError(f"dataset directory {p} not found: set data.{key}={hint}")


def _n(data: Mapping[str, Any], split: str, available: int) -> int:
    """Test splits may be cut to `data.n_test`; training splits are used whole."""
    return available if split == "train" or data.get("n_test") is None else min(available, data["n_test"])


# ----------------------------------------------------------------------------- embedded


def embedded_files(data: Mapping[str, Any], split: str | None = None) -> dict[str, Path]:
    """The embedded dataset's split files, generated (and verified) on first use: both, or only
    `split` (reading only that split's size, so a training job's key ignores the test split)."""
    from repro.data.embedded import ensure_embedded

    n_train = data["n_train"] if split in (None, "train") else None
    n_test = data["n_test"] if split in (None, "test") else None
    return ensure_embedded(Path(data["root"]), n_train, n_test, data["seed"], data["resolution"])


TEST_SPLIT = ("n_test", "test_root", "test_split")   # settings only the test split reads
TRAIN_SPLIT = ("n_train",)                           # settings only the train split reads


def data_reads(data: Mapping[str, Any], split: str) -> list[str]:
    """The `data.*` settings that loading `split` reads (a body's declaration of what it reads,
    repro.jobs.job.select): a training job's key then does not follow the test split's size."""
    other = TEST_SPLIT if split == "train" else TRAIN_SPLIT
    return [f"data.{k}" for k in data if k not in other]


def _embedded_images(data: Mapping[str, Any], split: str) -> ImageSet:
    from repro.data.embedded import load_split

    s = load_split(embedded_files(data, split)[split])
    images = to_model_space(s.images)
    return ImageSet(lambda i: images[torch.as_tensor(i)], s.labels, f"embedded-{data['resolution']}px-{split}")


def _embedded_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    from repro.data.embedded import SEMANTIC_PALETTE, load_split

    s = load_split(embedded_files(data, split)[split])
    fields = {"photo": s.images, "day": s.images, "night": s.night}
    src = fields[source]
    if target == "labels":
        ids = s.semantic
        tgt = colorize(ids, SEMANTIC_PALETTE)

        def get(i):
            return {"source": to_model_space(src[i]), "target": to_model_space(tgt[i]),
                    "ids": torch.from_numpy(ids[i].astype(np.int64))}
        return Pairs(get, s.labels, f"embedded-{s.resolution}px-{split}", SEMANTIC_PALETTE)
    tgt = fields[target]
    return Pairs(lambda i: {"source": to_model_space(src[i]), "target": to_model_space(tgt[i])},
                 s.labels, f"embedded-{s.resolution}px-{split}")


def _register_embedded() -> None:
    from repro.data.embedded import NUM_CLASSES, SEMANTIC_CLASSES, SEMANTIC_PALETTE

    register(Dataset("embedded", check=lambda data: None, load_images=_embedded_images, num_classes=NUM_CLASSES,
                     pairs=frozenset({("photo", "labels"), ("night", "day")}), load_pairs=_embedded_pairs,
                     semantic_classes=SEMANTIC_CLASSES, palette=SEMANTIC_PALETTE))


# ----------------------------------------------------------------------------- ImageNet


def _imagenet_images(data: Mapping[str, Any], split: str) -> ImageSet:
    from repro.data.imagenet import ImageNetFolder

    ds = ImageNetFolder(data["root"] if split == "train" else data["test_root"], data["resolution"])
    labels = np.asarray([label for _, label in ds.samples[:_n(data, split, len(ds))]])
    return ImageSet(lambda i: torch.stack([ds[int(k)][0] for k in i]), labels, f"imagenet-{data['resolution']}-{split}")


def _check_imagenet(data: Mapping[str, Any]) -> None:
    _require_dir(data, "root", "/path/to/imagenet/train (a folder of class folders)")
    _require_dir(data, "test_root", "/path/to/imagenet/val (a folder of class folders)")


# ------------------------------------------------------------------- Cityscapes, night2day


def _lazy_pairs(ds, data: Mapping[str, Any], split: str, palette: np.ndarray | None) -> Pairs:
    """Pairs read from disk per batch (the real datasets do not fit in memory at 256 px)."""
    n = _n(data, split, len(ds))

    def get(index):
        a, b = zip(*(ds[int(k)] for k in index))
        if palette is None:   # night2day: (night, day)
            return {"source": torch.stack(a), "target": torch.stack(b)}
        ids = torch.stack(b)  # Cityscapes: (photo, train ids)
        return {"source": torch.stack(a), "target": to_model_space(colorize(ids.numpy(), palette)), "ids": ids}
    return Pairs(get, np.zeros(n, dtype=np.int64), f"{data['name']}-{data['resolution']}-{split}", palette)


def _cityscapes_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    from repro.data.cityscapes import CITYSCAPES_PALETTE, Cityscapes

    ds = Cityscapes(data["root"], data["test_split"] if split == "test" else "train", data["resolution"])
    return _lazy_pairs(ds, data, split, CITYSCAPES_PALETTE)


def _night2day_pairs(data: Mapping[str, Any], split: str, source: str, target: str) -> Pairs:
    from repro.data.night2day import Night2Day

    ds = Night2Day(data["root"], data["test_split"] if split == "test" else "train", data["resolution"])
    return _lazy_pairs(ds, data, split, None)


# ------------------------------------------------------------ dense multi-task (DiffusionMTL)


def _dense_scene_tasks(data: Mapping[str, Any]) -> dict[str, int]:
    """The embedded scenes in PASCAL's 5-task or NYUD's 3-task layout (`data.format`)."""
    from repro.data.dense_scenes import PART_CLASSES
    from repro.data.embedded import NUM_SEMANTIC_CLASSES

    channels = {"semseg": NUM_SEMANTIC_CLASSES, "human_parts": len(PART_CLASSES), "sal": 2, "normals": 3, "edge": 1,
                "depth": 1}
    if data["format"] not in ("pascal", "nyud"):
        raise UserError(f"data.format {data['format']!r}: choose pascal (5 tasks) or nyud (3 tasks)")
    from repro.data.partial_labels import NYUD_TASKS, PASCAL_TASKS

    return {t: channels[t] for t in (PASCAL_TASKS if data["format"] == "pascal" else NYUD_TASKS)}


def _dense_scenes(data: Mapping[str, Any], split: str):
    from repro.data.dense_scenes import DenseScenesDataset
    from repro.data.partial_labels import load_nyud_mapping, load_pascal_mapping

    tasks = tuple(_dense_scene_tasks(data))
    paths = _dense_paths(data)
    if split != "train":
        return DenseScenesDataset(paths[split], tasks)
    mapping = paths[f"{data['format']}/{data['setting']}"]
    ds = DenseScenesDataset(paths["train"], tasks)
    if data["format"] == "pascal":   # keyed by image id, the authors' format
        by_id = load_pascal_mapping(mapping, tasks)
        flags = np.stack([by_id[i] for i in ds.split.ids])
    else:                            # MTPSL's: row i = sample i
        flags = load_nyud_mapping(mapping, len(ds), tasks)
    return DenseScenesDataset(ds.split, tasks, flags)


def _dense_paths(data: Mapping[str, Any]) -> dict[str, Path]:
    """Both splits of the embedded scenes and the train split's mapping files, made and verified
    on first use (`ensure_dense` keeps them together, so either split reads the whole block)."""
    from repro.data.dense_scenes import ensure_dense

    return ensure_dense(Path(data["root"]), data["n_train"], data["n_test"], data["seed"], data["resolution"])


def _check_dense_scenes(data: Mapping[str, Any]) -> None:
    """The embedded scenes are made by their jobs; only the layout must be known."""
    _dense_scene_tasks(data)


def _register_dense() -> None:
    from repro.data import dense_folders

    register(Dataset("dense_scenes", check=_check_dense_scenes,
                     load_dense=_dense_scenes, dense_tasks=_dense_scene_tasks))
    register(Dataset("pascal_context", check=dense_folders.check_pascal, load_dense=dense_folders.load_pascal,
                     dense_tasks=lambda data: dict(dense_folders.PASCAL_CHANNELS)))
    register(Dataset("nyud_v2", check=dense_folders.check_nyud, load_dense=dense_folders.load_nyud,
                     dense_tasks=lambda data: dict(dense_folders.NYUD_CHANNELS)))


def _register_all() -> None:
    from repro.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    _register_embedded()
    register(Dataset("imagenet", check=_check_imagenet, load_images=_imagenet_images, num_classes=IMAGENET_CLASSES))
    register(Dataset("cityscapes", check=lambda data: _require_dir(
                         data, "root", "/path/to/cityscapes (holding leftImg8bit/ and gtFine/)"),
                     pairs=frozenset({("photo", "labels")}), load_pairs=_cityscapes_pairs,
                     semantic_classes=CITYSCAPES_CLASSES, palette=CITYSCAPES_PALETTE))
    register(Dataset("night2day", check=lambda data: _require_dir(
                         data, "root", "/path/to/night2day (holding train/ and test/ folders of A|B images)"),
                     pairs=frozenset({("night", "day")}), load_pairs=_night2day_pairs))
    _register_dense()


_register_all()

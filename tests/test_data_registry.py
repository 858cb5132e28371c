"""Datasets by name: loaders, classes, pairs and palettes of the embedded data; clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from repro.data import NUM_CLASSES, SEMANTIC_CLASSES, SEMANTIC_PALETTE, CITYSCAPES_CLASSES, ensure_embedded, load_split
from repro.data.pixels import to_uint8
from repro.data.registry import DATASETS, check_data, check_pairs, dataset, load_images, load_pairs, num_classes
from repro.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return {"name": "embedded", "root": str(tmp_path_factory.mktemp("data")), "resolution": 16, "n_train": 12,
            "n_test": 6, "seed": 2}


def test_embedded_images_are_the_split_files(data):
    files = ensure_embedded(data["root"], 12, 6, 2, 16)
    for split, n in (("train", 12), ("test", 6)):
        s, images = load_split(files[split]), load_images(data, split)
        assert len(images) == n and np.array_equal(images.labels, s.labels)
        assert np.array_equal(to_uint8(images.images([0, 3])), s.images[[0, 3]])
        assert images.images([1]).min() >= -1 and images.images([1]).max() <= 1


def test_classes_palettes_and_pairs_by_name(data):
    assert num_classes(data) == NUM_CLASSES == 10 and num_classes({"name": "imagenet"}) == 1000
    emb = dataset(data)
    assert emb.semantic_classes == SEMANTIC_CLASSES and emb.palette is SEMANTIC_PALETTE
    assert dataset({"name": "cityscapes"}).semantic_classes == CITYSCAPES_CLASSES
    assert set(DATASETS) == {"embedded", "imagenet", "cityscapes", "night2day", "dense_scenes", "pascal_context", "nyud_v2"}
    pairs = load_pairs(data, "test", "photo", "labels")
    batch = pairs.images([0, 1])
    assert len(pairs) == 6 and pairs.palette is SEMANTIC_PALETTE
    s = load_split(ensure_embedded(data["root"], 12, 6, 2, 16)["test"])
    assert np.array_equal(batch["ids"].numpy(), s.semantic[[0, 1]])
    assert np.array_equal(to_uint8(batch["target"]), SEMANTIC_PALETTE[s.semantic[[0, 1]]])
    night = load_pairs(data, "train", "night", "day").images([4])
    assert np.array_equal(to_uint8(night["source"]), load_split(ensure_embedded(data["root"], 12, 6, 2, 16)["train"]).night[[4]])


def test_bad_names_and_missing_folders_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist': choose one of embedded, imagenet, cityscapes, night2day"):
        load_images({"name": "mnist"}, "train")
    with pytest.raises(UserError, match="dataset 'night2day' has no photo -> labels pairs"):
        check_pairs({"name": "night2day"}, "photo", "labels")
    with pytest.raises(UserError, match="dataset 'cityscapes' has no class labels"):
        num_classes({"name": "cityscapes"})
    with pytest.raises(UserError, match="dataset 'night2day' has no labelled images"):
        load_images({"name": "night2day"}, "train")
    with pytest.raises(UserError, match=f"dataset directory {tmp_path / 'no'} not found: set data.root="):
        check_data({"name": "imagenet", "root": str(tmp_path / "no"), "test_root": str(tmp_path)})
    check_data({"name": "embedded"})   # made by its jobs: nothing to check
